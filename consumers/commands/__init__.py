"""One module per `clmlf-monitor` streaming subcommand (run, produce, demo), each exposing
``add_parser(subparsers)``."""

SUBCOMMANDS = (
    "consumers.commands.run",
    "consumers.commands.produce",
    "consumers.commands.demo",
)
