"""One module per `clmlf-monitor` streaming subcommand (run, produce, demo)."""
