"""``clmlf_alert_active{topic,kind}`` of a consumer, through its bounded topic labels.

The monitor's ``AlertEngine`` sets the gauge it is given; :class:`TopicCappedGauge` maps topics over
the consumer's label cap to ``other``, which reads 1 while any of them fires."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from consumers.metrics import OTHER_TOPIC


class TopicCappedGauge:
    """The ``gauge=`` an ``AlertEngine`` sets, with topics mapped to bounded label values.

    ``topic_label`` maps a topic name to itself or to ``other`` (the consumer's TopicLabeler).  The
    values of topics folded into ``other`` are remembered per kind, and ``other`` shows their
    maximum, so one resolved topic never hides another that still fires.
    """

    def __init__(self, gauge: Any, topic_label: Callable[[str], str]) -> None:
        self._gauge = gauge
        self._topic_label = topic_label
        self._folded: dict[str, dict[str, float]] = {}  # kind -> {topic: value} of topics under `other`
        self._lock = threading.Lock()

    def labels(self, *, topic: str, kind: str) -> _Setter:
        return _Setter(self, topic, kind)

    def set(self, topic: str, kind: str, value: float) -> None:
        label = self._topic_label(topic)
        if label != OTHER_TOPIC:
            self._gauge.labels(topic=label, kind=kind).set(value)
            return
        with self._lock:
            values = self._folded.setdefault(kind, {})
            values[topic] = value
            self._gauge.labels(topic=OTHER_TOPIC, kind=kind).set(max(values.values()))


class _Setter:
    """What ``TopicCappedGauge.labels(...)`` returns: the ``.set(value)`` of one series."""

    def __init__(self, owner: TopicCappedGauge, topic: str, kind: str) -> None:
        self._owner, self._topic, self._kind = owner, topic, kind

    def set(self, value: float) -> None:
        self._owner.set(self._topic, self._kind, value)
