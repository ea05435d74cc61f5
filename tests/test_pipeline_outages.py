"""Outages: Redis killed for a while, the consumer cut off from the broker for a while.

Both times the member keeps running, retries, keeps offsets uncommitted, recovers
without a restart, and the final count is exactly N (none lost, none twice).
"""

from __future__ import annotations

import time

import pytest
from pipeline_testlib import (
    Member,
    committed_offsets,
    counted_total,
    create_topic,
    make_posts,
    produce,
    store_for,
    stored_ids,
    wait_until,
)
from tcp_proxy import TcpProxy

from consumers.local_infra import LocalBroker

pytestmark = pytest.mark.integration


def test_redis_outage_is_retried_and_counts_exactly_n(tmp_path, broker, private_redis, tiny_checkpoint,
                                                      unique_name):
    topic, n = unique_name, 300
    create_topic(broker, topic, 2)
    running = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=topic, group="g",
                     redis_url=private_redis.url, prefix="t", checkpoint=tiny_checkpoint,
                     extra=["--exit-when-idle", "2s", "--max-batch", "8"])
    store = store_for(private_redis.url, "t")
    posts = make_posts(n)
    produce(broker.bootstrap, topic, posts[: n // 2])
    wait_until(lambda: counted_total(store, "brand") == n // 2, 60, "the first half to be counted")
    private_redis.kill()
    produce(broker.bootstrap, topic, posts[n // 2 :])  # arrives while Redis is down
    time.sleep(3)
    assert running.proc.poll() is None, "the member must survive a Redis outage"
    # Nothing of the second half is stored, so none of it may be committed (it would be lost).
    assert sum(o or 0 for o in committed_offsets(broker.bootstrap, "g", topic).values()) <= n // 2
    private_redis.start()
    assert running.wait() == 0, running.log()[-3000:]
    assert "redis write failed, retrying" in running.log()
    assert counted_total(store, "brand") == n
    assert len(stored_ids(store)) == n


def test_broker_partition_is_survived_and_counts_exactly_n(tmp_path, redis_server, tiny_checkpoint, unique_name):
    topic, n = "posts", 300
    proxy = TcpProxy()
    with LocalBroker(advertised_port=proxy.port) as broker:
        proxy.upstream_port = broker.port
        try:
            create_topic(broker, topic, 2)
            posts = make_posts(n)
            produce(broker.bootstrap, topic, posts[: n // 2])
            running = Member(tmp_path, "m", bootstrap=f"127.0.0.1:{proxy.port}", topic=topic, group="g",
                             redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                             extra=["--exit-when-idle", "6s", "--max-batch", "8",
                                    "--session-timeout-ms", "3000"])
            store = store_for(redis_server.url, unique_name)
            wait_until(lambda: counted_total(store, "brand") == n // 2, 60, "the first half to be counted")
            proxy.cut()
            time.sleep(4.5)  # longer than the 3 s session timeout (the group forgets the member),
            # shorter than --exit-when-idle (an idle member would leave)
            assert running.proc.poll() is None, "the member must survive losing the broker"
            proxy.restore()
            produce(broker.bootstrap, topic, posts[n // 2 :])  # only reachable through the restored proxy
            assert running.wait(timeout=120) == 0, running.log()[-3000:]
            assert proxy.dropped > 0
            assert counted_total(store, "brand") == n
            assert len(stored_ids(store)) == n
        finally:
            proxy.close()
