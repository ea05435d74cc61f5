"""The knobs of the consumer loop (:class:`consumers.pipeline.Pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoopSettings:
    """The consumer-loop knobs (a slice of :class:`consumers.config.RunConfig`)."""

    topic: str
    dlq_topic: str
    max_in_flight: int
    exit_when_idle: float | None
    shutdown_grace: float
    max_in_flight_bytes: int = 1 << 30
    image_tensor_bytes: int = 0  # what a decoded image of the model costs, counted per post with an image
    poll_timeout_ms: int = 100
