"""``clmlf-monitor serve``: the monitor's HTTP API (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from pydantic import Field, SecretStr

from clmlf.process_settings import settings_from_args
from clmlf.settings import setup_logging
from monitor.settings import (
    Duration,
    LoggingOptions,
    RedisOptions,
    RetentionOptions,
    add_log_level_argument,
    add_redis_arguments,
    add_retention_arguments,
)

log = logging.getLogger("monitor.serve")

EXAMPLES = """examples:
  clmlf-monitor serve --redis redis://localhost:6379/0 --port 8080
  CLMLF_API_TOKEN=s3cret clmlf-monitor serve --host 0.0.0.0 --port 8080
  curl -H 'Authorization: Bearer s3cret' 'localhost:8080/v1/topics/acme/sentiment?window=15m'

Routes: /v1/topics, /v1/topics/{topic}/sentiment?window=15m,
/v1/topics/{topic}/timeseries?window=6h&step=5m, /v1/alerts, /healthz, /readyz,
/docs and /openapi.json (the OpenAPI spec)."""


class ServeConfig(RedisOptions, RetentionOptions, LoggingOptions):
    host: str = Field("127.0.0.1", min_length=1, alias="CLMLF_API_HOST")
    port: int = Field(8080, ge=0, le=65535, alias="CLMLF_API_PORT")
    api_token: SecretStr | None = Field(None, alias="CLMLF_API_TOKEN")
    request_timeout: Duration = Field(10.0, ge=0.1, le=600, alias="CLMLF_API_REQUEST_TIMEOUT")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the HTTP API (topics, sentiment, time series, alerts)",
        description="Serve the monitor's read API over Redis with FastAPI/uvicorn until SIGTERM/SIGINT.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_redis_arguments(parser)
    add_retention_arguments(parser)
    parser.add_argument("--host", help="bind address (env CLMLF_API_HOST, default 127.0.0.1)")
    parser.add_argument("--port", help="port (env CLMLF_API_PORT, default 8080)")
    parser.add_argument("--api-token", metavar="T",
                        help="require 'Authorization: Bearer T' on /v1 (env CLMLF_API_TOKEN; never logged)")
    parser.add_argument("--request-timeout", metavar="DUR",
                        help="answer 504 to a request not done after this long "
                             "(env CLMLF_API_REQUEST_TIMEOUT, default 10s, 100ms..10m)")
    add_log_level_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = settings_from_args(parser, ServeConfig, args)
    setup_logging(config.log_level)
    import uvicorn

    from monitor.api import create_app
    from monitor.redis_client import RedisUnavailable, open_store

    try:
        store = open_store(config, **config.store_kwargs())
    except RedisUnavailable as exc:
        print(f"clmlf-monitor serve: error: {exc}", file=sys.stderr)
        return 1
    token = config.api_token.get_secret_value() if config.api_token else None
    app = create_app(store, token=token, request_timeout=config.request_timeout)
    log.info("API on http://%s:%d (Redis %s, auth %s)", config.host, config.port,
             config.display_url, "on" if token else "off")
    try:
        with _stop_signals_end_run():
            uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level.lower(),
                        access_log=False)
    except StopRequested as stop:
        log.info("%s: API stopped", signal.Signals(stop.signum).name)
    return 0


class StopRequested(BaseException):
    """SIGTERM/SIGINT reached our handler: the server is done (or never started); exit 0."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stop_signals_end_run() -> Iterator[None]:
    """Make SIGTERM/SIGINT end ``run`` with 0 after uvicorn's graceful shutdown.

    While serving, uvicorn handles these signals itself (graceful shutdown), then restores the
    handlers it found and re-raises the signal to them; with the default handlers the process would
    die by that signal (exit 143 in Kubernetes).  The handlers installed here raise
    :class:`StopRequested` instead, which ``run`` turns into exit 0; a signal that arrives before
    uvicorn took over stops start-up the same way.
    """
    def stop(signum: int, _frame: FrameType | None) -> None:
        raise StopRequested(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
