"""SentimentStore against the real Redis: idempotent writes, window arithmetic, late events."""

from __future__ import annotations

import multiprocessing
import random
import threading
import time

import pytest
import redis
from monitor_testlib import REDIS_URL, redis_prefix, result

from monitor.store import SentimentStore
from monitor.windows import classify_event_time, plan_range

LABELS = ("positive", "neutral", "negative")


def hour_base(hours_ago: int = 3) -> int:
    """A whole hour a few hours back: real enough that EXPIREAT-based TTLs are in the future."""
    return int(time.time()) // 3600 * 3600 - hours_ago * 3600


@pytest.fixture
def store():
    with redis_prefix() as (client, prefix):
        yield SentimentStore(client, prefix=prefix)


def test_record_counts_once_per_post_id(store):
    now = hour_base() + 1800
    batch = [(result(f"p{i}", LABELS[i % 3]), now - i) for i in range(30)]
    assert store.record(batch, now=now).counted == [True] * 30
    assert store.record(batch, now=now).counted == [False] * 30
    counts = store.window_counts("brand", 900, now)
    assert counts.total == 30
    assert counts.counts == {"positive": 10, "neutral": 10, "negative": 10}


def test_duplicate_ids_inside_one_batch_count_once(store):
    now = hour_base() + 10
    report = store.record([(result("x", "negative"), now), (result("x", "positive"), now)], now=now)
    assert report.counted == [True, False]
    assert store.window_counts("brand", 60, now).counts["negative"] == 1
    assert store.get_result("x")["label"] == "negative"


def test_post_counts_toward_each_of_its_topics(store):
    now = hour_base() + 10
    store.record([(result("a", "positive", ("one", "two")), now)], now=now)
    many = store.window_counts_many(["one", "two", "three"], 60, now)
    assert [many[t].total for t in ("one", "two", "three")] == [1, 1, 0]
    assert {t for t, _ in store.topics()} == {"one", "two"}


def test_window_edges_are_whole_buckets(store):
    base = hour_base()
    store.record([(result("before", "negative"), base - 1), (result("at", "positive"), base)], now=base + 10)
    # [base, base+60): only the post at the first second of the bucket.
    one = store.window_counts("brand", 60, base + 59.9)
    assert (one.total, one.counts) == (1, {"positive": 1, "negative": 0})
    # 61 seconds need two buckets: the previous minute is included.
    two = store.window_counts("brand", 61, base + 59.9)
    assert two.total == 2
    # When the clock moves into the next bucket, the 60s window no longer holds either.
    assert store.window_counts("brand", 60, base + 60).total == 0


def test_long_windows_match_a_brute_force_count_across_hours(store):
    base = hour_base(5)
    rng = random.Random(7)
    events = [(result(f"e{i}", rng.choice(LABELS)), base + rng.uniform(0, 4 * 3600)) for i in range(400)]
    store.record(events, now=base + 4 * 3600)
    for now_offset, window in [(4 * 3600 - 1, 3 * 3600), (3 * 3600 + 1234, 2 * 3600 + 90), (7300, 90), (7300, 86400)]:
        now = base + now_offset
        start, end = store.window_bounds(window, now)
        expected = [r for r, ts in events if start <= ts < end]
        got = store.window_counts("brand", window, now)
        assert got.total == len(expected), (now_offset, window)
        for label in LABELS:
            assert got.counts[label] == sum(r.label == label for r in expected)


def test_plan_uses_hourly_rollups_inside_and_minutes_at_the_edges():
    base = 1_800_000_000 // 3600 * 3600
    plan = plan_range(base - 120, base + 2 * 3600 + 180, 60)
    kinds = [(p.kind, p.start - base) for p in plan]
    assert kinds == [("m", -120), ("m", -60), ("h", 0), ("h", 3600), ("m", 7200), ("m", 7260), ("m", 7320)]
    assert [p.kind for p in plan_range(base + 60, base + 600, 60)] == ["m"] * 9
    # Expired minute buckets at the start are replaced by their hour's roll-up.
    floored = plan_range(base + 120, base + 3 * 3600, 60, minute_floor=base + 3600)
    assert floored[0].kind == "h" and floored[0].start == base


def test_late_and_out_of_order_posts_land_in_their_event_time_bucket(store):
    base = hour_base()
    now = base + 3600
    store.record([(result("new", "positive"), now - 60)], now=now)
    store.record([(result("late", "negative"), now - 1800)], now=now)  # arrives after a newer one
    assert store.window_counts("brand", 900, now).counts["negative"] == 0
    assert store.window_counts("brand", 3600, now).counts["negative"] == 1
    assert store.topics()[0][1] == pytest.approx(now - 60)  # newest event time is kept


def test_future_and_expired_posts_are_stored_but_counted_apart(store):
    now = hour_base() + 100
    report = store.record(
        [
            (result("future", "negative"), now + 3600),
            (result("expired", "negative"), now - store.bucket_ttl - 10),
            (result("ok", "negative"), now - 5),
        ],
        now=now,
    )
    assert report.counted == [True, True, True]
    assert dict(report.out_of_window) == {"future": 1, "expired": 1}
    assert store.out_of_window_counts() == {"future": 1, "expired": 1}
    assert store.window_counts("brand", 86400, now + 3600).total == 1
    assert store.get_result("future")["id"] == "future"
    assert {row["id"] for row in store.recent("brand")} == {"future", "expired", "ok"}
    # Redelivery of an out-of-window post is not counted again either.
    assert store.record([(result("future", "negative"), now + 3600)], now=now).out_of_window == {}


def test_classify_event_time():
    assert classify_event_time(1000.0, 1000.0) == "ok"
    assert classify_event_time(1000.0 + 60, 1000.0) == "ok"
    assert classify_event_time(1000.0 + 600, 1000.0) == "future"
    assert classify_event_time(1000.0, 1000.0 + 86400 * 3) == "expired"
    assert classify_event_time(100.0, 200.0, retention=50) == "expired"


def test_two_class_labels_keep_their_own_names(store):
    now = hour_base() + 30
    store.record([(result("s1", "sarcastic"), now), (result("s2", "not_sarcastic"), now)], now=now)
    counts = store.window_counts("brand", 60, now)
    assert counts.counts == {"not_sarcastic": 1, "sarcastic": 1}
    assert counts.to_dict()["shares"] == {"not_sarcastic": 0.5, "sarcastic": 0.5}


def test_recent_list_is_capped_and_keys_expire(store):
    small = SentimentStore(store.redis_client, prefix=store.prefix, recent_per_topic=5)
    now = hour_base() + 30
    small.record([(result(f"r{i}", "neutral"), now) for i in range(12)], now=now)
    recent = small.recent("brand", limit=50)
    assert [r["id"] for r in recent] == [f"r{i}" for i in range(11, 6, -1)]
    minute_key = small.keys.minute("brand", now // 60 * 60)
    assert 0 < small.redis_client.ttl(minute_key) <= small.bucket_ttl + 60
    assert small.redis_client.ttl(small.keys.seen("r0")) >= small.hourly_ttl


def test_timeseries_steps_sum_to_the_window(store):
    base = hour_base()
    rng = random.Random(3)
    events = [(result(f"t{i}", rng.choice(LABELS)), base + rng.uniform(0, 6 * 3600 - 1)) for i in range(300)]
    store.record(events, now=base + 6 * 3600)
    now = base + 6 * 3600 - 1
    series = store.timeseries("brand", 6 * 3600, 300, now)
    assert len(series) == 72
    assert all(s.end - s.start == 300 for s in series)
    assert sum(s.total for s in series) == store.window_counts("brand", 6 * 3600, now).total == 300
    hourly = store.timeseries("brand", 6 * 3600, 3600, now)
    assert sum(s.total for s in hourly) == 300
    with pytest.raises(ValueError):
        store.timeseries("brand", 3600, 90, now)


@pytest.mark.parametrize(
    "kwargs",
    [{"bucket_seconds": 7}, {"bucket_seconds": 0}, {"bucket_ttl": 10}, {"hourly_ttl": 60}, {"prefix": ""},
     {"recent_per_topic": 0}],
)
def test_bad_store_settings_are_rejected(kwargs):
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with pytest.raises(ValueError):
        SentimentStore(client, **kwargs)


def _write_worker(prefix: str, ids: list[str], now: float) -> int:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    store = SentimentStore(client, prefix=prefix)
    new = 0
    for i in range(0, len(ids), 7):
        new += sum(store.record([(result(p, "negative" if int(p) % 2 else "positive"), now) for p in ids[i : i + 7]],
                                now=now).counted)
    return new


def test_concurrent_writers_with_overlapping_ids_count_exactly(store):
    now = hour_base() + 30
    all_ids = [str(i) for i in range(300)]
    rng = random.Random(11)
    slices = [rng.sample(all_ids, 200) for _ in range(6)]  # heavy overlap between writers
    new_counts: list[int] = []
    threads = [
        threading.Thread(target=lambda ids=ids: new_counts.append(_write_worker(store.prefix, ids, now)))
        for ids in slices[:4]
    ]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        async_results = [pool.apply_async(_write_worker, (store.prefix, ids, now)) for ids in slices[4:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        new_counts += [r.get(timeout=60) for r in async_results]
    covered = set().union(*map(set, slices))
    counts = store.window_counts("brand", 60, now)
    assert sum(new_counts) == len(covered) == counts.total
    assert counts.counts["negative"] == sum(int(p) % 2 for p in covered)


def test_write_survives_a_script_cache_flush(redis_server):
    """EVALSHA falls back to loading the script again (private server: the flush is global)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    store = SentimentStore(client, prefix="flush")
    now = hour_base() + 30
    assert store.record([(result("f1", "positive"), now)], now=now).counted == [True]
    client.script_flush()
    assert store.record([(result("f2", "positive"), now), (result("f1", "positive"), now)], now=now).counted == [True, False]
    client.script_flush()
    big = [(result(f"b{i}", "neutral"), now) for i in range(1200)]  # several scripts in one pipeline
    assert sum(store.record(big, now=now).counted) == 1200
    assert store.window_counts("brand", 60, now).total == 1202
