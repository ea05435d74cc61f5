"""One module per `clmlf-monitor` monitor subcommand (query, alerts, serve, alerter).

Each module exposes ``add_parser(subparsers)``; ``consumers.cli`` registers them next to the
streaming subcommands (the dependency is one-way: consumers -> monitor)."""

SUBCOMMANDS = (
    "monitor.commands.query",
    "monitor.commands.alerts",
    "monitor.commands.serve",
    "monitor.commands.alerter",
)
