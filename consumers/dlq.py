"""Dead-letter topic: rejected records go to ``<topic>.dlq`` with the reason.

Each dead letter is a JSON envelope (:func:`dlq_envelope`) holding the original
key and value bytes base64-encoded, the reason code and detail line from
:class:`contract.posts.InvalidPost`, and the source topic, partition, offset and
timestamp; the reason is also a record header (``clmlf-dlq-reason``) so tools
can filter without parsing.  :class:`DeadLetterWriter` sends asynchronously
and reports which source offsets are durably dead-lettered, resending failures,
so the consumer loop never blocks on it.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.offsets import PartitionLease

REASON_HEADER = "clmlf-dlq-reason"
# Original bytes kept in an envelope; larger values are cut (base64 inflates 4/3, and brokers
# default to 1 MB messages), so a giant record can never block its partition.
MAX_KEPT_VALUE_BYTES = 512 * 1024
log = logging.getLogger(__name__)


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def dlq_envelope(*, value: bytes | None, key: bytes | None, reason: str, detail: str, topic: str,
                 partition: int, offset: int, timestamp_ms: int | None,
                 max_value_bytes: int = MAX_KEPT_VALUE_BYTES) -> bytes:
    """The JSON dead-letter envelope (UTF-8 bytes).

    ``value_b64`` holds the original value, or its first ``max_value_bytes``
    bytes when longer (then ``value_truncated`` is true; ``value_bytes`` is
    always the original length).
    """
    size = None if value is None else len(value)
    truncated = value is not None and len(value) > max_value_bytes
    if truncated:
        value = value[:max_value_bytes]
    envelope = {
        "reason": reason,
        "detail": detail,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "timestamp_ms": timestamp_ms,
        "key_b64": _b64(key),
        "value_b64": _b64(value),
        "value_bytes": size,
        "value_truncated": truncated,
        "dead_lettered_at_ms": int(time.time() * 1000),
    }
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


@dataclass
class _Pending:
    lease: PartitionLease
    offset: int
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    minimal: bytes  # the same envelope without the original value, for when the full one is refused
    future: Any = None
    retry_at: float = 0.0
    attempts: int = 0


class DeadLetterWriter:
    """Sends dead letters without blocking; :meth:`completed` yields the source offsets that are safe."""

    def __init__(self, producer: Any, on_error: Callable[[], None] = lambda: None,
                 max_backoff: float = 10.0) -> None:
        self._producer = producer
        self._on_error = on_error
        self._max_backoff = max_backoff
        self._pending: list[_Pending] = []

    def __len__(self) -> int:
        return len(self._pending)

    def submit(self, lease: PartitionLease, *, dlq_topic: str, source_topic: str, partition: int, offset: int,
               key: bytes | None, value: bytes | None, timestamp_ms: int | None, reason: str,
               detail: str) -> None:
        fields = dict(key=key, reason=reason, detail=detail, topic=source_topic, partition=partition,
                      offset=offset, timestamp_ms=timestamp_ms)
        envelope = dlq_envelope(value=value, **fields)
        minimal = dlq_envelope(value=value, max_value_bytes=0, **fields)
        item = _Pending(lease, offset, dlq_topic, key, envelope, [(REASON_HEADER, reason.encode())], minimal)
        self._send(item)
        self._pending.append(item)

    def _send(self, item: _Pending) -> None:
        item.attempts += 1
        try:
            item.future = self._producer.send(item.topic, key=item.key, value=item.value, headers=item.headers)
        except Exception as exc:  # broker unreachable: retry later
            item.future = None
            self._failed(item, exc)

    def _failed(self, item: _Pending, exc: BaseException | None) -> None:
        self._on_error()
        if exc is not None and getattr(exc, "retriable", True) is False and item.value is not item.minimal:
            log.warning("dead letter refused (%s): resending it without the original value", exc)
            item.value = item.minimal
            item.retry_at = 0.0
            return
        item.retry_at = time.monotonic() + min(self._max_backoff, 0.2 * 2 ** min(item.attempts, 10))
        log.warning("dead-letter send failed (attempt %d), will retry: %s", item.attempts, exc)

    def completed(self, resend: bool = True) -> list[tuple[PartitionLease, int]]:
        """Source offsets whose dead letter the broker acknowledged; failed sends are retried
        (unless ``resend`` is false: inside a rebalance callback nothing may block)."""
        done, still = [], []
        now = time.monotonic()
        for item in self._pending:
            if item.lease.revoked:
                continue
            if item.future is None:
                if resend and now >= item.retry_at:
                    self._send(item)
                still.append(item)
            elif not item.future.is_done:
                still.append(item)
            elif item.future.succeeded():
                done.append((item.lease, item.offset))
            else:
                item.future, exc = None, item.future.exception
                self._failed(item, exc)
                still.append(item)
        self._pending = still
        return done
