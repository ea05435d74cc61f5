"""``clmlf-monitor alerter``: evaluate trend alerts periodically as its own process."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from clmlf.process_settings import settings_from_args
from clmlf.settings import setup_logging
from monitor.alert_settings import AlertOptions, add_alert_arguments
from monitor.settings import (
    LoggingOptions,
    RedisOptions,
    RetentionOptions,
    add_log_level_argument,
    add_redis_arguments,
    add_retention_arguments,
)

log = logging.getLogger("monitor.alerter")

EXAMPLES = """examples:
  clmlf-monitor alerter --redis redis://localhost:6379/0 --interval 30s
  clmlf-monitor alerter --alert-webhook http://alertmanager:9093/hook --metrics-port 9109
  clmlf-monitor alerter --once                 (one evaluation, for cron or a test)

Thresholds and their defaults (docs/alerts.md; the same flags and variables as in `run`):
recent window 5m against the preceding 1h; fire at z >= 4 and a share increase >= 15 points
(volume: 3x the baseline rate) with >= 20 recent and >= 50 baseline posts; resolve below z 2
or half the effect; 15m cooldown per topic and kind."""


class AlerterConfig(RedisOptions, RetentionOptions, AlertOptions, LoggingOptions):
    once: bool = False
    metrics_port: int | None = Field(None, ge=0, le=65535, alias="CLMLF_ALERTER_METRICS_PORT")

    @model_validator(mode="after")
    def _interval_ok(self) -> AlerterConfig:
        if not 1.0 <= self.alert_interval <= 3600.0:
            raise PydanticCustomError("alert_interval", "--interval must be between 1s and 1h")
        return self


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
    add_alert_arguments(parser, interval_flag="--interval")
    parser.add_argument("--once", action="store_true", default=None, help="evaluate once and exit")
    parser.add_argument("--metrics-port", metavar="P",
                        help="serve clmlf_alert_active on :P/metrics (env CLMLF_ALERTER_METRICS_PORT)")
    add_log_level_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = settings_from_args(parser, AlerterConfig, args)
    setup_logging(config.log_level)
    import redis
    from prometheus_client import CollectorRegistry, start_http_server

    from monitor.alert_loop import AlertLoop
    from monitor.alerts import AlertEngine
    from monitor.redis_client import RedisUnavailable, open_store
    from monitor.webhook import WebhookNotifier

    try:
        store = open_store(config, **config.store_kwargs())
    except RedisUnavailable as exc:
        log.error("%s", exc)
        return 1
    registry = CollectorRegistry()
    if config.metrics_port is not None:
        start_http_server(config.metrics_port, addr="0.0.0.0", registry=registry)
    webhook = WebhookNotifier(config.alert_webhook.get_secret_value()) if config.alert_webhook else None
    engine = AlertEngine(store, config.alert_config(), webhook=webhook, registry=registry)
    loop = AlertLoop(engine.evaluate, config.alert_interval, (redis.RedisError, OSError))
    log.info("alerter on %s prefix %s %s", config.display_url, config.redis_prefix, config.alerts_display())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        evaluated = loop.evaluate_once()
        if config.once:
            return 0 if evaluated else 1
        loop.start()
        stop.wait()
        loop.close()
        return 0
    finally:
        if webhook is not None:
            webhook.close()
