"""``clmlf``: the model command (train, evaluate, predict, visualize, probe, soup).

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the
module keeps heavy imports (torch, transformers) inside its run function so that
``--help`` stays fast.
"""

from __future__ import annotations

import sys

from clmlf.settings import OneLineArgumentParser, command_parser, run_command

SUBCOMMANDS = (
    "clmlf.commands.train",
    "clmlf.commands.evaluate",
    "clmlf.commands.predict",
    "clmlf.commands.visualize",
    "clmlf.commands.probe",
    "clmlf.commands.soup",
)


def build_parser() -> OneLineArgumentParser:
    return command_parser(
        "clmlf",
        "CLMLF multimodal (text + image) sentiment model: train it, evaluate it, "
        "label posts with it, draw its attention and cluster figures, and build the image probe.",
        "Run 'clmlf COMMAND --help' for the options of one command.",
        SUBCOMMANDS,
    )


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
