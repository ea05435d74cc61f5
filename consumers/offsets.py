"""Per-partition "done" tracking: which offset may be committed.

Posts of one partition are taken in offset order but may finish out of order
(an image fetch is slow, a batch groups by length).  For each partition the
tracker keeps the started offsets in order and the finished ones; the commit
point is the lowest offset not yet finished (or one past the last started one),
so everything below a committed offset is durably done.  It also sums the bytes
each unfinished offset holds (the consumer loop's byte budget).

Ownership of a partition is a :class:`PartitionLease`.  On revoke the lease is
marked revoked and forgotten: late completions carrying it are ignored, and any
stage may skip work whose lease is revoked.  The consumer-loop thread and the
client's rebalance callbacks (kafka-python 3 runs them on its IO thread) both
use the tracker, so every method holds one lock; other threads only read
``lease.revoked``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass(eq=False)
class PartitionLease:
    """This process's current ownership of one partition."""

    partition: Hashable
    revoked: bool = False


@dataclass
class _PartitionState:
    lease: PartitionLease
    started: deque[int] = field(default_factory=deque)
    finished: set[int] = field(default_factory=set)
    next_offset: int | None = None  # one past the last started offset
    committed: int | None = None  # last commit point sent and acknowledged
    held: dict[int, int] = field(default_factory=dict)  # unfinished offset -> bytes it holds

    def commit_point(self) -> int | None:
        while self.started and self.started[0] in self.finished:
            self.finished.discard(self.started.popleft())
        if self.started:
            return self.started[0]
        return self.next_offset


class OffsetTracker:
    """Tracks started/finished offsets per partition and derives safe commit points."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _PartitionState] = {}
        self._lock = threading.RLock()
        self._held_bytes = 0

    def assign(self, partition: Hashable) -> PartitionLease:
        """Start owning ``partition`` (idempotent while the current lease is live)."""
        with self._lock:
            return self._assign(partition)

    def _assign(self, partition: Hashable) -> PartitionLease:
        state = self._parts.get(partition)
        if state is not None:
            return state.lease
        lease = PartitionLease(partition)
        self._parts[partition] = _PartitionState(lease)
        return lease

    def locked(self) -> threading.RLock:
        """The tracker's lock, to make several calls one step (``with tracker.locked(): ...``)."""
        return self._lock

    def leases(self) -> dict[Hashable, PartitionLease]:
        """The current lease of every owned partition."""
        with self._lock:
            return {partition: state.lease for partition, state in self._parts.items()}

    def lease(self, partition: Hashable) -> PartitionLease | None:
        with self._lock:
            state = self._parts.get(partition)
            return state.lease if state else None

    @property
    def partitions(self) -> list[Hashable]:
        with self._lock:
            return list(self._parts)

    def start(self, partition: Hashable, offset: int, nbytes: int = 0) -> PartitionLease:
        """Record that ``offset`` was taken for processing, holding ``nbytes`` of memory until it
        finishes (see :meth:`held_bytes`); returns the lease to carry with it.

        An offset at or below one already started means the client rewound the
        partition (e.g. after a failed commit): the old in-flight work is dropped
        with a fresh lease, as on revoke, and tracking restarts at ``offset``.
        """
        with self._lock:
            state = self._parts.get(partition)
            if state is None:
                self._assign(partition)
                state = self._parts[partition]
            elif state.next_offset is not None and offset < state.next_offset:
                committed = state.committed
                self.revoke([partition])
                self._assign(partition)
                state = self._parts[partition]
                state.committed = committed
            state.started.append(offset)
            state.next_offset = offset + 1
            if nbytes:
                state.held[offset] = state.held.get(offset, 0) + nbytes
                self._held_bytes += nbytes
            return state.lease

    def hold(self, lease: PartitionLease, offset: int, nbytes: int) -> None:
        """Add ``nbytes`` to what the unfinished ``offset`` holds (ignored for a stale lease)."""
        with self._lock:
            state = self._parts.get(lease.partition)
            if state is None or state.lease is not lease or nbytes <= 0 or offset in state.finished:
                return
            state.held[offset] = state.held.get(offset, 0) + nbytes
            self._held_bytes += nbytes

    def held_bytes(self) -> int:
        """Memory held by started, unfinished offsets of owned partitions (as declared to
        :meth:`start` / :meth:`hold`), released as they finish or their partition is revoked."""
        with self._lock:
            return self._held_bytes

    def start_owned(self, partition: Hashable, offset: int, nbytes: int = 0) -> PartitionLease | None:
        """Like :meth:`start`, but only for a partition this process owns now; None otherwise.

        A record polled just before its partition was revoked must not be taken: it
        would re-create the partition here and let its commit point skip the
        unfinished work that the revoke dropped (that work belongs to the new owner).
        """
        with self._lock:
            if partition not in self._parts:
                return None
            return self.start(partition, offset, nbytes)

    def done_below(self, partition: Hashable, offset: int) -> None:
        """Everything below ``offset`` of a (re)assigned ``partition`` is known to be done (finished
        under an earlier lease): with nothing started yet, ``offset`` becomes its commit point."""
        with self._lock:
            state = self._parts.get(partition)
            if state is not None and not state.started and state.next_offset is None:
                state.next_offset = offset

    def resume_point(self, partition: Hashable) -> int | None:
        """Where processing of ``partition`` must restart if everything unfinished is dropped now:
        the lowest unfinished offset, else one past the last started one (None: nothing started)."""
        with self._lock:
            state = self._parts.get(partition)
            return None if state is None else state.commit_point()

    def finish(self, lease: PartitionLease, offset: int) -> bool:
        """Record ``offset`` as done; False (ignored) when the lease is no longer current."""
        with self._lock:
            state = self._parts.get(lease.partition)
            if state is None or state.lease is not lease or lease.revoked:
                return False
            state.finished.add(offset)
            self._held_bytes -= state.held.pop(offset, 0)
            return True

    def pending(self, partition: Hashable | None = None) -> int:
        """Started but unfinished offsets (of one partition, or all)."""
        with self._lock:
            if partition is not None:
                states = [self._parts[partition]] if partition in self._parts else []
            else:
                states = list(self._parts.values())
            return sum(len(s.started) - len(s.finished) for s in states)

    def commit_points(self, partitions: list[Hashable] | None = None) -> dict[Hashable, int]:
        """Commit points that moved past the last acknowledged commit."""
        with self._lock:
            points = {}
            for partition in partitions if partitions is not None else list(self._parts):
                state = self._parts.get(partition)
                if state is None:
                    continue
                point = state.commit_point()
                if point is not None and point != state.committed:
                    points[partition] = point
            return points

    def committed(self, points: dict[Hashable, int]) -> None:
        """Remember commit points the broker acknowledged."""
        with self._lock:
            for partition, point in points.items():
                state = self._parts.get(partition)
                if state is not None:
                    state.committed = point

    def revoke(self, partitions: list[Hashable]) -> int:
        """Forget ``partitions``; their in-flight work is dropped. Returns how many posts were dropped."""
        with self._lock:
            dropped = 0
            for partition in partitions:
                state = self._parts.pop(partition, None)
                if state is not None:
                    state.lease.revoked = True
                    dropped += len(state.started) - len(state.finished)
                    self._held_bytes -= sum(state.held.values())
            return dropped
