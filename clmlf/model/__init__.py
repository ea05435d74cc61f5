"""The CLMLF model: configuration, encoder registry, network, losses, input preprocessing, checkpoints, embedded default."""
