"""Memory bounded in bytes, end to end through the real broker and Redis (issue 11, findings 3, 4).

* Decompression bombs under the per-image cap (6300 x 6300 RGBA PNG, 39.7 M pixels, ~230 KB of
  base64), sent as several posts to a member with 4 image workers: the pixels being decoded at
  once, read from the decode budget's own peak (not from RSS or timings), never exceed the budget,
  so never two such images together; every post is labelled and stored.
* Big posts during a Redis outage: once the in-flight posts hold ``--max-in-flight-bytes`` the
  member stops polling (the rest waits in Kafka, nothing is dropped); when Redis returns every
  post is stored, once.
"""

from __future__ import annotations

import base64
import io
import math
import os
import threading
import time

import pytest
from PIL import Image
from pipeline_testlib import (
    counted_total,
    create_topic,
    make_posts,
    produce,
    store_for,
    stored_ids,
    tiny_predictor,
    wait_until,
)

from consumers.assembly import assemble, fetch_bytes_for
from consumers.config import RunConfig

pytestmark = pytest.mark.integration

BOMB_SIDE = 6300


def bomb_b64() -> str:
    buf = io.BytesIO()
    Image.new("RGBA", (BOMB_SIDE, BOMB_SIDE), (20, 200, 40, 128)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_bombs_under_the_cap_are_decoded_one_budget_at_a_time(broker, redis_server, tiny_checkpoint,
                                                              unique_name):
    topic, n = unique_name, 3
    create_topic(broker, topic, 1)
    image = bomb_b64()
    assert len(image) < 300_000  # small on the wire ...
    bombs = [{"id": f"bomb{i}", "text": "look at this", "image_b64": image, "topics": ["brand"]} for i in range(n)]
    produce(broker.bootstrap, topic, [*bombs, *make_posts(3, prefix="plain")])
    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=redis_server.url,
                       redis_prefix=unique_name, image_workers=4, max_batch=4, max_wait_ms=5,
                       exit_when_idle=2.0, metrics_port=0, alert_interval=0, session_timeout_ms=6000)
    assert config.max_image_pixels >= BOMB_SIDE**2 and config.max_decode_pixels < 2 * BOMB_SIDE**2
    assembled = assemble(config, predictor=tiny_predictor(tiny_checkpoint), serve_http=False)
    try:
        assert assembled.pipeline.run() == 0
    finally:
        assembled.close()
    budget = assembled.pipeline.images.budget
    # ... 39.7 M pixels once decoded: each was decoded (reserved in full), never two at once.
    assert BOMB_SIDE**2 <= budget.peak <= config.max_decode_pixels
    assert budget.in_use == 0
    assert assembled.metrics.registry.get_sample_value("clmlf_image_decode_pixels") == 0
    store = store_for(redis_server.url, unique_name)
    assert stored_ids(store) == {f"bomb{i}" for i in range(n)} | {f"plain{i}" for i in range(3)}
    assert all(store.get_result(f"bomb{i}")["image"] == "used" for i in range(n))
    assert counted_total(store, "brand") == n + 3


def test_big_posts_stop_being_polled_at_the_byte_budget_while_redis_is_down(broker, private_redis,
                                                                            tiny_checkpoint, unique_name):
    topic, n, raw_size = unique_name, 20, 150_000
    budget = 2 << 20
    create_topic(broker, topic, 2)
    payload = base64.b64encode(os.urandom(raw_size * 3 // 4)).decode()  # not an image: labelled text-only
    posts = [{"id": f"big{i}", "text": "heavy", "image_b64": payload, "topics": ["brand"]} for i in range(n)]
    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=private_redis.url,
                       redis_prefix="t", max_batch=4, max_wait_ms=5, max_in_flight=1000,
                       max_in_flight_bytes=budget, exit_when_idle=3.0, metrics_port=0, alert_interval=0,
                       session_timeout_ms=6000)
    assembled = assemble(config, predictor=tiny_predictor(tiny_checkpoint), serve_http=False)
    pipeline, tracker = assembled.pipeline, assembled.pipeline.tracker
    per_post = 2 * raw_size + 3 * 224 * 224 * 4  # raw value + base64 string + image tensor, at most
    # A poll adds at most one fetch beyond the budget (the consumer's fetch_max_bytes), plus one record.
    overshoot = (math.ceil(fetch_bytes_for(budget) / raw_size) + 1) * per_post
    held: list[tuple[int, int]] = []
    status: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            held.append((tracker.held_bytes(), tracker.pending()))
            time.sleep(0.005)

    private_redis.kill()
    runner = threading.Thread(target=lambda: status.append(pipeline.run()))
    sampler = threading.Thread(target=sample, daemon=True)
    try:
        runner.start()
        sampler.start()
        produce(broker.bootstrap, topic, posts)
        wait_until(lambda: tracker.held_bytes() >= budget, 90, "the byte budget to be reached")
        wait_until(lambda: pipeline.backpressure.paused, 30, "the partitions to be paused")
        time.sleep(3)  # Redis stays down: nothing finishes, nothing more may be polled
        during_outage = list(held)
        assert max(b for b, _ in during_outage) <= budget + overshoot
        assert max(p for _, p in during_outage) < n  # the rest waits in Kafka ...
        private_redis.start()
        runner.join(180)
        assert status == [0]
    finally:
        done.set()
        pipeline.stop()
        runner.join(30)
        sampler.join(5)
        assembled.close()
    store = store_for(private_redis.url, "t")
    assert len(stored_ids(store)) == n and counted_total(store, "brand") == n  # ... and none is lost
    assert max(b for b, _ in held) <= budget + overshoot
