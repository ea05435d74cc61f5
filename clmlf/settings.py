"""Small shared helpers for command-line configuration.

Every process builds exactly one typed config object (a pydantic model) from its
flags, whose defaults come from environment variables; it is validated once, and
a bad value exits with status 2 and a single-line reason. Secrets are redacted
before anything is logged.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(text: str | int | float) -> float:
    """``90s``, ``15m``, ``1h``, ``1d``, ``250ms`` or bare seconds -> seconds (float, > 0)."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise ValueError(f"invalid duration {text!r} (use e.g. 90s, 15m, 1h, 1d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def env_default(name: str, default: Any = None) -> Any:
    """Default for a flag: the environment variable ``name`` if set (and non-empty), else ``default``."""
    value = os.environ.get(name)
    return default if value in (None, "") else value


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def redact_url(url: str | None) -> str | None:
    """Hide the password (and token-like query values) of a URL before logging it."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)((?:password|token|secret|key)=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad arguments as ``prog: error: reason`` on one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def command_parser(prog: str, description: str, epilog: str, subcommands: tuple[str, ...]) -> OneLineArgumentParser:
    """A top-level command whose subcommands are modules exposing ``add_parser(subparsers)``."""
    import importlib

    parser = OneLineArgumentParser(prog=prog, description=description, epilog=epilog)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    sub.required = True
    for module in subcommands:
        importlib.import_module(module).add_parser(sub)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand; its return value (None: 0) is the exit status."""
    args = parser.parse_args(argv)
    return int(args.func(args, parser) or 0)


def validation_message(exc: ValidationError) -> str:
    """First error of a pydantic ValidationError as one line: ``field: message``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ())) or "config"
    return f"{loc.replace('_', '-')}: {err.get('msg', 'invalid value')}"


def build_config(parser: argparse.ArgumentParser, model: type[T], values: dict[str, Any]) -> T:
    """Validate ``values`` into ``model`` once; on failure exit 2 via ``parser.error`` with one line."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        parser.error(validation_message(exc))


def setup_logging(level: str | None = None) -> None:
    """One log format for every command: timestamp, level, logger, message, on stderr."""
    logging.basicConfig(
        level=(level or env_default("LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("kafka", "httpx", "httpcore", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _threads_arg(text: str) -> int | None:
    from clmlf.serving.cpu_threads import parse_threads

    try:
        return parse_threads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _precision_arg(text: str) -> str:
    from clmlf.serving.precision import parse_precision

    try:
        return parse_precision(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_precision_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--precision`` (env ``CLMLF_PRECISION``) and ``--threads`` (env ``CLMLF_THREADS``), shared by the
    commands that run the model (predict, evaluate, clmlf-monitor run)."""
    parser.add_argument(
        "--precision",
        type=_precision_arg,
        default=env_default("CLMLF_PRECISION", "auto"),
        metavar="MODE",
        help="auto, fp32, bf16 or int8 (env CLMLF_PRECISION; default auto: bf16 on CUDA and on CPUs with "
        "native bf16, else fp32; int8 is opt-in, it changes labels)",
    )
    add_threads_argument(parser)


def add_threads_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--threads`` (env ``CLMLF_THREADS``), for commands that run the model in fp32 only (clmlf soup)."""
    parser.add_argument(
        "--threads",
        type=_threads_arg,
        default=env_default("CLMLF_THREADS", "auto"),
        metavar="N",
        help="torch intra-op threads (env CLMLF_THREADS; default auto: OMP_NUM_THREADS if set, else the "
        "cgroup CPU quota, else the usable CPUs)",
    )
