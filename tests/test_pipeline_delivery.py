"""End to end through the real broker and Redis: counting, redelivery, crash, SIGTERM, output topic."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
from pipeline_testlib import (
    CLI,
    Member,
    committed_offsets,
    counted_total,
    create_topic,
    make_posts,
    produce,
    read_topic,
    store_for,
    stored_ids,
    wait_until,
)

pytestmark = pytest.mark.integration


def member(tmp_path, name, broker, redis_url, topic, group, prefix, ckpt, *extra):
    return Member(tmp_path, name, bootstrap=broker.bootstrap, topic=topic, group=group, redis_url=redis_url,
                  prefix=prefix, checkpoint=ckpt, extra=extra)


def test_n_posts_counted_once_even_when_produced_twice(tmp_path, broker, redis_server, tiny_checkpoint,
                                                       unique_name):
    topic, n = unique_name, 60
    create_topic(broker, topic, 3)
    create_topic(broker, f"{topic}.out", 1)
    posts = make_posts(n, topics=("brand", "launch"))
    jsonl = tmp_path / "posts.jsonl"
    jsonl.write_text("".join(json.dumps(p) + "\n" for p in posts))
    sent = subprocess.run([*CLI, "produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--input", str(jsonl)],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0 and f"sent {n} records" in sent.stderr, sent.stderr
    assert sorted(r.key.decode() for r in read_topic(broker.bootstrap, topic, n)) == sorted(p["id"] for p in posts)
    store = store_for(redis_server.url, unique_name)

    first = member(tmp_path, "first", broker, redis_server.url, topic, "g1", unique_name, tiny_checkpoint,
                   "--exit-when-idle", "2s", "--output-topic", f"{topic}.out")
    assert first.wait() == 0, first.log()[-3000:]

    for watch_topic in ("brand", "launch"):
        counts = store.window_counts(watch_topic, 3600)
        assert counts.total == n
        assert sum(counts.counts.values()) == n
    results = [store.get_result(p["id"]) for p in posts]
    assert all(r is not None for r in results)
    for result in results:
        assert result["label"] == max(result["scores"], key=result["scores"].get)
        assert result["image"] == "none" and result["topics"] == ["brand", "launch"]
    label_totals = {}
    for result in results:
        label_totals[result["label"]] = label_totals.get(result["label"], 0) + 1
    assert store.window_counts("brand", 3600).counts == {k: v for k, v in label_totals.items()} | {
        k: 0 for k in store.window_counts("brand", 3600).counts if k not in label_totals}
    assert sum(o or 0 for o in committed_offsets(broker.bootstrap, "g1", topic).values()) == n

    out = read_topic(broker.bootstrap, f"{topic}.out", n)
    assert sorted(r.key.decode() for r in out) == sorted(p["id"] for p in posts)
    assert {json.loads(r.value)["id"] for r in out} == {p["id"] for p in posts}

    # The same posts again (a producer retry storm), read by a fresh group: still N.
    produce(broker.bootstrap, topic, posts)
    second = member(tmp_path, "second", broker, redis_server.url, topic, "g2", unique_name, tiny_checkpoint,
                    "--exit-when-idle", "2s")
    assert second.wait() == 0, second.log()[-3000:]
    assert counted_total(store, "brand") == n
    assert stored_ids(store) == {p["id"] for p in posts}


def test_sigkill_mid_stream_then_restart_counts_exactly_n(tmp_path, broker, redis_server, tiny_checkpoint,
                                                          unique_name):
    topic, n = unique_name, 400
    create_topic(broker, topic, 2)
    posts = make_posts(n)
    store = store_for(redis_server.url, unique_name)
    victim = member(tmp_path, "victim", broker, redis_server.url, topic, "g", unique_name, tiny_checkpoint,
                    "--max-batch", "1", "--max-in-flight", "4", "--session-timeout-ms", "3000")
    produce(broker.bootstrap, topic, posts)
    wait_until(lambda: counted_total(store, "brand") >= 20, 60, "the first posts to be counted")
    victim.kill()
    assert counted_total(store, "brand") < n, "the victim finished before it was killed; raise n"

    survivor = member(tmp_path, "survivor", broker, redis_server.url, topic, "g", unique_name,
                      tiny_checkpoint, "--exit-when-idle", "2s")
    assert survivor.wait() == 0, survivor.log()[-3000:]
    assert counted_total(store, "brand") == n
    assert stored_ids(store) == {p["id"] for p in posts}


def test_sigterm_finishes_in_flight_commits_and_exits_0(tmp_path, broker, redis_server, tiny_checkpoint,
                                                        unique_name):
    topic, n = unique_name, 300
    create_topic(broker, topic, 2)
    store = store_for(redis_server.url, unique_name)
    running = member(tmp_path, "term", broker, redis_server.url, topic, "g", unique_name, tiny_checkpoint,
                     "--max-batch", "8")
    produce(broker.bootstrap, topic, make_posts(n))
    wait_until(lambda: counted_total(store, "brand") >= 10, 60, "the first posts to be counted")
    running.signal(signal.SIGTERM)
    assert running.wait() == 0, running.log()[-3000:]
    assert "stopped cleanly; offsets committed" in running.log()

    committed = sum(o or 0 for o in committed_offsets(broker.bootstrap, "g", topic).values())
    counted = counted_total(store, "brand")
    assert 10 <= committed <= counted  # everything committed is stored; in-flight work was finished
    assert committed == counted  # a clean stop leaves nothing stored-but-uncommitted
