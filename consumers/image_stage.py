"""Image stage: fetch + decode post images on a bounded thread pool beside the model.

Posts without an image go straight to the ready queue; posts with one are
fetched (inline base64 or URL, via the image fetcher) and decoded on
``workers`` threads while the model worker keeps running batches, then join the
ready queue.  Before decoding, a worker reserves the pixels the image will
decode to (from its header) from the shared :class:`~consumers.decode_budget.DecodeBudget`
and holds them until the image is a model tensor, so the workers together never
decode more than the budget at once.  Any failure (blocked address, timeout, too
large, not an image, decompression bomb) leaves the post text-only with
``image = "failed"``; the outcome is counted.  Work whose partition lease was
revoked is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from consumers.decode_budget import DecodeBudget
from consumers.work import WorkItem
from contract.posts import Post

FetchBytes = Callable[[Post], bytes | None]
DecodeImage = Callable[[bytes], Any]
DecodedPixels = Callable[[bytes], int]
log = logging.getLogger(__name__)


class ImageStage:
    """Turns polled posts into ready posts (image tensor attached or status set)."""

    def __init__(self, ready: queue.Queue[WorkItem], fetch: FetchBytes, decode: DecodeImage, workers: int,
                 count_outcome: Callable[[str], None], budget: DecodeBudget | None = None,
                 decoded_pixels: DecodedPixels | None = None) -> None:
        """``budget`` + ``decoded_pixels`` (header -> pixels): decode only within the budget."""
        if (budget is None) != (decoded_pixels is None):
            raise ValueError("give both budget and decoded_pixels, or neither")
        self._ready = ready
        self._fetch = fetch
        self._decode = decode
        self.budget = budget
        self._pixels = decoded_pixels
        self._count = count_outcome
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image")
        self._in_progress = 0
        self._lock = threading.Lock()

    @property
    def in_progress(self) -> int:
        return self._in_progress

    def submit(self, item: WorkItem) -> None:
        if not item.post.has_image_source:
            self._count("none")
            self._ready.put(item)
            return
        with self._lock:
            self._in_progress += 1
        self._pool.submit(self._process, item)

    def _process(self, item: WorkItem) -> None:
        try:
            if item.lease.revoked:
                return
            try:
                item.image, item.image_status, outcome = self._load(item.post)
                self._count(outcome)
            except Exception as exc:  # never lose the post: it goes on text-only
                log.warning("image stage failed on post %r: %s", item.post.id, type(exc).__name__)
                item.image, item.image_status = None, "failed"
            if not item.lease.revoked:
                self._ready.put(item)
        finally:
            with self._lock:
                self._in_progress -= 1

    def _load(self, post: Post) -> tuple[Any, str, str]:
        """(tensor or None, image status, outcome label)."""
        try:
            data = self._fetch(post)
            if data is None:
                return None, "none", "none"
            if self.budget is None or self._pixels is None:
                return self._decode(data), "used", "used"
            with self.budget.reserve(self._pixels(data)):
                return self._decode(data), "used", "used"
        except Exception as exc:  # every image failure degrades the post to text-only
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.debug("image of post %r failed: %s", post.id, exc)
            return None, "failed", str(reason)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
