"""Shared fixtures: a real Kafka-protocol broker, private Redis servers, a tiny checkpoint.

* ``broker`` (session): one Tansu broker on a free loopback port; tests isolate
  themselves with unique topic and group names (``unique_name``).
* ``redis_server`` (session): one private ``redis-server``; isolate with a
  unique key prefix.  ``private_redis`` (per test, durable AOF) may be killed and
  restarted by the test.
* ``tiny_checkpoint`` (session): a tiny random CLMLF checkpoint directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.local_infra import LocalBroker, LocalRedis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The commands under test choose their torch threads at start-up (clmlf.serving.cpu_threads); OMP_NUM_THREADS
# takes precedence there, so one test running `clmlf predict` does not raise every later test's threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log_path=log) as running:
        yield running


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    with LocalRedis() as running:
        yield running


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    with LocalRedis(durable=True) as running:
        yield running


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A topic/group/prefix-safe name unique to this test."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:8]}"
