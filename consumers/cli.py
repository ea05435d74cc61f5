"""``clmlf-monitor``: the streaming side (run, produce, demo) and the monitor (query, alerts, serve, alerter).

Each package owns its subcommands (``consumers.commands``, ``monitor.commands``: one module each,
exposing ``add_parser(subparsers)``); this entry point lives in ``consumers`` because consumers may
import monitor, never the other way.  Heavy imports stay inside the run functions so ``--help`` is fast.
"""

from __future__ import annotations

import sys

from clmlf.settings import OneLineArgumentParser, command_parser, run_command
from consumers.commands import SUBCOMMANDS as CONSUMER_COMMANDS
from monitor.commands import SUBCOMMANDS as MONITOR_COMMANDS

SUBCOMMANDS = CONSUMER_COMMANDS + MONITOR_COMMANDS


def build_parser() -> OneLineArgumentParser:
    return command_parser(
        "clmlf-monitor",
        "Streaming sentiment monitor: consume posts from Kafka, label them with CLMLF, "
        "aggregate per topic in Redis, export Prometheus metrics, raise trend alerts.",
        "Every option can also come from the environment variable named in its help. "
        "Run 'clmlf-monitor COMMAND --help' for details.",
        SUBCOMMANDS,
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
