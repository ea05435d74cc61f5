"""Image stage: fetch + decode post images on a bounded thread pool beside the model.

Posts without an image go straight to the ready queue; posts with one are
fetched (inline base64 or URL, via the image fetcher) and decoded on
``workers`` threads while the model worker keeps running batches, then join the
ready queue.  Any failure (blocked address, timeout, too large, not an image,
decompression bomb) leaves the post text-only with ``image = "failed"``; the
outcome is counted.  Work whose partition lease was revoked is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clmlf.posts import Post
from consumers.work import WorkItem

FetchBytes = Callable[[Post], bytes | None]
DecodeImage = Callable[[bytes], Any]
log = logging.getLogger(__name__)


class ImageStage:
    """Turns polled posts into ready posts (image tensor attached or status set)."""

    def __init__(self, ready: queue.Queue[WorkItem], fetch: FetchBytes, decode: DecodeImage, workers: int,
                 count_outcome: Callable[[str], None]) -> None:
        self._ready = ready
        self._fetch = fetch
        self._decode = decode
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
            return self._decode(data), "used", "used"
        except Exception as exc:  # every image failure degrades the post to text-only
            reason = getattr(exc, "reason", None) or type(exc).__name__
            log.debug("image of post %r failed: %s", post.id, exc)
            return None, "failed", str(reason)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
