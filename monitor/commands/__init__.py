"""One module per `clmlf-monitor` monitor subcommand (query, alerts, serve, alerter)."""
