"""Backpressure: with a slow model, posts held in memory never exceed --max-in-flight, and all are counted."""

from __future__ import annotations

import threading
import time

import pytest
from pipeline_testlib import (
    SlowPredictor,
    counted_total,
    create_topic,
    make_posts,
    produce,
    store_for,
    stored_ids,
    tiny_predictor,
)

from consumers.assembly import assemble
from consumers.config import RunConfig

pytestmark = pytest.mark.integration


def test_in_flight_posts_stay_bounded_while_the_model_lags(broker, redis_server, tiny_checkpoint, unique_name):
    topic, n, limit = unique_name, 150, 8
    create_topic(broker, topic, 2)
    produce(broker.bootstrap, topic, make_posts(n))
    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=redis_server.url,
                       redis_prefix=unique_name, max_batch=4, max_wait_ms=5, max_in_flight=limit,
                       exit_when_idle=2.0, metrics_port=0, session_timeout_ms=6000)
    # 30 ms slower per batch: a model that cannot keep up.
    assembled = assemble(config, predictor=SlowPredictor(tiny_predictor(tiny_checkpoint), 0.03), serve_http=False)
    registry = assembled.metrics.registry
    seen: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(registry.get_sample_value("clmlf_queue_depth", {"queue": "in_flight"}) or 0.0)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        assert assembled.pipeline.run() == 0
    finally:
        done.set()
        sampler.join()
        assembled.close()
    store = store_for(redis_server.url, unique_name)
    assert counted_total(store, "brand") == n and len(stored_ids(store)) == n
    assert max(seen) == limit  # the bound was reached (the model lagged) ...
    assert all(depth <= limit for depth in seen)  # ... and never exceeded
