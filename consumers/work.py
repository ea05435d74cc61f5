"""The unit of work that flows through the pipeline stages, and the messages back to the loop."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from clmlf.serving.labelling import event_time
from consumers.offsets import PartitionLease
from contract.posts import ImageStatus, Post


@dataclass(slots=True)
class WorkItem:
    """One valid post on its way from the consumer loop to the sinks."""

    lease: PartitionLease
    topic: str
    partition: int
    offset: int
    key: bytes | None
    raw: bytes
    post: Post
    record_time: float  # Kafka record timestamp, epoch seconds
    received: float  # time.monotonic() when polled
    image: Any = None  # decoded image tensor, when one was used
    image_status: ImageStatus = "none"
    tokens: Any = None  # the text encoded for the model (clmlf.model.preprocess.TextTokens), None: not yet

    @property
    def event_time(self) -> float:
        return event_time(self.post, self.record_time)

    @property
    def text_length(self) -> int:
        """What the post costs in a batch: its token count once encoded, else its characters."""
        return len(self.tokens) if self.tokens is not None else len(self.post.text)


def post_bytes(post: Post, image_tensor_bytes: int, tokens: Any = None) -> int:
    """Memory a parsed post holds besides its raw value, as counted against
    ``--max-in-flight-bytes``: its text and base64 image strings, its encoded text
    (``tokens``: the id lists and their int objects), and the decoded image tensor it will
    carry (``image_tensor_bytes``) when it has an image source."""
    held = sys.getsizeof(post.text) + tokens_bytes(tokens)
    if post.image_b64:
        held += sys.getsizeof(post.image_b64)
    if post.has_image_source:
        held += image_tensor_bytes
    return held


def tokens_bytes(tokens: Any) -> int:
    """Memory held by an encoded text (``TextTokens``, or any sequence of ids): each list and an
    int object per entry (an upper bound: small ints are shared)."""
    if tokens is None:
        return 0
    lists = [getattr(tokens, "ids", tokens), getattr(tokens, "type_ids", None)]
    return sum(sys.getsizeof(ids) + 28 * len(ids) for ids in lists if ids is not None)


@dataclass(frozen=True, slots=True)
class Done:
    """The post at ``offset`` is durably stored (Redis, and output topic when set)."""

    lease: PartitionLease
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A post the model could not process: send it to the DLQ, then commit it."""

    item: WorkItem
    reason: str
    detail: str
