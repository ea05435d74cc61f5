"""Event time through the real broker and Redis: which minute bucket a post lands in.

``created_at`` (ISO-8601 or epoch seconds) wins; without it the Kafka record
timestamp is the event time.  Late and out-of-order posts land in the bucket of
their event time; posts from the future or older than the minute retention are
stored but counted apart (Redis ``oow`` hash and
``clmlf_out_of_window_events_total{kind}``), never silently dropped.
"""

from __future__ import annotations

import json
import time

import pytest
from kafka import KafkaProducer
from pipeline_testlib import create_topic, store_for

from consumers.assembly import assemble
from consumers.config import RunConfig
from contract.posts import iso_utc

pytestmark = pytest.mark.integration

DAY = 86400


def test_posts_land_in_the_bucket_of_their_event_time(broker, redis_server, tiny_checkpoint, unique_name):
    import torch

    from clmlf.serving.inference import Predictor

    torch.set_num_threads(1)
    topic = unique_name
    create_topic(broker, topic, 1)
    now = time.time()
    # Each post counts toward its own watch topic, so each bucket can be checked alone.
    event_times = {
        "newest": now - 30,  # produced first, so every later one arrives out of order
        "iso": now - 1800,
        "epoch": now - 2 * 3600 - 17,  # another hour: minute bucket and hourly roll-up
        "record-ts": now - 600,  # no created_at: the Kafka record timestamp is the event time
        "future": now + DAY,
        "expired": now - 3 * DAY,  # older than the default 2-day minute retention
    }
    created_at = {"newest": now - 30, "iso": iso_utc(event_times["iso"]), "epoch": event_times["epoch"],
                  "future": event_times["future"], "expired": event_times["expired"]}
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        for post_id, event_time in event_times.items():
            post = {"id": post_id, "text": f"post {post_id}", "topics": [post_id]}
            if post_id in created_at:
                post["created_at"] = created_at[post_id]
            stamp = int(event_time * 1000) if post_id == "record-ts" else int(now * 1000)
            producer.send(topic, key=post_id.encode(), value=json.dumps(post).encode(),
                          timestamp_ms=stamp).get(timeout=30)
    finally:
        producer.close(timeout=10)

    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=redis_server.url,
                       redis_prefix=unique_name, max_batch=4, max_wait_ms=5, exit_when_idle=1.5,
                       metrics_port=0, session_timeout_ms=6000, alert_interval=0)
    assembled = assemble(config, predictor=Predictor.from_checkpoint(tiny_checkpoint, "cpu"), serve_http=False)
    try:
        assert assembled.run() == 0
    finally:
        assembled.close()

    store = store_for(redis_server.url, unique_name)
    for post_id, event_time in event_times.items():
        result = store.get_result(post_id)
        assert result is not None, f"{post_id} was not stored"
        assert result["created_at"] == iso_utc(event_time), post_id
    for post_id in ("newest", "iso", "epoch", "record-ts"):
        bucket = int(event_times[post_id] // 60 * 60)
        assert store.range_counts(post_id, bucket, bucket + 60).total == 1, post_id
        assert store.range_counts(post_id, bucket - 60, bucket).total == 0, post_id
        assert store.range_counts(post_id, bucket + 60, bucket + 120).total == 0, post_id
        assert store.window_counts(post_id, 3 * 3600).total == 1, post_id
    assert store.window_counts("iso", 15 * 60).total == 0  # 30 minutes old: outside a 15-minute window
    assert store.window_counts("iso", 45 * 60).total == 1
    for post_id in ("future", "expired"):
        assert store.window_counts(post_id, 30 * DAY).total == 0, post_id
        assert store.recent(post_id)[0]["id"] == post_id  # stored and listed, not counted
    assert store.out_of_window_counts() == {"future": 1, "expired": 1}

    registry = assembled.metrics.registry
    for kind in ("future", "expired"):
        assert registry.get_sample_value("clmlf_out_of_window_events_total", {"kind": kind}) == 1.0
    processed = sum(registry.get_sample_value("clmlf_posts_processed_total", {"label": label, "topic": post_id})
                    or 0.0 for label in ("positive", "neutral", "negative") for post_id in event_times)
    assert processed == len(event_times)
