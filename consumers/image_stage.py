"""Image stage: resolve post images on a bounded thread pool beside the model.

What a post's image becomes is the labelling core's decision
(:class:`clmlf.serving.labelling.ImageResolver`): fetched (inline base64 or URL) and
decoded within the decode budget (``used``), ``failed`` (blocked address, timeout, too
large, not an image, decompression bomb: the post goes on text-only), ``none`` (no
image) or, for a model trained without images, ``ignored`` (never fetched nor decoded).
This stage only runs it where it belongs: posts that need no fetch (no image, or a
text-only model) go straight to the ready queue; the others are resolved on
``workers`` threads while the model worker keeps running batches, then join the ready
queue. Every outcome is counted; work whose partition lease was revoked is skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from clmlf.serving.labelling import ImageResolver, ResolvedImage
from consumers.work import WorkItem

log = logging.getLogger(__name__)


class ImageStage:
    """Turns polled posts into ready posts (image tensor attached or status set)."""

    def __init__(
        self,
        ready: queue.Queue[WorkItem],
        resolve: ImageResolver,
        workers: int,
        count_outcome: Callable[[str], None],
    ) -> None:
        self._ready = ready
        self.resolve = resolve
        self.budget = resolve.budget
        self._count = count_outcome
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image")
        self._in_progress = 0
        self._lock = threading.Lock()

    @property
    def in_progress(self) -> int:
        return self._in_progress

    def submit(self, item: WorkItem) -> None:
        if not self.resolve.needs_io(item.post):  # no image, or one a text-only model ignores
            self._attach(item, self.resolve(item.post))
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
                self._attach(item, self.resolve(item.post))
            except Exception as exc:  # never lose the post: it goes on text-only
                log.warning("image stage failed on post %r: %s", item.post.id, type(exc).__name__)
                item.image, item.image_status = None, "failed"
            if not item.lease.revoked:
                self._ready.put(item)
        finally:
            with self._lock:
                self._in_progress -= 1

    def _attach(self, item: WorkItem, image: ResolvedImage) -> None:
        item.image, item.image_status = image.tensor, image.status
        self._count(image.outcome)

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
