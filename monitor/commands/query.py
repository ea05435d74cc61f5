"""``clmlf-monitor query``: topic sentiment over the last window, from Redis."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clmlf.process_settings import settings_from_args
from contract.posts import MAX_TOPIC_CHARS, canonical_topic
from monitor.settings import (
    Duration,
    RedisOptions,
    RetentionOptions,
    add_redis_arguments,
    add_retention_arguments,
)

EXAMPLES = """examples:
  clmlf-monitor query --redis redis://localhost:6379/0 --topic acme --json
      {"topic": "acme", "window_seconds": 900, "total": 120, "counts": {...}, "shares": {...}}
  clmlf-monitor query --topic acme --window 1h            (REDIS_URL from the environment)
  clmlf-monitor query --all --window 1d --rank negative   (top 50 topics by negative share)

Windows are whole minute buckets ending with the current minute, by event time.
--topic is normalised as the consumers store topics (Unicode NFC, surrounding
whitespace stripped, case kept), so " Acme" finds "Acme"."""


class QueryConfig(RedisOptions, RetentionOptions):
    topic: str | None = Field(None, min_length=1, max_length=MAX_TOPIC_CHARS)
    all_topics: bool = False
    window: Duration = Field(900.0, gt=0, le=400 * 86400)
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
    parser.add_argument("--all", dest="all_topics", action="store_true", default=None,
                        help="the top --limit topics of the window, from the ranked index (cost grows with "
                             "--limit, not with the number of topics; JSON 'exact' says whether it is proven)")
    parser.add_argument("--window", metavar="DUR",
                        help="window length: 90s, 15m, 1h, 1d (default 15m)")
    parser.add_argument("--rank", choices=("volume", "negative"),
                        help="with --all: order by post volume or by negative share (default volume)")
    parser.add_argument("--limit", help="with --all: at most this many topics (default 50)")
    parser.add_argument("--negative-label",
                        help="label ranked by --rank negative (2-class checkpoints name their own)")
    parser.add_argument("--json", dest="json_output", action="store_true", default=None,
                        help="machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = settings_from_args(parser, QueryConfig, args)
    import redis

    from monitor.query import format_table, ranked_json, ranked_topics
    from monitor.redis_client import RedisUnavailable, open_store
    from monitor.settings import format_duration

    try:
        store = open_store(config, **config.store_kwargs())
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
