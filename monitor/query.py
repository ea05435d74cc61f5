"""Read-side helpers shared by the query command and the HTTP API: ranking and tables."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from monitor.store import SentimentStore, WindowCounts

Rank = Literal["volume", "negative"]


def ranked_topics(
    store: SentimentStore,
    window_seconds: float,
    rank: Rank = "volume",
    limit: int = 50,
    negative_label: str = "negative",
    now: float | None = None,
) -> list[WindowCounts]:
    """Topics with posts in the last window, ranked by volume or negative share (one round trip
    for the counts).  Ties break by volume, then name."""
    now = time.time() if now is None else now
    start, _ = store.window_bounds(window_seconds, now)
    topics = [t for t, _ in store.topics(active_since=start)]
    if not topics:
        return []
    counts = [c for c in store.window_counts_many(topics, window_seconds, now).values() if c.total]
    if rank == "negative":
        counts.sort(key=lambda c: (-c.share(negative_label), -c.total, c.topic))
    else:
        counts.sort(key=lambda c: (-c.total, c.topic))
    return counts[:limit]


def format_table(rows: Sequence[WindowCounts], window_label: str) -> str:
    """A plain-text table: topic, window, total, then ``count (share)`` per label."""
    labels: list[str] = []
    for row in rows:
        labels += [label for label in row.counts if label not in labels]
    header = ["topic", "window", "total", *labels]
    body = [
        [row.topic, window_label, str(row.total)]
        + [f"{row.counts.get(label, 0)} ({row.share(label):.1%})" for label in labels]
        for row in rows
    ]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in [header, *body]]
    return "\n".join(lines)


def ranked_json(rows: Sequence[WindowCounts], window_seconds: float, rank: Rank) -> dict[str, Any]:
    return {
        "window_seconds": int(round(window_seconds)),
        "rank": rank,
        "topics": [row.to_dict() for row in rows],
    }
