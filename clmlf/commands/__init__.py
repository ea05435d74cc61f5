"""One module per `clmlf` subcommand: each exposes add_parser(subparsers)."""
