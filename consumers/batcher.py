"""Micro-batching by size, age and text length (the token count in the stream).

A :class:`MicroBatcher` holds a small pool of ready posts.  It is due when the
pool has ``max_batch`` posts or its oldest post has waited ``max_wait``
seconds.  The batch it hands out always contains the oldest post (so no post
waits for ever) plus the posts whose text lengths are closest to it among the
pool, which cuts the padding the tokenizer adds to a batch.  The pool is capped
at ``max_batch * group_window`` posts; the caller stops adding when
:attr:`full` is true.  Pure data structure: the caller supplies the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
# The pool, as a multiple of max_batch, that the stream holds by default (--batch-pool): large enough to
# batch real posts of close token counts (docs/performance.md, "The stream's batch pool").
DEFAULT_GROUP_WINDOW = 16


@dataclass
class _Entry(Generic[T]):
    item: T
    length: int
    arrived: float
    seq: int


class MicroBatcher(Generic[T]):
    """Size/age-triggered batcher that groups similar text lengths."""

    def __init__(self, max_batch: int, max_wait: float, length_of: Callable[[T], int],
                 group_window: int = DEFAULT_GROUP_WINDOW) -> None:
        if max_batch < 1 or max_wait <= 0 or group_window < 1:
            raise ValueError("max_batch >= 1, max_wait > 0 and group_window >= 1 are required")
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.capacity = max_batch * group_window
        self._length_of = length_of
        self._pool: list[_Entry[T]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._pool)

    @property
    def full(self) -> bool:
        return len(self._pool) >= self.capacity

    def add(self, item: T, now: float) -> None:
        self._pool.append(_Entry(item, self._length_of(item), now, self._seq))
        self._seq += 1

    def oldest_arrival(self) -> float | None:
        return min((e.arrived for e in self._pool), default=None)

    def due(self, now: float) -> bool:
        if not self._pool:
            return False
        return len(self._pool) >= self.max_batch or now - self.oldest_arrival() >= self.max_wait

    def time_until_due(self, now: float) -> float | None:
        """Seconds until the age trigger fires (0 if due now, None if empty)."""
        if not self._pool:
            return None
        if len(self._pool) >= self.max_batch:
            return 0.0
        return max(0.0, self.oldest_arrival() + self.max_wait - now)

    def take(self) -> list[T]:
        """Remove and return one batch: the oldest post and up to ``max_batch - 1`` of similar length.

        Among the pool sorted by length, the batch is the window of ``max_batch``
        consecutive posts that contains the oldest one and spans the smallest
        length range.
        """
        if not self._pool:
            return []
        size = min(self.max_batch, len(self._pool))
        ordered = sorted(self._pool, key=lambda e: (e.length, e.seq))
        oldest = min(range(len(ordered)), key=lambda i: (ordered[i].arrived, ordered[i].seq))
        best_start, best_span = 0, None
        for start in range(max(0, oldest - size + 1), min(oldest, len(ordered) - size) + 1):
            span = ordered[start + size - 1].length - ordered[start].length
            if best_span is None or span < best_span:
                best_start, best_span = start, span
        chosen = ordered[best_start:best_start + size]
        chosen_ids = {id(e) for e in chosen}
        self._pool = [e for e in self._pool if id(e) not in chosen_ids]
        return [e.item for e in sorted(chosen, key=lambda e: e.seq)]
