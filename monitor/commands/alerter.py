"""``clmlf-monitor alerter``: evaluate trend alerts periodically as its own process."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from clmlf.settings import build_config, env_default, setup_logging
from monitor.config import (
    RedisSettings,
    RetentionSettings,
    add_redis_arguments,
    add_retention_arguments,
    duration_arg,
)

log = logging.getLogger("monitor.alerter")

EXAMPLES = """examples:
  clmlf-monitor alerter --redis redis://localhost:6379/0 --interval 30s
  clmlf-monitor alerter --alert-webhook http://alertmanager:9093/hook --metrics-port 9109
  clmlf-monitor alerter --once                 (one evaluation, for cron or a test)

Defaults (docs/alerts.md): recent window 5m against the preceding 1h; fire at z >= 4 and a
share increase >= 15 points (volume: 3x the baseline rate) with >= 20 recent and >= 50
baseline posts; resolve below z 2 or half the effect; 15m cooldown per topic and kind."""


class AlerterConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    redis: RedisSettings
    retention: RetentionSettings = RetentionSettings()
    interval: float = Field(30.0, ge=1.0, le=3600.0)
    once: bool = False
    webhook: SecretStr | None = None
    metrics_port: int | None = Field(None, ge=0, le=65535)
    recent_window: float = Field(300.0, gt=0)
    baseline_window: float = Field(3600.0, gt=0)
    min_recent: int = Field(20, ge=1)
    min_baseline: int = Field(50, ge=1)
    z_fire: float = Field(4.0, gt=0)
    cooldown: float = Field(900.0, ge=0)
    negative_label: str = Field("negative", min_length=1)
    positive_label: str = Field("positive", min_length=1)
    log_level: str = "INFO"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alerter",
        help="evaluate trend alerts periodically (own process)",
        description="Compare every active topic's recent window with its baseline window and record, "
        "export and optionally POST trend alerts. Runs until SIGTERM/SIGINT.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_redis_arguments(parser)
    add_retention_arguments(parser)
    parser.add_argument("--interval", type=duration_arg, default=env_default("CLMLF_ALERT_INTERVAL", "30s"),
                        metavar="DUR", help="time between evaluations (env CLMLF_ALERT_INTERVAL, default 30s)")
    parser.add_argument("--once", action="store_true", help="evaluate once and exit")
    parser.add_argument("--alert-webhook", default=env_default("CLMLF_ALERT_WEBHOOK_URL"), metavar="URL",
                        help="POST Alertmanager-style payloads here (env CLMLF_ALERT_WEBHOOK_URL)")
    parser.add_argument("--metrics-port", type=int, default=env_default("CLMLF_ALERTER_METRICS_PORT"),
                        metavar="P", help="serve clmlf_alert_active on :P/metrics (env CLMLF_ALERTER_METRICS_PORT)")
    parser.add_argument("--recent-window", type=duration_arg, default="5m", metavar="DUR",
                        help="recent window (default 5m)")
    parser.add_argument("--baseline-window", type=duration_arg, default="1h", metavar="DUR",
                        help="baseline window just before the recent one (default 1h)")
    parser.add_argument("--min-recent", type=int, default=20, metavar="N",
                        help="posts needed in the recent window (default 20)")
    parser.add_argument("--min-baseline", type=int, default=50, metavar="N",
                        help="posts needed in the baseline window (default 50)")
    parser.add_argument("--z-fire", type=float, default=4.0, metavar="Z", help="z statistic that fires (default 4)")
    parser.add_argument("--negative-label", default="negative", metavar="L",
                        help="label of negative_share alerts (2-class checkpoints name their own)")
    parser.add_argument("--positive-label", default="positive", metavar="L",
                        help="label of positive_share alerts")
    parser.add_argument("--cooldown", type=duration_arg, default="15m", metavar="DUR",
                        help="no re-fire of a topic+kind this long after it resolved (default 15m)")
    parser.add_argument("--log-level", default=env_default("LOG_LEVEL", "INFO"), help="env LOG_LEVEL")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = build_config(
        parser,
        AlerterConfig,
        {
            "redis": RedisSettings.from_args(args),
            "retention": RetentionSettings.from_args(args),
            "interval": args.interval,
            "once": args.once,
            "webhook": args.alert_webhook,
            "metrics_port": args.metrics_port,
            "recent_window": args.recent_window,
            "baseline_window": args.baseline_window,
            "min_recent": args.min_recent,
            "min_baseline": args.min_baseline,
            "z_fire": args.z_fire,
            "cooldown": args.cooldown,
            "negative_label": args.negative_label,
            "positive_label": args.positive_label,
            "log_level": args.log_level,
        },
    )
    setup_logging(config.log_level)
    import redis
    from prometheus_client import CollectorRegistry, start_http_server

    from monitor.alerts import AlertConfig, AlertEngine
    from monitor.config import RedisUnavailable, open_store
    from monitor.webhook import WebhookNotifier

    try:
        alert_config = AlertConfig(
            recent_window=config.recent_window,
            baseline_window=config.baseline_window,
            min_recent=config.min_recent,
            min_baseline=config.min_baseline,
            z_fire=config.z_fire,
            z_resolve=min(2.0, config.z_fire / 2),
            cooldown=config.cooldown,
            negative_label=config.negative_label,
            positive_label=config.positive_label,
        )
    except ValueError as exc:
        parser.error(" ".join(str(exc).split()))
    try:
        store = open_store(config.redis, **config.retention.store_kwargs())
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 1
    registry = CollectorRegistry()
    if config.metrics_port is not None:
        start_http_server(config.metrics_port, addr="0.0.0.0", registry=registry)
    webhook = WebhookNotifier(config.webhook.get_secret_value()) if config.webhook else None
    engine = AlertEngine(store, alert_config, webhook=webhook, registry=registry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("alerter on %s prefix %s every %.0fs", config.redis.display_url, config.redis.prefix, config.interval)
    failures = 0
    while True:
        try:
            for alert in engine.evaluate():
                log.warning("alert %s: %s", alert.state, alert.summary())
            failures = 0
        except redis.RedisError as exc:
            failures += 1
            log.error("evaluation failed (%d in a row): %s", failures, type(exc).__name__)
        if config.once or stop.wait(config.interval):
            break
    if webhook is not None:
        webhook.close()
    return 1 if config.once and failures else 0
