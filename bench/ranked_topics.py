#!/usr/bin/env python3
"""Benchmark of top-N topic queries (``/v1/topics``, ``query --all``): ranked index vs scanning.

    .venv/bin/python bench/ranked_topics.py [--topics 2000 20000] [--limit 50] [--rounds 5]

Starts a private redis-server (so INFO commandstats counts only this benchmark), writes for each
--topics value that many topics through the real store path (posts with 32 topics each, event
times over the last 50 minutes, plus 10 busier topics), then, interleaved round by round, times

* ``ranked``: ``monitor.query.ranked_topics`` (the ranked index: cost bounded by limit x buckets),
* ``scan``: what it replaced, every topic of the window counted and sorted
  (``store.topics`` + ``store.window_counts_many``),

for the windows 15m, 1h and (ranked only: a scan of 20,000 topics over 35 days takes minutes) 35d.
Prints per variant the median wall time, the Redis commands one query runs (commandstats, Lua
included), whether both answers have the same totals (ties at the cut-off may pick other names)
and the ranked answer's ``exact`` flag.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from consumers.local_infra import LocalRedis  # noqa: E402
from contract.posts import ResultRecord  # noqa: E402
from monitor.query import ranked_topics  # noqa: E402
from monitor.store import SentimentStore  # noqa: E402

LABELS = ("positive", "neutral", "negative")


def record(post_id: str, label: str, topics: list[str]) -> ResultRecord:
    return ResultRecord(id=post_id, label=label, scores={label: 1.0}, topics=topics,
                        created_at="2026-01-01T00:00:00.000Z", processed_at="2026-01-01T00:00:00.000Z",
                        model="bench", image="none")


def seed(store: SentimentStore, n_topics: int, now: float) -> None:
    names = [f"t{i:06d}" for i in range(n_topics)]
    batch = [(record(f"q{n}", LABELS[n % 3], names[i : i + 32]), now - 30 - 60 * (n % 50))
             for n, i in enumerate(range(0, n_topics, 32))]
    batch += [(record(f"h{h}-{k}", LABELS[k % 3], [f"hot{h}"]), now - 30 - 60 * (k % 50))
              for h in range(10) for k in range(200 - 10 * h)]
    for i in range(0, len(batch), 2000):
        store.record(batch[i : i + 2000], now=now)


def scan(store: SentimentStore, window: float, limit: int, now: float) -> list:
    start, _ = store.window_bounds(window, now)
    topics = [t for t, _ in store.topics(active_since=start)]
    rows = [c for c in store.window_counts_many(topics, window, now).values() if c.total]
    rows.sort(key=lambda c: (-c.total, c.topic))
    return rows[:limit]


def commands(client: redis.Redis, fn) -> int:
    client.config_resetstat()
    fn()
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--topics", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    now = time.time()
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=300)
        stores = {}
        for n in args.topics:
            stores[n] = SentimentStore(client, prefix=f"b{n}")
            t0 = time.perf_counter()
            seed(stores[n], n, now)
            print(f"seeded {n} topics in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        cases = [(n, w, v) for n in args.topics for w in (900, 3600, 35 * 86400) for v in ("ranked", "scan")
                 if not (v == "scan" and w > 3600)]

        def run(n: int, window: float, variant: str):
            if variant == "ranked":
                return ranked_topics(stores[n], window, "volume", args.limit, now=now)
            return scan(stores[n], window, args.limit, now)

        times: dict[tuple, list[float]] = {case: [] for case in cases}
        answers: dict[tuple, list[int]] = {}
        exact: dict[tuple, str] = {}
        for case in cases:  # warm-up: scripts loaded, answers kept
            rows = run(*case)
            answers[case] = [r.total for r in rows]
            exact[case] = str(getattr(rows, "exact", "-")).lower()
        for _ in range(args.rounds):
            for case in cases:  # interleaved: every variant sees the same neighbours
                t0 = time.perf_counter()
                run(*case)
                times[case].append(time.perf_counter() - t0)
        cmds = Counter({case: commands(client, lambda c=case: run(*c)) for case in cases})
        print(f"| topics | window | variant | median ms | Redis commands | top-{args.limit} totals = scan | exact |")
        print("|---|---|---|---|---|---|---|")
        for n, window, variant in cases:
            same = answers.get((n, window, "scan"))
            agree = "-" if same is None or variant == "scan" else ("yes" if same == answers[(n, window, variant)]
                                                                     else "no")
            print(f"| {n:,} | {window / 3600:g} h | {variant} | {statistics.median(times[(n, window, variant)]) * 1000:.1f} "
                  f"| {cmds[(n, window, variant)]:,} | {agree} | {exact[(n, window, variant)]} |")
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
