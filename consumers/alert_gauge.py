"""Mirror the monitor's firing trend alerts into ``clmlf_alert_active`` of this consumer.

Alerts are evaluated by ``clmlf-monitor alerter`` and kept in Redis; every
consumer re-exports the current state so one scrape target shows both the
stream and its alerts.  A daemon thread refreshes the gauge every ``interval``
seconds (1 = firing, 0 = was firing, now resolved); Redis errors only skip a round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class AlertGaugeRefresher(threading.Thread):
    def __init__(self, active_alerts: Callable[[], list[Any]], gauge: Any, topic_label: Callable[[str], str],
                 interval: float = 15.0) -> None:
        super().__init__(name="alert-gauge", daemon=True)
        self._active = active_alerts
        self._gauge = gauge
        self._topic_label = topic_label
        self._interval = interval
        self._stop_event = threading.Event()
        self._shown: set[tuple[str, str]] = set()

    def refresh(self) -> None:
        firing = {(self._topic_label(a.topic), a.kind) for a in self._active()}
        for topic, kind in firing:
            self._gauge.labels(topic=topic, kind=kind).set(1)
        for topic, kind in self._shown - firing:
            self._gauge.labels(topic=topic, kind=kind).set(0)
        self._shown |= firing

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.refresh()
            except Exception as exc:  # Redis down or alert state unreadable: try again next round
                log.debug("alert gauge refresh skipped: %s", exc)
            self._stop_event.wait(self._interval)

    def close(self) -> None:
        self._stop_event.set()
