"""The option groups of the monitor and consumer processes (``clmlf-monitor run``, ``serve``,
``alerter``, ``query``, ``alerts``, ``produce``) on the typed settings layer of
:mod:`clmlf.process_settings` (``ProcessSettings``, ``settings_from_args``: flags over environment,
validated once, one-line errors naming the flag).

One settings class per process, composed of the option groups below (and
:class:`monitor.alert_settings.AlertOptions`, ``consumers.config.RunConfig``).  A field's alias is
its environment variable.
Secrets (the Redis URL, which may carry a password; tokens; webhook URLs) are ``SecretStr``.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clmlf.process_settings import ProcessSettings
from clmlf.settings import parse_duration, redact_url

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DEFAULT_MINUTE_RETENTION = 2 * 86400.0  # the store's defaults (monitor.store), as flag defaults
DEFAULT_HOURLY_RETENTION = 35 * 86400.0
MIN_RETENTION = 3600.0
MAX_RETENTION = 400 * 86400.0


def _duration(value: Any) -> Any:
    """``90s`` / ``15m`` / ``1h`` / ``1d`` / ``250ms`` / seconds -> float seconds (> 0)."""
    return value if value is None else parse_duration(value)


def _interval(value: Any) -> Any:
    """A duration, or ``0`` / ``off`` for none."""
    if isinstance(value, str) and value.strip().lower() in ("0", "off"):
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return _duration(value)


def _redis_url(value: Any) -> Any:
    if value is None or value == "":
        raise PydanticCustomError("redis_url", "Redis URL required (--redis or REDIS_URL)")
    text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    if not text.startswith(REDIS_SCHEMES):
        raise PydanticCustomError(
            "redis_url", "must start with redis://, rediss:// or unix:// (got {url})", {"url": redact_url(text)}
        )
    return value


def _key_prefix(value: str) -> str:
    if not value or any(c.isspace() for c in value) or len(value) > 64:
        raise PydanticCustomError("redis_prefix", "must be 1..64 characters without spaces")
    return value


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _http_url(value: Any) -> Any:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text in (None, ""):
        return None
    if not str(text).startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value


Duration = Annotated[float, BeforeValidator(_duration)]
Interval = Annotated[float, BeforeValidator(_interval)]  # 0 = off
RedisUrl = Annotated[SecretStr, BeforeValidator(_redis_url)]
KeyPrefix = Annotated[str, AfterValidator(_key_prefix)]
LogLevel = Annotated[str, AfterValidator(_log_level)]
HttpUrlSecret = Annotated[SecretStr | None, BeforeValidator(_http_url)]



class RedisOptions(ProcessSettings):
    """Where the aggregates live. The URL is a secret (it may carry a password)."""

    redis_url: RedisUrl = Field(None, alias="REDIS_URL", validate_default=True)
    redis_prefix: KeyPrefix = Field("clmlf", alias="CLMLF_REDIS_PREFIX")

    @property
    def display_url(self) -> str:
        return redact_url(self.redis_url.get_secret_value()) or ""


class RetentionOptions(ProcessSettings):
    """Lifetimes of the minute buckets and hourly roll-ups in Redis (docs/redis.md); every process of
    one deployment should use the same values."""

    minute_retention: Duration = Field(DEFAULT_MINUTE_RETENTION, alias="CLMLF_MINUTE_RETENTION")
    hourly_retention: Duration = Field(DEFAULT_HOURLY_RETENTION, alias="CLMLF_HOURLY_RETENTION")

    @field_validator("minute_retention", "hourly_retention")
    @classmethod
    def _in_range(cls, value: float) -> float:
        if not MIN_RETENTION <= value <= MAX_RETENTION:
            raise PydanticCustomError("retention", "must be between 1h and 400d, got {value}",
                                      {"value": format_duration(value)})
        return value

    @model_validator(mode="after")
    def _hourly_covers_minutes(self) -> RetentionOptions:
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


class LoggingOptions(ProcessSettings):
    log_level: LogLevel = Field("INFO", alias="LOG_LEVEL")


# ------------------------------------------------------------------------------------------- flags

def add_redis_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--redis", dest="redis_url", metavar="URL",
                        help="Redis URL, e.g. redis://:PASSWORD@host:6379/0 (env REDIS_URL; password never printed)")
    parser.add_argument("--redis-prefix", metavar="PREFIX",
                        help="key prefix of every key (env CLMLF_REDIS_PREFIX, default clmlf)")


def add_retention_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--minute-retention`` / ``--hourly-retention``: how long buckets live (writers) and how far
    back windows may reach (readers)."""
    parser.add_argument("--minute-retention", metavar="DUR",
                        help="keep per-minute buckets (and results) this long, by event time; older minutes are "
                        "read from hourly roll-ups (env CLMLF_MINUTE_RETENTION, default 2d)")
    parser.add_argument("--hourly-retention", metavar="DUR",
                        help="keep hourly roll-ups this long: the longest window a query can answer "
                        "(env CLMLF_HOURLY_RETENTION, default 35d; >= --minute-retention)")


def add_log_level_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--log-level", help="logging level (env LOG_LEVEL, default INFO)")



def format_duration(seconds: float) -> str:
    """900 -> ``15m``, 3600 -> ``1h``, 90 -> ``90s``."""
    s = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"

