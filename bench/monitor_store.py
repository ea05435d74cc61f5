#!/usr/bin/env python3
"""Benchmark of the monitor's Redis store: batched idempotent writes and window reads.

    .venv/bin/python bench/monitor_store.py [--redis redis://127.0.0.1:6379/0] [--posts 20000] [--batch 32]

Writes --posts results (2 topics each, event times spread over the last 6 hours) in batches of
--batch through SentimentStore.record (one Lua script call per batch), re-sends them all
(the idempotent path), then times window queries. Uses a unique key prefix and deletes it after.
Prints medians; run it on an idle machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
from tqdm import tqdm  # noqa: E402

from contract.posts import ResultRecord  # noqa: E402
from monitor.store import SentimentStore  # noqa: E402

LABELS = ("positive", "neutral", "negative")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--posts", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()

    client = redis.Redis.from_url(args.redis, decode_responses=True)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    store = SentimentStore(client, prefix=prefix)
    rng = random.Random(0)
    now = time.time()
    results = [
        (ResultRecord(id=f"p{i}", label=rng.choice(LABELS), scores={"positive": 0.2, "neutral": 0.3, "negative": 0.5},
                      topics=[f"topic{i % 20}", "all"], created_at="2026-01-01T00:00:00.000Z",
                      processed_at="2026-01-01T00:00:00.000Z", model="bench", image="none"),
         now - rng.uniform(0, 6 * 3600))
        for i in range(args.posts)
    ]
    batches = [results[i : i + args.batch] for i in range(0, len(results), args.batch)]
    try:
        for label, expect_new in (("first write", True), ("redelivery", False)):
            times = []
            start = time.perf_counter()
            for batch in tqdm(batches, desc=label, unit="batch", file=sys.stderr):
                t0 = time.perf_counter()
                flags = store.record(batch, now=now)
                times.append(time.perf_counter() - t0)
                assert all(flags) if expect_new else not any(flags)
            total = time.perf_counter() - start
            print(f"{label}: {args.posts / total:,.0f} posts/s, median {statistics.median(times) * 1000:.2f} ms "
                  f"per batch of {args.batch}")
        for window in (900, 3600, 6 * 3600, 86400):
            times = []
            for _ in range(args.queries):
                t0 = time.perf_counter()
                counts = store.window_counts("all", window, now)
                times.append(time.perf_counter() - t0)
            print(f"window {window:>6}s: median {statistics.median(times) * 1000:.2f} ms (total {counts.total})")
        times = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            store.timeseries("all", 6 * 3600, 300, now)
            times.append(time.perf_counter() - t0)
        print(f"timeseries 6h/5m: median {statistics.median(times) * 1000:.2f} ms")
    finally:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
