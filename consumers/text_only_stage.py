"""Image stage of a text-only model: posts go straight to the ready queue, their images untouched.

A checkpoint trained without images (``trained_with_images: false``) must never
let an image change its output, so its images are not worth a byte of egress or
a cycle of decoding: this stage replaces :class:`~consumers.image_stage.ImageStage`
for such a model. A post with an image source is marked ``image = "ignored"``
(counted as outcome ``ignored``), one without stays ``"none"``; nothing is
fetched, decoded or run on a thread pool.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

from consumers.work import WorkItem


class TextOnlyStage:
    """Same interface as :class:`~consumers.image_stage.ImageStage` (``submit``, ``in_progress``, ``close``)."""

    def __init__(self, ready: queue.Queue[WorkItem], count_outcome: Callable[[str], None]) -> None:
        self._ready = ready
        self._count = count_outcome

    @property
    def in_progress(self) -> int:
        return 0  # nothing is ever fetched or decoded in the background

    def submit(self, item: WorkItem) -> None:
        item.image = None
        item.image_status = "ignored" if item.post.has_image_source else "none"
        self._count(item.image_status)
        self._ready.put(item)

    def close(self, wait: bool = True) -> None:
        """Nothing to stop (no threads)."""
