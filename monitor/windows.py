"""Window arithmetic of the topic counts, without Redis: which buckets cover a time range, where an
event time falls against the retention, label order, and :class:`WindowCounts` (one topic, one window)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from monitor.keys import HOUR, TOTAL_FIELD

DEFAULT_BUCKET_TTL = 2 * 86400  # minute buckets: 2 days of event time
DEFAULT_FUTURE_SKEW = 120.0  # event times up to 2 minutes ahead of the clock are accepted

EventWindow = Literal["ok", "future", "expired"]
PREFERRED_LABEL_ORDER = ("positive", "neutral", "negative")


def classify_event_time(
    ts: float,
    now: float,
    *,
    retention: float = DEFAULT_BUCKET_TTL,
    max_skew: float = DEFAULT_FUTURE_SKEW,
) -> EventWindow:
    """``"future"`` if ``ts`` is more than ``max_skew`` ahead of ``now``, ``"expired"`` if older
    than the bucket retention, else ``"ok"`` (counted into the bucket of its event time)."""
    if ts > now + max_skew:
        return "future"
    if ts < now - retention:
        return "expired"
    return "ok"


def order_labels(labels: Iterable[str]) -> list[str]:
    """positive, neutral, negative first (when present), then any other label names sorted."""
    names = set(labels)
    head = [name for name in PREFERRED_LABEL_ORDER if name in names]
    return head + sorted(names - set(head))


@dataclass(frozen=True)
class WindowCounts:
    """Counts by label of one topic over one window (or one time series step)."""

    topic: str
    window_seconds: int
    total: int
    counts: dict[str, int]
    start: int = 0  # first bucket start (epoch s), inclusive
    end: int = 0  # end of the last bucket (epoch s), exclusive

    @property
    def shares(self) -> dict[str, float]:
        return {label: (n / self.total if self.total else 0.0) for label, n in self.counts.items()}

    def share(self, label: str) -> float:
        return self.counts.get(label, 0) / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape of ``clmlf-monitor query --json`` (CONTRACT.md)."""
        return {
            "topic": self.topic,
            "window_seconds": self.window_seconds,
            "total": self.total,
            "counts": dict(self.counts),
            "shares": {label: round(v, 6) for label, v in self.shares.items()},
        }


@dataclass(frozen=True)
class BucketPart:
    """One bucket key to read: ``kind`` is ``m`` (minute) or ``h`` (hourly roll-up)."""

    kind: Literal["m", "h"]
    start: int


def plan_range(start: int, end: int, bucket_seconds: int, minute_floor: int | None = None) -> list[BucketPart]:
    """Buckets covering ``[start, end)`` (both multiples of ``bucket_seconds``): hourly roll-ups
    for every whole hour inside, minute buckets for the edges.  Minute buckets that start before
    ``minute_floor`` (already expired) are replaced by the roll-up of their hour."""
    if start >= end:
        return []
    if minute_floor is not None and start < minute_floor:
        start = min(start - start % HOUR, end)
    first_hour = -(-start // HOUR) * HOUR
    last_hour = end // HOUR * HOUR
    if first_hour >= last_hour:
        return [BucketPart("m", s) for s in range(start, end, bucket_seconds)]
    parts = [BucketPart("m", s) for s in range(start, first_hour, bucket_seconds)]
    parts += [BucketPart("h", s) for s in range(first_hour, last_hour, HOUR)]
    parts += [BucketPart("m", s) for s in range(last_hour, end, bucket_seconds)]
    return parts



def window_counts_of(topic: str, sums: Counter[str], known_labels: list[str], start: int, end: int) -> WindowCounts:
    totals = Counter(sums)
    total = totals.pop(TOTAL_FIELD, 0)
    labels = order_labels([*known_labels, *totals])
    return WindowCounts(
        topic=topic,
        window_seconds=end - start,
        total=total,
        counts={label: totals.get(label, 0) for label in labels},
        start=start,
        end=end,
    )
