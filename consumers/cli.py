"""``clmlf-monitor``: the streaming side (run, produce, demo) and the monitor (query, alerts, serve, alerter).

Each package owns its subcommands (``consumers.commands``, ``monitor.commands``: one module each,
exposing ``add_parser(subparsers)``); this entry point lives in ``consumers`` because consumers may
import monitor, never the other way.  Heavy imports stay inside the run functions so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import sys

from clmlf.settings import OneLineArgumentParser
from consumers.commands import SUBCOMMANDS as CONSUMER_COMMANDS
from monitor.commands import SUBCOMMANDS as MONITOR_COMMANDS

SUBCOMMANDS = CONSUMER_COMMANDS + MONITOR_COMMANDS


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="clmlf-monitor",
        description="Streaming sentiment monitor: consume posts from Kafka, label them with CLMLF, "
        "aggregate per topic in Redis, export Prometheus metrics, raise trend alerts.",
        epilog="Every option can also come from the environment variable named in its help. "
        "Run 'clmlf-monitor COMMAND --help' for details.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    sub.required = True
    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args, parser) or 0)


if __name__ == "__main__":
    sys.exit(main())
