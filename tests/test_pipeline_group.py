"""Two members of one consumer group split the partitions; when one leaves, the other takes over."""

from __future__ import annotations

import signal
import urllib.request

import pytest
from pipeline_testlib import (
    Member,
    committed_offsets,
    counted_total,
    create_topic,
    make_posts,
    metric_sum,
    produce,
    store_for,
    stored_ids,
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
