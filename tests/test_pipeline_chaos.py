"""Chaos: a broker that loses its topics, a Redis that hangs, partitions lost with work uncommitted.

* The broker restarts empty and the topics are recreated: the member's fetch
  positions lie beyond the new partitions' ends; they are reset by the
  offset-reset policy (logged, counted in ``clmlf_offset_resets_total``) and every
  new post is counted (before: 296 of 300 skipped, silently).
* Redis hangs (SIGSTOP: connections open, no answers): ``/readyz`` fails within
  its 3 s probe timeout, and a SIGTERM stop keeps to ``--shutdown-grace``.
* The group loses a member's partitions after it finished posts it could not
  commit: once the partitions come back, that work is committed, and the stop
  message never claims a commit that did not happen.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import urllib.error
import urllib.request

import pytest
from pipeline_testlib import (
    InProcessMember,
    SlowPredictor,
    committed_offsets,
    counted_total,
    create_topic,
    make_posts,
    produce,
    store_for,
    stored_ids,
    tiny_predictor,
    wait_until,
)
from tcp_proxy import TcpProxy

from consumers.local_infra import LocalBroker, free_port

pytestmark = pytest.mark.integration


def _get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.timeout(600)
def test_recreated_topic_is_read_from_its_start_loudly(redis_server, tiny_checkpoint, unique_name, caplog):
    """Finding 6: after the broker lost its topics and they were recreated, the member kept its old
    fetch positions and skipped the new records below them (296 of 300), silently.

    The member reaches the broker through a proxy, cut while the broker is replaced, so the new
    broker's topic is recreated (2 partitions) before the member can see it (or auto-create it)."""
    topic = "posts"
    proxy = TcpProxy()
    broker = LocalBroker(advertised_port=proxy.port).start()
    proxy.upstream_port = broker.port
    member = None
    caplog.set_level(logging.WARNING, logger="consumers.pipeline")
    try:
        create_topic(broker, topic, 2)
        produce(broker.bootstrap, topic, make_posts(100, prefix="old"))
        member = InProcessMember(tiny_checkpoint, bootstrap=f"127.0.0.1:{proxy.port}", topic=topic,
                                 redis_url=redis_server.url, redis_prefix=unique_name)
        store = store_for(redis_server.url, unique_name)
        wait_until(lambda: counted_total(store, "brand") == 100, 120, "the first 100 posts to be counted")
        wait_until(lambda: sum(o or 0 for o in committed_offsets(broker.bootstrap, "g", topic).values()) == 100,
                   30, "their offsets to be committed")
        proxy.cut()
        broker.stop()  # memory storage: topics, records and group offsets are gone
        broker = LocalBroker(advertised_port=proxy.port).start()
        proxy.upstream_port = broker.port
        proxy.restore()
        create_topic(broker, topic, 2)
        wait_until(lambda: member.metric("clmlf_offset_resets_total") >= 2, 120,
                   "the member to notice both stale positions")
        assert member.thread.is_alive()
        warnings = [r.getMessage() for r in caplog.records if "beyond the end of the partition" in r.getMessage()]
        assert {w.split(":", 1)[0] for w in warnings} == {"posts[0]", "posts[1]"}
        assert all("resetting to the earliest offset" in w for w in warnings)
        posts = make_posts(300, prefix="new")
        produce(broker.bootstrap, topic, posts)
        try:
            wait_until(lambda: counted_total(store, "brand") == 400, 120, "every new post to be counted")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: counted {counted_total(store, 'brand')}, committed "
                                 f"{committed_offsets(broker.bootstrap, 'g', topic)}, "
                                 f"log {[r.getMessage() for r in caplog.records][-10:]}") from None
        assert {p["id"] for p in posts} <= stored_ids(store)
    finally:
        if member is not None:
            member.stop()
        broker.stop()
        proxy.close()


def test_hung_redis_fails_readyz_in_time_and_the_stop_keeps_the_grace(broker, private_redis, tiny_checkpoint,
                                                                      unique_name):
    """Finding 7: /readyz took 5 s while Redis hung (probe timeout 3 s); the SIGTERM drain overran its
    grace by 7.6 s.  (SIGTERM only sets the stop flag that ``pipeline.stop()`` sets here.)"""
    topic, metrics_port, grace = unique_name, free_port(), 2.0
    create_topic(broker, topic, 2)
    member = InProcessMember(tiny_checkpoint, serve_http=True, bootstrap=broker.bootstrap, topic=topic,
                             redis_url=private_redis.url, redis_prefix="t", metrics_port=metrics_port,
                             shutdown_grace=grace, alert_interval=1.0)
    store = store_for(private_redis.url, "t")
    hung, stopped = False, False
    try:
        produce(broker.bootstrap, topic, make_posts(40, prefix="a"))
        wait_until(lambda: counted_total(store, "brand") == 40, 120, "the first posts to be counted")
        assert _get(f"http://127.0.0.1:{metrics_port}/readyz")[0] == 200
        os.kill(private_redis.pid, signal.SIGSTOP)
        hung = True
        produce(broker.bootstrap, topic, make_posts(40, prefix="b"))  # held in flight: Redis answers nothing
        wait_until(lambda: member.pipeline.tracker.pending() > 0, 30, "posts to be held in flight")
        time.sleep(1.0)
        started = time.monotonic()
        status, _ = _get(f"http://127.0.0.1:{metrics_port}/readyz")
        took = time.monotonic() - started
        assert status == 503 and took < 3.0, (status, took)
        started = time.monotonic()
        member.pipeline.stop()
        member.thread.join(timeout=60)
        member.member.close()
        stopped = True
        overran = time.monotonic() - started - grace
        assert overran < 2.0, f"the stop overran its {grace:g}s grace by {overran:.1f}s"
        assert member.status == [0]
        assert not member.pipeline.drained  # it gave up on the posts Redis never took: redelivered, not lost
    finally:
        if hung:
            os.kill(private_redis.pid, signal.SIGCONT)
        if not stopped:
            member.stop()


def test_work_finished_before_lost_partitions_is_committed_and_the_stop_says_the_truth(
        redis_server, tiny_checkpoint, unique_name, caplog):
    """Finding 7: after lost partitions, --exit-when-idle logged "offsets committed" though the
    finished work had never been committed."""
    topic, n = "posts", 8
    proxy = TcpProxy()
    with LocalBroker(advertised_port=proxy.port) as broker:
        proxy.upstream_port = broker.port
        member = None
        try:
            create_topic(broker, topic, 1)
            produce(broker.bootstrap, topic, make_posts(n))
            caplog.set_level(logging.INFO, logger="consumers.pipeline")
            # The tiny predictor, 1.5 s per batch: posts are surely in flight when the network is cut.
            member = InProcessMember(tiny_checkpoint, predictor=SlowPredictor(tiny_predictor(tiny_checkpoint), 1.5),
                                     bootstrap=f"127.0.0.1:{proxy.port}", topic=topic, redis_url=redis_server.url,
                                     redis_prefix=unique_name, max_batch=n, max_wait_ms=5, exit_when_idle=8.0)
            wait_until(lambda: member.pipeline.tracker.pending() == n, 60, "all posts to be in flight")
            proxy.cut()  # the batch finishes and is stored, but its commit cannot reach the broker
            store = store_for(redis_server.url, unique_name)
            wait_until(lambda: counted_total(store, "brand") == n, 30, "the batch to be stored")
            time.sleep(4.5)  # past the 3 s session timeout: the group drops the member, its partition is lost
            proxy.restore()
            member.thread.join(timeout=120)
            assert member.status == [0]
            committed = committed_offsets(broker.bootstrap, "g", topic)
            stop_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stopped")]
            assert stop_lines, "no stop message"
            if committed == {0: n}:
                assert stop_lines[-1] == "stopped cleanly; offsets committed"
            else:  # a stop that could not commit must not claim it did
                assert "committed" not in stop_lines[-1] or "failed" in stop_lines[-1] or "lost" in stop_lines[-1]
            assert committed == {0: n}, (committed, stop_lines)  # the work redone by nobody is committed
        finally:
            if member is not None:
                member.stop()
            proxy.close()
