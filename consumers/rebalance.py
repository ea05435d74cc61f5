"""Rebalance hooks of the consumer loop (:class:`consumers.pipeline.Pipeline`).

kafka-python 3 runs them on its IO thread, so they commit through the coordinator's awaitable
commit and call only the pipeline's non-blocking rebalance methods."""

from __future__ import annotations

import logging
from typing import Any

from kafka import TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

log = logging.getLogger("consumers.pipeline")


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Rebalance hooks.  kafka-python 3 runs them on its IO thread, also while the loop thread
    is between polls; the tracker's lock serialises them with the loop.  They must not call
    blocking consumer APIs, hence the awaited commit."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        partitions = list(revoked)
        points = self._pipeline.revoke_commit_points(partitions)
        if points:
            ok = await commit_from_listener(self._pipeline.consumer, points)
            self._pipeline.revoke_committed(points if ok else {})
            if not ok:
                self._pipeline.note_lost_uncommitted(partitions)
        self._pipeline.on_revoked(partitions, lost=False)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        self._pipeline.note_lost_uncommitted(list(lost))
        self._pipeline.on_revoked(list(lost), lost=True)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._pipeline.on_assigned(list(assigned))


async def commit_from_listener(consumer: Any, points: dict[TopicPartition, int]) -> bool:
    """Commit inside a rebalance listener (on the client's IO loop), waiting for the answer.

    kafka-python 3 has no public awaitable commit; its coordinator's
    ``_commit_offsets_sync_async`` is what ``commit()`` runs.  Where a client
    lacks it, the commit is only sent (``commit_offsets_async``).
    """
    offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in points.items()}
    coordinator = consumer._coordinator
    try:
        if hasattr(coordinator, "_commit_offsets_sync_async"):
            await coordinator._commit_offsets_sync_async(offsets, timeout_ms=5000)
            return True
        coordinator.commit_offsets_async(offsets)
    except Exception as exc:  # the new owner re-reads from the last commit: duplicates, never loss
        log.warning("commit on revoke failed (the next owner redoes that work): %s", exc)
    return False


def partition_names(partitions: list[TopicPartition]) -> str:
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)) or "nothing"
