"""Rate-limit the Kafka client's log flood during broker outages.

kafka-python logs every failed connection attempt at ERROR, hundreds a second
while a broker is unreachable.  :class:`ThrottleFilter` lets one record per
(logger, message template) through per interval and drops the repeats; the
pipeline's own warnings (commit/poll failures) still say what is going on.
"""

from __future__ import annotations

import logging
import threading
import time


class ThrottleFilter(logging.Filter):
    """Pass the first record of each (logger, template) per ``interval`` seconds, for ``prefixes`` only."""

    def __init__(self, prefixes: tuple[str, ...] = ("kafka",), interval: float = 30.0) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, str(record.msg)[:200])
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -self._interval) < self._interval:
                return False
            if len(self._last) > 1000:
                self._last.clear()
            self._last[key] = now
        return True


def install(interval: float = 10.0) -> ThrottleFilter:
    """Attach one throttle to every handler of the root logger."""
    throttle = ThrottleFilter(prefixes=("kafka", "consumers.pipeline", "consumers.sinks", "consumers.dlq"),
                              interval=interval)
    for handler in logging.getLogger().handlers:
        handler.addFilter(throttle)
    return throttle
