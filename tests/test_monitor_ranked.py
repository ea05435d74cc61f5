"""Top-N queries at 20,000 topics (issue 11, finding 5): the right rows, and Redis work that does
not grow with the number of topics (Redis commands counted with INFO commandstats on a private
server, never timed).  Plus the API's request timeout."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter

import pytest
import redis
from fastapi.testclient import TestClient
from monitor_testlib import result
from redis.backoff import NoBackoff
from redis.retry import Retry
from test_monitor_cli import run_cli

from consumers.local_infra import LocalRedis
from monitor.api import create_app
from monitor.query import ranked_topics
from monitor.store import SentimentStore

HOT = 10  # hot{i}: 100 - 5 i posts, all positive
SOUR = 5  # sour{j}: 20 posts, 20 - j of them negative
MINUTES = 10  # every topic's posts are spread over the last 10 minute buckets


@pytest.fixture(scope="module")
def server():
    with LocalRedis() as running:
        yield running


def seed(client: redis.Redis, prefix: str, quiet_topics: int, now: float) -> SentimentStore:
    """``quiet_topics`` topics with one positive post each (32 topics per post, the schema's
    maximum), plus the hot and sour topics, written through the real store path."""
    store = SentimentStore(client, prefix=prefix)
    batch = []
    names = [f"q{i:05d}" for i in range(quiet_topics)]
    for n, i in enumerate(range(0, quiet_topics, 32)):
        batch.append((result(f"quiet{n}", "positive", tuple(names[i : i + 32])), now - 30 - 60 * (n % MINUTES)))
    for h in range(HOT):
        for k in range(100 - 5 * h):
            batch.append((result(f"hot{h}-{k}", "positive", (f"hot{h}",)), now - 30 - 60 * (k % MINUTES)))
    for s in range(SOUR):
        for k in range(20):
            label = "negative" if k < 20 - s else "neutral"
            batch.append((result(f"sour{s}-{k}", label, (f"sour{s}",)), now - 30 - 60 * (k % MINUTES)))
    for i in range(0, len(batch), 2000):
        assert all(store.record(batch[i : i + 2000], now=now).counted)
    return store


def commands_of(client: redis.Redis, action) -> Counter[str]:
    """Redis commands executed while ``action()`` runs (including those inside Lua scripts)."""
    client.config_resetstat()
    action()
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
                    if name not in ("cmdstat_info", "cmdstat_config")})


@pytest.fixture(scope="module")
def stores(server):
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    now = time.time()
    small = seed(client, "small", 2_000, now)
    large = seed(client, "large", 20_000, now)
    assert len(large.topics()) == 20_000 + HOT + SOUR
    yield client, small, large, now
    client.close()


def test_top_n_by_volume_at_20000_topics_is_right_and_exact(stores):
    _client, _small, large, now = stores
    rows = ranked_topics(large, 900, "volume", 5, now=now)
    assert [(r.topic, r.total) for r in rows] == [(f"hot{h}", 100 - 5 * h) for h in range(5)]
    assert rows.exact
    assert rows[0].counts == {"positive": 100, "neutral": 0, "negative": 0}
    # the ranked index holds exactly what the hashes hold (one atomic script writes both)
    names = [r.topic for r in rows] + ["sour0", "q00000", "q19999", "nobody"]
    assert large.ranked_counts(names, 900, now) == large.window_counts_many(names, 900, now)


def test_top_n_by_negative_share_at_20000_topics(stores):
    _client, _small, large, now = stores
    rows = ranked_topics(large, 900, "negative", 3, now=now)
    assert [(r.topic, r.counts["negative"], r.total) for r in rows] == [
        ("sour0", 20, 20), ("sour1", 19, 20), ("sour2", 18, 20)]
    assert rows.exact


def test_redis_work_does_not_grow_with_topics(stores):
    client, small, large, now = stores
    for rank in ("volume", "negative"):
        ranked_topics(small, 900, rank, 5, now=now)  # scripts loaded: both runs below are EVALSHA only
        at_2k = commands_of(client, lambda: ranked_topics(small, 900, rank, 5, now=now))  # noqa: B023
        at_20k = commands_of(client, lambda: ranked_topics(large, 900, rank, 5, now=now))  # noqa: B023
        assert at_2k == at_20k, rank
        # 15 minute buckets: one ZREVRANGE each (<= 100 members), then per label and total one ZMSCORE
        # of the <= 10 candidates each (twice for negative: it may fill up with the busiest topics).
        assert at_20k["zrevrange"] <= 2 * 15 and at_20k["zmscore"] <= 4 * 15 and "hgetall" not in at_20k
        assert sum(at_20k.values()) < 150


def test_long_window_work_is_bounded_by_buckets_and_limit(stores):
    client, small, large, now = stores
    ranked_topics(large, 35 * 86400, "volume", 50, now=now)
    small_35d = commands_of(client, lambda: ranked_topics(small, 35 * 86400, "volume", 50, now=now))
    large_35d = commands_of(client, lambda: ranked_topics(large, 35 * 86400, "volume", 50, now=now))
    assert small_35d == large_35d
    keys = large_35d["zrevrange"]  # one per bucket key of the window: hours plus minute edges
    assert keys <= 35 * 24 + 2 * 59 and large_35d["zmscore"] == 4 * keys


def test_api_and_cli_answer_top_n_at_20000_topics(stores, server):
    _client, _small, large, _now = stores
    api = TestClient(create_app(large))
    body = api.get("/v1/topics", params={"window": "15m", "limit": 3}).json()
    assert body["exact"] is True and body["rank"] == "volume"
    assert [t["topic"] for t in body["topics"]] == ["hot0", "hot1", "hot2"]
    done = run_cli("query", "--redis", server.url, "--redis-prefix", "large", "--all", "--window", "15m",
                   "--rank", "negative", "--limit", "2", "--json")
    assert done.returncode == 0, done.stderr
    assert [t["topic"] for t in json.loads(done.stdout)["topics"]] == ["sour0", "sour1"]


def test_ranked_index_expires_with_its_bucket(stores):
    client, _small, large, now = stores
    minute = int(now - 30) // 60 * 60
    hour = int(now - 30) // 3600 * 3600
    minute_key, hour_key = large.keys.rank("m", minute, "_total"), large.keys.rank("h", hour, "_total")
    assert client.expiretime(minute_key) == minute + 60 + large.bucket_ttl
    assert client.expiretime(hour_key) == hour + 3600 + large.hourly_ttl
    assert client.zscore(minute_key, "hot0") == 10


def test_a_slow_request_is_answered_504_within_the_timeout():
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections (backlog) and never answers
    try:
        port = silent.getsockname()[1]
        hung = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=3,
                           retry=Retry(NoBackoff(), 0))
        api = TestClient(create_app(SentimentStore(hung, prefix="x"), request_timeout=0.3))
        response = api.get("/v1/topics/acme/sentiment")
        assert response.status_code == 504
        assert response.json() == {"error": "request took longer than 0.3s", "status": 504}
        assert api.get("/healthz").status_code == 200  # fast routes are unaffected
    finally:
        silent.close()


def test_a_ranking_the_index_cannot_prove_says_so(server):
    """A topic steady across the window (2 posts in each of 12 minutes) is never among any minute's
    100 busiest (100 other topics burst with 3 posts in each minute): the answer is flagged inexact."""
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=60)
    now = time.time()
    store = SentimentStore(client, prefix="spiky")
    batch = []
    for m in range(12):
        ts = now - 30 - 60 * m
        batch += [(result(f"s{m}-{t}-{k}", "positive", (f"spike{m}-{t}",)), ts) for t in range(100) for k in range(3)]
        batch += [(result(f"steady{m}-{k}", "positive", ("steady",)), ts) for k in range(2)]
    assert all(store.record(batch, now=now).counted)
    rows = ranked_topics(store, 900, "volume", 1, now=now)
    assert rows[0].total == 3 and not rows.exact  # the steady topic (24 posts) was not a candidate
    assert TestClient(create_app(store)).get("/v1/topics", params={"limit": 1}).json()["exact"] is False
    client.close()
