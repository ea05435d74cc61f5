"""Fetch positions of the consumer loop's partitions: seek, rewind, lag gauges, stale-position resets.

Every call here is non-blocking or bounded (safe from the loop thread; :func:`seek_partition` also
from a rebalance callback) and logs instead of raising when the partition is no longer assigned."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from consumers.metrics import PipelineMetrics

log = logging.getLogger("consumers.pipeline")


def seek_partition(consumer: Any, tp: TopicPartition, offset: int) -> None:
    """Restart ``tp`` at ``offset`` (non-blocking: safe inside a rebalance callback)."""
    try:
        consumer.seek(tp, offset)
        log.info("%s[%d] restarts at offset %d (work dropped on revoke is redone)", tp.topic, tp.partition,
                 offset)
    except (ValueError, AssertionError, KafkaError) as exc:
        log.warning("seek of %s[%d] to %d failed: %s", tp.topic, tp.partition, offset, exc)


def rewind_to_committed(consumer: Any, tp: TopicPartition) -> None:
    """Restart ``tp`` at its committed offset (the beginning when nothing is committed)."""
    try:
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
    except (KafkaError, AssertionError, ValueError) as exc:  # no longer assigned: nothing to rewind
        log.warning("rewind of %s[%d] failed: %s", tp.topic, tp.partition, exc)


def refresh_lag(consumer: Any, partitions: Iterable[TopicPartition], metrics: PipelineMetrics) -> None:
    """Set ``clmlf_consumer_lag`` of each partition; reset a position found beyond the partition's end."""
    for tp in partitions:
        high = consumer.highwater(tp)
        if high is None:
            continue
        try:
            position = consumer.position(tp, timeout_ms=1000)
        except KafkaError:
            continue
        if position is None:
            continue
        if position > high:
            reset_stale_position(consumer, tp, position, high, metrics)
            continue
        metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(high - position)


def reset_stale_position(consumer: Any, tp: TopicPartition, position: int, high: int,
                         metrics: PipelineMetrics) -> None:
    """The fetch position is past the partition's end (the broker's latest high watermark): the
    topic was deleted and recreated, or the broker lost its data.  Reading on from there would
    silently skip the new records below it, and some brokers (Tansu) answer such a fetch with
    nothing instead of OFFSET_OUT_OF_RANGE.  Follow the offset-reset policy, loudly."""
    policy = str(consumer.config.get("auto_offset_reset", "earliest")).lower()
    try:
        if policy == "latest":
            consumer.seek_to_end(tp)
        else:
            consumer.seek_to_beginning(tp)
    except (KafkaError, AssertionError, ValueError) as exc:  # no longer assigned
        log.warning("reset of %s[%d] failed: %s", tp.topic, tp.partition, exc)
        return
    metrics.offset_resets.labels(topic=tp.topic, partition=str(tp.partition)).inc()
    # Formatted here: the log throttle keys on the template, and every partition's reset must show.
    log.warning(f"{tp.topic}[{tp.partition}]: position {position} is beyond the end of the partition "
                f"({high}): the topic was recreated or the broker lost its data; resetting to the "
                f"{'latest' if policy == 'latest' else 'earliest'} offset (auto_offset_reset={policy})")
