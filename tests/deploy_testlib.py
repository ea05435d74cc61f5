"""Shared by the deployment tests: the environment variables the application reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# env_default / env_flag / os.environ calls, and the aliases of the settings fields (monitor.settings)
ENV_READ = re.compile(r"""(?:(?:env_default|env_flag|environ\.get|getenv)\(\s*|alias=)["']([A-Z][A-Z0-9_]+)["']""")


def app_env_vars() -> set[str]:
    """Every environment variable the application reads."""
    return {name for package in ("clmlf", "contract", "consumers", "monitor") for path in (REPO / package).rglob("*.py")
            for name in ENV_READ.findall(path.read_text(encoding="utf-8"))}


def command_settings(parser, args):
    """The validated settings of a parsed ``clmlf-monitor`` command line (flags over the environment)."""
    from clmlf.process_settings import settings_from_args
    from consumers.config import KafkaTarget, run_config_from_args
    from monitor.commands.alerter import AlerterConfig
    from monitor.commands.serve import ServeConfig

    if args.command == "run":
        return run_config_from_args(args, parser)
    settings = {"serve": ServeConfig, "alerter": AlerterConfig, "produce": KafkaTarget}[args.command]
    return settings_from_args(parser, settings, args)
