"""Run ``clmlf train ARGS`` without importing the other subcommands (used while they were being written)."""

import sys

from clmlf.commands import train
from clmlf.settings import OneLineArgumentParser

if __name__ == "__main__":
    parser = OneLineArgumentParser(prog="clmlf")
    train.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *sys.argv[1:]])
    sys.exit(args.func(args, parser))
