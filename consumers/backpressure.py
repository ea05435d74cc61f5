"""Backpressure of the consumer loop: pause every assigned partition while too many posts (or bytes)
are in flight, resume them once both are back at half.  Nothing is dropped: unpolled records wait
in Kafka."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("consumers.pipeline")


class Backpressure:
    """Pause/resume decisions of one consumer; ``paused`` is reset when a new assignment arrives."""

    def __init__(self, max_in_flight: int, max_in_flight_bytes: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_in_flight_bytes = max_in_flight_bytes
        self.paused = False

    def apply(self, consumer: Any, held: int, held_bytes: int, force_pause: bool = False) -> None:
        """Pause or resume ``consumer``'s partitions for ``held`` posts of ``held_bytes`` in flight."""
        if force_pause or held >= self.max_in_flight or held_bytes >= self.max_in_flight_bytes:
            unpaused = consumer.assignment() - consumer.paused()
            if unpaused:
                consumer.pause(*unpaused)
                if not force_pause and not self.paused:
                    log.info("backpressure: %d posts (%.1f MiB) in flight, pausing %d partitions", held,
                             held_bytes / 2**20, len(unpaused))
            self.paused = True
        elif self.paused and held <= self.max_in_flight // 2 and held_bytes <= self.max_in_flight_bytes // 2:
            paused = consumer.paused()
            if paused:
                consumer.resume(*paused)
            self.paused = False
            log.debug("backpressure released: %d posts (%.1f MiB) in flight", held, held_bytes / 2**20)
