"""``clmlf-monitor alerts``: recent trend alerts, newest first."""

from __future__ import annotations

import argparse
import json
import sys

from pydantic import Field

from clmlf.process_settings import settings_from_args
from monitor.settings import RedisOptions, add_redis_arguments

EXAMPLES = """examples:
  clmlf-monitor alerts --redis redis://localhost:6379/0 --json
  clmlf-monitor alerts --active          (only alerts firing now)

Each alert: topic, kind (negative_share, positive_share, volume_spike), state, started/ended
(epoch seconds), score (z statistic), effect (share increase or volume ratio), and the
recent window and baseline window figures (seconds, total, count, share, Wilson 95% interval)."""


class AlertsConfig(RedisOptions):
    limit: int = Field(50, ge=1, le=10_000)
    active: bool = False
    json_output: bool = False


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="list recent trend alerts, newest first",
        description="List trend alert episodes recorded in Redis by the alert engine, newest first.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_redis_arguments(parser)
    parser.add_argument("--limit", help="at most this many alerts (default 50)")
    parser.add_argument("--active", action="store_true", default=None, help="only alerts that are firing now")
    parser.add_argument("--json", dest="json_output", action="store_true", default=None, help="JSON list on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = settings_from_args(parser, AlertsConfig, args)
    import redis

    from contract.posts import iso_utc
    from monitor.alerts import AlertEngine, alerts_json, list_alerts
    from monitor.redis_client import RedisUnavailable, open_store

    try:
        store = open_store(config)
        alerts = AlertEngine(store).active() if config.active else list_alerts(store, config.limit)
    except (RedisUnavailable, redis.RedisError) as exc:
        print(f"clmlf-monitor alerts: error: {exc}", file=sys.stderr)
        return 1
    alerts = alerts[: config.limit]
    if config.json_output:
        print(json.dumps(alerts_json(alerts), ensure_ascii=False))
        return 0
    if not alerts:
        print("no alerts")
    for alert in alerts:
        ended = iso_utc(alert.ended) if alert.ended else "-"
        print(f"{iso_utc(alert.started)}  {ended:24}  {alert.state:8}  {alert.kind:14}  {alert.summary()}")
    return 0
