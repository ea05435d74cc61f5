"""Two members of one consumer group split the partitions; when one leaves, the other takes over."""

from __future__ import annotations

import signal
import urllib.request

import pytest
from pipeline_testlib import (
    InProcessMember,
    Member,
    SlowPredictor,
    committed_offsets,
    counted_total,
    create_topic,
    make_posts,
    metric_sum,
    produce,
    store_for,
    stored_ids,
    tiny_predictor,
    wait_until,
)

from consumers.local_infra import free_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_two_members_split_partitions_and_one_takes_over(tmp_path, broker, redis_server, tiny_checkpoint,
                                                         unique_name):
    topic, n = unique_name, 200
    create_topic(broker, topic, 4)
    posts = make_posts(n)
    store = store_for(redis_server.url, unique_name)
    ports = [free_port(), free_port()]
    members = [Member(tmp_path, f"m{i}", bootstrap=broker.bootstrap, topic=topic, group="g",
                      redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                      extra=["--metrics-port", str(port)]) for i, port in enumerate(ports)]
    try:
        def both_assigned() -> bool:
            return all(metric_sum(scrape(p), "clmlf_assigned_partitions") == 2 for p in ports)
        wait_until(both_assigned, 90, "both members to own two partitions each")

        produce(broker.bootstrap, topic, posts[: n // 2])
        wait_until(lambda: counted_total(store, "brand") == n // 2, 60, "the first half to be counted")
        per_member = [metric_sum(scrape(p), "clmlf_posts_processed_total") for p in ports]
        assert all(count > 0 for count in per_member), per_member  # both did part of the work
        assert sum(per_member) == n // 2  # and together exactly all of it

        members[0].signal(signal.SIGTERM)
        assert members[0].wait() == 0, members[0].log()[-3000:]
        wait_until(lambda: metric_sum(scrape(ports[1]), "clmlf_assigned_partitions") == 4, 60,
                   "the survivor to take over all partitions")
        produce(broker.bootstrap, topic, posts[n // 2:])
        wait_until(lambda: counted_total(store, "brand") == n, 60, "the second half to be counted")
        assert stored_ids(store) == {p["id"] for p in posts}
        wait_until(lambda: sum(o or 0 for o in committed_offsets(broker.bootstrap, "g", topic).values()) == n,
                   30, "all offsets to be committed")
        readyz = urllib.request.urlopen(f"http://127.0.0.1:{ports[1]}/readyz", timeout=5)
        assert readyz.status == 200
    finally:
        for member in members:
            member.stop()


def test_a_member_joining_mid_stream_takes_partitions_and_nothing_counts_twice(broker, redis_server,
                                                                              tiny_checkpoint, unique_name):
    topic, n = unique_name, 400
    create_topic(broker, topic, 4)
    posts = make_posts(n)
    produce(broker.bootstrap, topic, posts)
    store = store_for(redis_server.url, unique_name)
    # 40 ms slower per batch, so work is still in flight when the rebalance comes.
    predictor = SlowPredictor(tiny_predictor(tiny_checkpoint), 0.04)
    # A group of its own: Tansu can leave a group stuck after a rebalance cut short, and the
    # session broker is shared with the other tests.
    settings = dict(bootstrap=broker.bootstrap, topic=topic, group=unique_name, redis_url=redis_server.url,
                    redis_prefix=unique_name, max_batch=4, max_wait_ms=5, max_in_flight=16,
                    metrics_port=0, session_timeout_ms=6000, alert_interval=0)
    members = [InProcessMember(tiny_checkpoint, predictor=predictor, **settings)]
    try:
        wait_until(lambda: counted_total(store, "brand") >= 40, 60, "the first member to count posts")
        # The newcomer makes the first member give up partitions with posts in flight (dropped there,
        # redone by the new owner).  Tansu's rebalances are slow and sometimes only complete once the
        # first member leaves, so the split itself is not asserted, only its outcome.
        assert counted_total(store, "brand") < n, "everything was done before the rebalance; raise n"
        members.append(InProcessMember(tiny_checkpoint, predictor=predictor, **settings))
        # Wait on the outcome, not on idleness: a rebalance on a loaded CI machine can outlast any
        # idle timeout and end both members early.
        wait_until(lambda: counted_total(store, "brand") >= n, 180, "every post to be counted")
        wait_until(lambda: sum(o or 0 for o in committed_offsets(broker.bootstrap, unique_name, topic).values()) == n,
                   60, "all offsets to be committed")
        for member in members:
            member.pipeline.stop()
        for member in members:
            member.thread.join(timeout=60)
        assert [member.status for member in members] == [[0], [0]]
    finally:
        for member in members:
            member.stop()
    processed = [member.metric("clmlf_posts_processed_total") for member in members]
    assert counted_total(store, "brand") == n, (processed, len(stored_ids(store)),
                                                {p["id"] for p in posts} - stored_ids(store))
    assert stored_ids(store) == {p["id"] for p in posts}
    assert processed[1] > 0  # the newcomer did part of the work
    assert sum(processed) >= n  # redelivered posts may be processed again, but are counted once
    assert sum(o or 0 for o in committed_offsets(broker.bootstrap, unique_name, topic).values()) == n
