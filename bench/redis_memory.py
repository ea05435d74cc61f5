"""Redis memory per stored post, measured on a private redis-server (input for docs/operations.md sizing).

Writes N synthetic result records through the real write path (``SentimentStore.record``, one Lua script
per batch) across T topics with event times spread over the last hour, then reads ``used_memory``,
``MEMORY USAGE`` of one marker and one result key, and of every minute hash and ranked-index key
(per topic-minute: what the ranked index adds to the buckets)::

    .venv/bin/python bench/redis_memory.py --posts 50000 --topics 20
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=50_000, help="posts to write (default 50000)")
    parser.add_argument("--topics", type=int, default=20, help="distinct topics (default 20)")
    parser.add_argument("--batch", type=int, default=64, help="posts per write (default 64)")
    args = parser.parse_args(argv)
    if args.posts < args.batch or args.topics < 1:
        parser.error("need --posts >= --batch and --topics >= 1")

    import redis

    from consumers.local_infra import LocalRedis
    from contract.posts import ResultRecord, iso_utc
    from monitor.store import SentimentStore

    rng = random.Random(7)
    labels = ("positive", "neutral", "negative")
    now = time.time()
    with LocalRedis() as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        store = SentimentStore(client)
        client.execute_command("MEMORY", "PURGE")
        base = int(client.info("memory")["used_memory"])
        for start in tqdm(range(0, args.posts, args.batch), desc="writing", unit="batch", file=sys.stderr):
            batch = []
            for i in range(start, min(start + args.batch, args.posts)):
                event = now - rng.uniform(0, 3600)
                probs = [rng.random() for _ in labels]
                total = sum(probs)
                scores = {label: round(p / total, 4) for label, p in zip(labels, probs, strict=True)}
                record = ResultRecord(
                    id=f"post-{i:012d}", label=max(scores, key=scores.get), scores=scores,
                    topics=[f"topic-{rng.randrange(args.topics):03d}"], created_at=iso_utc(event),
                    processed_at=iso_utc(now), model="clmlf-default", image=rng.choice(("used", "none")),
                )
                batch.append((record, event))
            store.record(batch, now=now)
        used = int(client.info("memory")["used_memory"]) - base

        def key_bytes(pattern: str) -> tuple[int, int]:
            keys = list(client.scan_iter(match=pattern, count=1000))
            return len(keys), sum(client.memory_usage(key) or 0 for key in keys)

        minute_hashes, minute_hash_bytes = key_bytes(f"{store.prefix}:m:*")
        _, rank_bytes = key_bytes(f"{store.prefix}:rank:*")
        marker = client.memory_usage(store.keys.seen("post-000000000000"))
        result = client.memory_usage(store.keys.result("post-000000000000"))
        # Split the total: drop the result keys (they expire after 2 days; the markers stay 35).
        for keys in _chunks(client.scan_iter(match=store.keys.result("*"), count=1000), 1000):
            client.unlink(*keys)
        without_results = int(client.info("memory")["used_memory"]) - base
        report = {
            "posts": args.posts, "topics": args.topics, "used_memory_bytes": used,
            "bytes_per_post": round(used / args.posts, 1), "marker_key_bytes": marker, "result_key_bytes": result,
            "result_bytes_per_post": round((used - without_results) / args.posts, 1),
            "marker_and_aggregates_bytes_per_post": round(without_results / args.posts, 1),
            "redis_version": client.info("server")["redis_version"], "machine": platform.platform(),
            "topic_minutes": minute_hashes,
            "minute_hash_bytes_per_topic_minute": round(minute_hash_bytes / max(1, minute_hashes), 1),
            "rank_index_bytes": rank_bytes,
            "rank_index_bytes_per_topic_minute": round(rank_bytes / max(1, minute_hashes), 1),
            "seen_ttl_days": round(store.seen_ttl / 86400, 2),
            "result_ttl_days": round((store.result_ttl or store.bucket_ttl) / 86400, 2),
        }
        client.close()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
