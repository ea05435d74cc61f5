"""Read-side helpers shared by the query command and the HTTP API: ranking and tables."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from monitor.keys import TOTAL_FIELD
from monitor.store import SentimentStore
from monitor.windows import WindowCounts

Rank = Literal["volume", "negative"]


CANDIDATE_FACTOR = 2  # candidates counted exactly, per requested row
MIN_DEPTH = 100  # members read from each bucket's ranked index, at least (more: better candidates)


class Ranking(list[WindowCounts]):
    """``ranked_topics``' answer: the rows, best first, plus ``exact``: True when the ranked
    index proves that no topic left out belongs in the rows (see docs/api.md)."""

    def __init__(self, rows: Sequence[WindowCounts] = (), exact: bool = True) -> None:
        super().__init__(rows)
        self.exact = exact


def ranked_topics(
    store: SentimentStore,
    window_seconds: float,
    rank: Rank = "volume",
    limit: int = 50,
    negative_label: str = "negative",
    now: float | None = None,
) -> Ranking:
    """The ``limit`` topics of the last window with the most posts (``volume``) or the highest
    negative share (``negative``; ties by volume, then name), at a cost bounded by ``limit``.

    Candidates come from the ranked index: per bucket of the window, the ``depth`` =
    ``max(100, 2 * limit)`` topics with the most posts (or the most negative posts) are read and
    summed; the best ``2 * limit`` sums are counted exactly (ZMSCORE on the same index).  Redis
    work: one script reading buckets x ``depth`` sorted-set members, then one script per label
    and one for the totals, each one ZMSCORE of ``2 * limit`` members per bucket (plus one more
    candidate script for ``negative`` when fewer than ``limit`` topics have negative posts),
    whatever the number of topics.  ``rank=negative`` ranks, by share, the topics with the most negative
    posts, then (when fewer than ``limit`` have any) the busiest others, whose share is 0.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    now = time.time() if now is None else now
    start, end = store.window_bounds(window_seconds, now)
    want = CANDIDATE_FACTOR * limit
    depth = max(MIN_DEPTH, want)
    field = TOTAL_FIELD if rank == "volume" else negative_label
    names, bound = store.top_candidates(field, start, end, depth, want, now)
    fill_bound = None
    if rank == "negative" and len(names) < limit:
        busiest, fill_bound = store.top_candidates(TOTAL_FIELD, start, end, depth, want, now)
        have = set(names)
        names += [name for name in busiest if name not in have]
    if not names:
        return Ranking([], exact=bound == 0)
    counts = [c for c in store.ranked_counts(names, window_seconds, now).values() if c.total]
    if rank == "negative":
        counts.sort(key=lambda c: (-c.share(negative_label), -c.total, c.topic))
    else:
        counts.sort(key=lambda c: (-c.total, c.topic))
    rows = counts[:limit]
    if rank == "volume":
        exact = bound == 0 or (len(rows) == limit and rows[-1].total > bound)
    else:
        exact = bound == 0 and (
            fill_bound is None or fill_bound == 0 or (len(rows) == limit and rows[-1].total > fill_bound)
        )
    return Ranking(rows, exact=exact)


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
        "exact": getattr(rows, "exact", True),
        "topics": [row.to_dict() for row in rows],
    }
