"""Poison records against a real member, broker and Redis: one record, one fate.

Whatever a record holds, the member stays up, the record is either counted once
or dead-lettered once, and the good records behind it are counted.  The fuzz
test throws Hypothesis-generated records (arbitrary JSON and bytes, lone
surrogates, integers past Python's digit limit, deep nesting, every schema
field at and beyond its limit) at one in-process member that runs for the whole
test.  Budget: ``CLMLF_FUZZ_MEMBER_EXAMPLES`` rounds (8 in CI) of up to 12
records each; set it higher for a long run.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fuzz_testlib import Digits, dumps_hostile, json_values, post_like
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from pipeline_testlib import (
    CLI,
    Member,
    counted_total,
    create_topic,
    read_topic,
    store_for,
    stored_ids,
    wait_until,
)

from contract.posts import InvalidPost, parse_post

pytestmark = pytest.mark.integration

MEMBER_EXAMPLES = int(os.environ.get("CLMLF_FUZZ_MEMBER_EXAMPLES", "8"))


def test_poison_records_sent_with_produce_are_dead_lettered_and_the_good_ones_counted(
        tmp_path, broker, redis_server, tiny_checkpoint, unique_name):
    """Findings 1 and 2: a lone surrogate in an id or a topic, a 5,000-digit integer, sent with
    `clmlf-monitor produce` (which used to die on the id), no longer crash-loop the member."""
    topic = unique_name
    create_topic(broker, topic, 1)
    poison = {
        "bad_id": dumps_hostile({"id": "sur\ud800", "text": "lone surrogate id", "topics": ["brand"]}),
        "bad_topics": dumps_hostile({"id": "t1", "text": "lone surrogate topic", "topics": ["brand", "acme\udfff"]}),
        "invalid_json": dumps_hostile({"id": "n1", "text": "big number", "topics": ["brand"], "n": Digits(5000)}),
    }
    lines = []
    for i, value in enumerate(poison.values()):
        lines += [json.dumps({"id": f"good{i}", "text": f"fine post {i}", "topics": ["brand"]}).encode(), value]
    lines.append(json.dumps({"id": "last", "text": "behind the poison", "topics": ["brand"]}).encode())
    path = tmp_path / "posts.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    sent = subprocess.run([*CLI, "produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--input", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0 and "Traceback" not in sent.stderr, sent.stderr
    assert f"sent {len(lines)} records" in sent.stderr

    running = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=topic, group="g",
                     redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                     extra=["--exit-when-idle", "2s"])
    assert running.wait() == 0, running.log()[-3000:]
    assert "Traceback" not in running.log()
    store = store_for(redis_server.url, unique_name)
    assert stored_ids(store) == {"good0", "good1", "good2", "last"}
    assert counted_total(store, "brand") == 4
    dead = [json.loads(r.value) for r in read_topic(broker.bootstrap, f"{topic}.dlq", len(poison))]
    assert sorted(e["reason"] for e in dead) == sorted(poison)
    assert {base64.b64decode(e["value_b64"]) for e in dead} == set(poison.values())


# ------------------------------------------------------------------------------------------ fuzz

class FuzzMember:
    """One in-process member (real broker, real Redis) kept running across every fuzz example."""

    def __init__(self, broker: Any, redis_url: str, checkpoint: Any) -> None:
        import torch

        from clmlf.serving.inference import Predictor
        from consumers.assembly import assemble
        from consumers.config import RunConfig

        torch.set_num_threads(1)
        self.topic = self.prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
        self.bootstrap = broker.bootstrap
        create_topic(broker, self.topic, 2)
        config = RunConfig(bootstrap=broker.bootstrap, topic=self.topic, group=self.topic, redis_url=redis_url,
                           redis_prefix=self.prefix, max_batch=8, max_wait_ms=10, metrics_port=0,
                           session_timeout_ms=6000, alert_interval=0, image_timeout=1.0, image_workers=2)
        self.member = assemble(config, predictor=Predictor.from_checkpoint(checkpoint, "cpu"), serve_http=False)
        self.status: list[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.member.run()), daemon=True)
        self.thread.start()
        self.store = store_for(redis_url, self.prefix)
        self.producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                      max_request_size=32 * 1024 * 1024)
        self.dlq = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                 auto_offset_reset="earliest")
        self.dlq.assign([TopicPartition(f"{self.topic}.dlq", 0)])
        self.dead: dict[tuple[int, int], list[dict]] = {}

    def alive(self) -> bool:
        pipeline = self.member.pipeline
        return self.thread.is_alive() and pipeline.worker.error is None and pipeline.sink.error is None

    def send(self, records: list[tuple[bytes | None, bytes | None]]) -> list[tuple[int, int]]:
        futures = [self.producer.send(self.topic, key=key, value=value) for key, value in records]
        self.producer.flush(timeout=30)
        return [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]

    def read_dead_letters(self) -> None:
        for batch in self.dlq.poll(timeout_ms=200).values():
            for record in batch:
                envelope = json.loads(record.value)
                self.dead.setdefault((envelope["partition"], envelope["offset"]), []).append(envelope)

    def close(self) -> int | None:
        self.member.pipeline.stop()
        self.thread.join(timeout=60)
        self.member.close()
        self.producer.close(timeout=5)
        self.dlq.close()
        return self.status[0] if self.status else None


@pytest.fixture(scope="module")
def fuzz_member(broker, redis_server, tiny_checkpoint) -> Iterator[FuzzMember]:
    member = FuzzMember(broker, redis_server.url, tiny_checkpoint)
    try:
        yield member
    finally:
        assert member.close() == 0, "the fuzzed member must stop cleanly"


# A post that may reach the model: image URLs only on refused (loopback) addresses, so nothing waits on DNS.
hostile_value = st.one_of(
    st.none(),  # tombstone
    st.binary(max_size=200),
    json_values.map(dumps_hostile),
    post_like.map(lambda d: {**d, "image_url": "http://127.0.0.1:9/x.png"} if "image_url" in d else d).map(dumps_hostile),
)
hostile_key = st.one_of(st.none(), st.binary(max_size=40))
rounds = st.lists(st.tuples(st.booleans(), hostile_key, hostile_value), min_size=1, max_size=12)


@settings(max_examples=MEMBER_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rounds)
@example([(True, b"k", dumps_hostile({"id": "sur\ud800", "text": "findings 1", "topics": ["a\udfff"]}))])
@example([(True, None, dumps_hostile({"id": "big", "text": "finding 2", "n": Digits(5000)})),
          (False, None, b"[" * 50_000)])
def test_fuzzed_records_are_counted_once_or_dead_lettered_once(fuzz_member, round_):
    member = fuzz_member
    tag = uuid.uuid4().hex[:10]
    good_topic = f"good-{tag}"
    records, good_ids = [], []
    for i, (good_first, key, value) in enumerate(round_):
        if good_first:  # good records in front of and behind the hostile ones
            post_id = f"{tag}-{i}"
            good_ids.append(post_id)
            records.append((post_id.encode(), json.dumps({"id": post_id, "text": f"good {i}",
                                                          "topics": [good_topic]}).encode()))
        records.append((key if key is not None or value is not None else b"k", value))  # a tombstone has a key
    records.append((f"{tag}-last".encode(), json.dumps({"id": f"{tag}-last", "text": "last one",
                                                         "topics": [good_topic]}).encode()))
    good_ids.append(f"{tag}-last")
    positions = member.send(records)

    fates: dict[tuple[int, int], str | None] = {}  # expected post id, or None = dead letter
    for (_, value), position in zip(records, positions, strict=True):
        try:
            fates[position] = parse_post(value).id
        except InvalidPost:
            fates[position] = None

    def accounted() -> bool:
        member.read_dead_letters()
        stored = stored_ids(member.store)
        return all((position in member.dead) if post_id is None else (post_id in stored)
                   for position, post_id in fates.items())

    wait_until(lambda: accounted() or not member.alive(), 60, "every record to be counted or dead-lettered")
    assert member.alive(), "the member must survive every record"
    time.sleep(0.3)  # a duplicate dead letter or count would show up now
    member.read_dead_letters()
    for position, post_id in fates.items():
        letters = member.dead.get(position, [])
        if post_id is None:
            assert len(letters) == 1, (position, letters)  # dead-lettered once
        else:
            assert not letters, (position, post_id, letters)  # a counted post is not also dead
    assert counted_total(member.store, good_topic) == len(good_ids)  # each good post counted once
