"""Shared command-line pieces of the monitor commands: Redis options, durations, store setup."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clmlf.settings import env_default, parse_duration, redact_url

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_MINUTE_RETENTION = 2 * 86400.0  # the store's defaults (monitor.store), as flag defaults
DEFAULT_HOURLY_RETENTION = 35 * 86400.0
MIN_RETENTION = 3600.0
MAX_RETENTION = 400 * 86400.0


def duration_arg(text: str) -> float:
    """argparse ``type=`` for ``90s`` / ``15m`` / ``1h`` / ``1d``."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_redis_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis",
        default=env_default("REDIS_URL"),
        metavar="URL",
        help="Redis URL, e.g. redis://:PASSWORD@host:6379/0 (env REDIS_URL; password never printed)",
    )
    parser.add_argument(
        "--redis-prefix",
        default=env_default("CLMLF_REDIS_PREFIX", "clmlf"),
        metavar="PREFIX",
        help="key prefix of every key (env CLMLF_REDIS_PREFIX, default %(default)s)",
    )


class RedisSettings(BaseModel):
    """Where the aggregates live. The URL is a secret (it may carry a password)."""

    model_config = ConfigDict(frozen=True)

    url: SecretStr
    prefix: str = "clmlf"

    @field_validator("url", mode="before")
    @classmethod
    def _url_ok(cls, value: Any) -> Any:
        if value is None or value == "":
            raise PydanticCustomError("redis_url", "Redis URL required (--redis or REDIS_URL)")
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if not text.startswith(REDIS_SCHEMES):
            raise PydanticCustomError(
                "redis_url", "must start with redis://, rediss:// or unix:// (got {url})", {"url": redact_url(text)}
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_ok(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value) or len(value) > 64:
            raise PydanticCustomError("redis_prefix", "must be 1..64 characters without spaces")
        return value

    @property
    def display_url(self) -> str:
        return redact_url(self.url.get_secret_value()) or ""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"url": args.redis, "prefix": args.redis_prefix}


def add_retention_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--minute-retention`` / ``--hourly-retention``: how long buckets live (writers) and how far
    back windows may reach (readers); every process of one deployment should use the same values."""
    parser.add_argument(
        "--minute-retention",
        type=duration_arg,
        default=env_default("CLMLF_MINUTE_RETENTION", "2d"),
        metavar="DUR",
        help="keep per-minute buckets (and results) this long, by event time; older minutes are "
        "read from hourly roll-ups (env CLMLF_MINUTE_RETENTION, default 2d)",
    )
    parser.add_argument(
        "--hourly-retention",
        type=duration_arg,
        default=env_default("CLMLF_HOURLY_RETENTION", "35d"),
        metavar="DUR",
        help="keep hourly roll-ups this long: the longest window a query can answer "
        "(env CLMLF_HOURLY_RETENTION, default 35d; >= --minute-retention)",
    )


class RetentionSettings(BaseModel):
    """Lifetimes of the minute buckets and hourly roll-ups in Redis (docs/redis.md)."""

    model_config = ConfigDict(frozen=True)

    minute_retention: float = DEFAULT_MINUTE_RETENTION
    hourly_retention: float = DEFAULT_HOURLY_RETENTION

    @field_validator("minute_retention", "hourly_retention")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not MIN_RETENTION <= value <= MAX_RETENTION:
            raise PydanticCustomError("retention", "must be between 1h and 400d, got {value}",
                                      {"value": format_duration(value)})
        return value

    @model_validator(mode="after")
    def _hourly_covers_minutes(self) -> RetentionSettings:
        if self.hourly_retention < self.minute_retention:
            raise PydanticCustomError(
                "retention",
                "--hourly-retention ({hourly}) must be at least --minute-retention ({minute})",
                {"hourly": format_duration(self.hourly_retention), "minute": format_duration(self.minute_retention)},
            )
        return self

    def store_kwargs(self) -> dict[str, int]:
        """Keyword arguments of :class:`monitor.store.SentimentStore`."""
        return {"bucket_ttl": int(self.minute_retention), "hourly_ttl": int(self.hourly_retention)}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        return {"minute_retention": args.minute_retention, "hourly_retention": args.hourly_retention}


class RedisUnavailable(RuntimeError):
    """Redis could not be reached; the message is one line with the redacted URL."""


def open_store(settings: RedisSettings, check: bool = True, **store_kwargs: Any):
    """A :class:`monitor.store.SentimentStore` on a new client; pings first when ``check``."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    from monitor.store import SentimentStore

    client = redis.Redis.from_url(
        settings.url.get_secret_value(),
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
    )
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RedisUnavailable(
                f"cannot reach Redis at {settings.display_url}: {reason}"
            ) from None
    return SentimentStore(client, prefix=settings.prefix, **store_kwargs)


def format_duration(seconds: float) -> str:
    """900 -> ``15m``, 3600 -> ``1h``, 90 -> ``90s``."""
    s = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
