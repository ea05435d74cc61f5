"""``python -m consumers run|produce|demo``: the streaming subcommands without the monitor ones."""

from __future__ import annotations

import importlib
import sys

from clmlf.settings import OneLineArgumentParser

SUBCOMMANDS = ("consumers.commands.run", "consumers.commands.produce", "consumers.commands.demo")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineArgumentParser(prog="clmlf-monitor", description="Streaming subcommands of clmlf-monitor.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineArgumentParser)
    sub.required = True
    for module in SUBCOMMANDS:
        importlib.import_module(module).add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args, parser) or 0)


if __name__ == "__main__":
    sys.exit(main())
