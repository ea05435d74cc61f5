"""``clmlf``: the model command (train, evaluate, predict, visualize).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the
module keeps heavy imports (torch, transformers) inside its run function so that
``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

from clmlf.settings import OneLineArgumentParser

SUBCOMMANDS = (
    "clmlf.commands.train",
    "clmlf.commands.evaluate",
    "clmlf.commands.predict",
    "clmlf.commands.visualize",
    "clmlf.commands.probe",
)


def build_parser() -> OneLineArgumentParser:
    parser = OneLineArgumentParser(
        prog="clmlf",
        description="CLMLF multimodal (text + image) sentiment model: train it, evaluate it, "
        "label posts with it, draw its attention and cluster figures, and build the image probe.",
        epilog="Run 'clmlf COMMAND --help' for the options of one command.",
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
