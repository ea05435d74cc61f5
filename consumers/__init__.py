"""Kafka consumers: posts -> images -> micro-batches -> CLMLF worker -> sinks."""
