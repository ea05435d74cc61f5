"""The decode budget: how many image pixels the image workers may decode at once, together.

Each image worker reserves the pixels an image will decode to (read from its header before any
pixel is decoded, see :func:`clmlf.fetch.decode.decoded_pixels`) and releases them when the image is a
small model tensor again.  A reservation that does not fit waits, first come first served, so N
workers cannot multiply the per-image cap: the pixels being decoded never exceed ``capacity``,
and the decode memory of the process stays below ``capacity`` x the worst bytes per pixel
(14 for a palette PNG with transparency, 13 for RGBA; docs/performance.md).  A reservation larger than the whole budget is
clamped to it (it then decodes alone).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class DecodeBudget:
    """A semaphore weighted by pixels, fair (FIFO), with its peak use recorded."""

    def __init__(self, capacity: int, on_change: Callable[[int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("the decode budget must be at least 1 pixel")
        self.capacity = capacity
        self._on_change = on_change
        self._cond = threading.Condition()
        self._queue: deque[object] = deque()
        self._in_use = 0
        self.peak = 0  # most pixels reserved at once so far
        self.waits = 0  # reservations that had to wait for room

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def waiting(self) -> int:
        """Reservations queued for room right now."""
        with self._cond:
            return len(self._queue)

    @contextmanager
    def reserve(self, pixels: int) -> Iterator[int]:
        """Hold ``pixels`` (clamped to 0..capacity) for the duration of the block; yields the weight."""
        weight = max(0, min(int(pixels), self.capacity))
        if weight == 0:
            yield 0
            return
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            if self._queue[0] is not ticket or self._in_use + weight > self.capacity:
                self.waits += 1
            while self._queue[0] is not ticket or self._in_use + weight > self.capacity:
                self._cond.wait()
            self._queue.popleft()
            self._in_use += weight
            self.peak = max(self.peak, self._in_use)
            self._changed()
            self._cond.notify_all()  # the next in line may fit too
        try:
            yield weight
        finally:
            with self._cond:
                self._in_use -= weight
                self._changed()
                self._cond.notify_all()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self._in_use)
