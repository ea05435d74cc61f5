"""Shared helpers for the monitor's tests: a private key prefix on the local Redis, results."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from contract.posts import ResultRecord

REDIS_URL = os.environ.get("CLMLF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def result(post_id: str, label: str, topics: tuple[str, ...] = ("brand",)) -> ResultRecord:
    """A result record with a one-hot score for ``label``."""
    return ResultRecord(
        id=post_id,
        label=label,
        scores={label: 1.0},
        topics=list(topics),
        created_at="2026-01-01T00:00:00.000Z",
        processed_at="2026-01-01T00:00:00.000Z",
        model="test",
        image="none",
    )


@contextmanager
def redis_prefix() -> Iterator[tuple[redis.Redis, str]]:
    """A decode_responses client and a unique key prefix; every key under it is deleted after."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    try:
        yield client, prefix
    finally:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
