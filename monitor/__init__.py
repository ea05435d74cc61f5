"""Monitor: topic sentiment in Redis, query API, trend alerts, metrics."""
