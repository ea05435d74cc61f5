"""``clmlf-monitor query``: topic sentiment over the last window, from Redis."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clmlf.settings import build_config
from contract.posts import MAX_TOPIC_CHARS, canonical_topic
from monitor.config import (
    RedisSettings,
    RetentionSettings,
    add_redis_arguments,
    add_retention_arguments,
    duration_arg,
)

EXAMPLES = """examples:
  clmlf-monitor query --redis redis://localhost:6379/0 --topic acme --json
      {"topic": "acme", "window_seconds": 900, "total": 120, "counts": {...}, "shares": {...}}
  clmlf-monitor query --topic acme --window 1h            (REDIS_URL from the environment)
  clmlf-monitor query --all --window 1d --rank negative   (top 50 topics by negative share)

Windows are whole minute buckets ending with the current minute, by event time.
--topic is normalised as the consumers store topics (Unicode NFC, surrounding
whitespace stripped, case kept), so " Acme" finds "Acme"."""


class QueryConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    redis: RedisSettings
    retention: RetentionSettings = RetentionSettings()
    topic: str | None = Field(None, min_length=1, max_length=MAX_TOPIC_CHARS)
    all_topics: bool = False
    window: float = Field(900.0, gt=0, le=400 * 86400)
    rank: Literal["volume", "negative"] = "volume"
    limit: int = Field(50, ge=1, le=10_000)
    negative_label: str = "negative"
    json_output: bool = False

    @field_validator("topic")
    @classmethod
    def _canonical(cls, value: str | None) -> str | None:
        """The name as the consumers stored it (NFC, stripped: contract.posts.canonical_topic)."""
        return None if value is None else canonical_topic(value)

    @model_validator(mode="after")
    def _one_target(self) -> QueryConfig:
        if (self.topic is None) == (not self.all_topics):
            raise PydanticCustomError("target", "give exactly one of --topic T or --all")
        return self


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "query",
        help="topic sentiment over the last window (counts and shares by label)",
        description="Print counts and shares by label of the posts whose event time lies in the last "
        "window, for one topic or for all topics ranked by volume or negative share.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_redis_arguments(parser)
    add_retention_arguments(parser)
    parser.add_argument("--topic", metavar="T", help="the topic to report")
    parser.add_argument("--all", action="store_true",
                        help="the top --limit topics of the window, from the ranked index (cost grows with "
                             "--limit, not with the number of topics; JSON 'exact' says whether it is proven)")
    parser.add_argument("--window", type=duration_arg, default=900.0, metavar="DUR",
                        help="window length: 90s, 15m, 1h, 1d (default 15m)")
    parser.add_argument("--rank", choices=("volume", "negative"), default="volume",
                        help="with --all: order by post volume or by negative share (default volume)")
    parser.add_argument("--limit", type=int, default=50, help="with --all: at most this many topics (default 50)")
    parser.add_argument("--negative-label", default="negative",
                        help="label ranked by --rank negative (2-class checkpoints name their own)")
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = build_config(
        parser,
        QueryConfig,
        {
            "redis": RedisSettings.from_args(args),
            "retention": RetentionSettings.from_args(args),
            "topic": args.topic,
            "all_topics": args.all,
            "window": args.window,
            "rank": args.rank,
            "limit": args.limit,
            "negative_label": args.negative_label,
            "json_output": args.json,
        },
    )
    import redis

    from monitor.config import RedisUnavailable, format_duration, open_store
    from monitor.query import format_table, ranked_json, ranked_topics

    try:
        store = open_store(config.redis, **config.retention.store_kwargs())
        if config.topic is not None:
            rows = [store.window_counts(config.topic, config.window)]
            payload = rows[0].to_dict()
        else:
            rows = ranked_topics(store, config.window, config.rank, config.limit, config.negative_label)
            payload = ranked_json(rows, config.window, config.rank)
    except (RedisUnavailable, redis.RedisError) as exc:
        print(f"clmlf-monitor query: error: {exc}", file=sys.stderr)
        return 1
    if config.json_output:
        print(json.dumps(payload, ensure_ascii=False))
    elif not rows:
        print(f"no posts in the last {format_duration(config.window)}")
    else:
        print(format_table(rows, format_duration(config.window)))
    return 0
