"""The typed settings layer of every monitor and consumer process (``clmlf-monitor run``, ``serve``,
``alerter``, ``query``, ``alerts``, ``produce``), on pydantic-settings.

One settings class per process, composed of the option groups below (and
:class:`monitor.alert_settings.AlertOptions`, ``consumers.config.RunConfig``).  A field's alias is
its environment variable; argparse declares the flags without defaults of their own (``dest`` =
field name), and :func:`settings_from_args` builds the class once from the flags given (they win),
else the environment, else the field's default.  A bad value exits 2 with one line naming the flag.
Secrets (the Redis URL, which may carry a password; tokens; webhook URLs) are ``SecretStr``.
"""

from __future__ import annotations

import argparse
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from clmlf.settings import parse_duration, redact_url

S = TypeVar("S", bound="ProcessSettings")

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


class _AliasEnvSource(EnvSettingsSource):
    """Environment variables named by a field's alias only: a field without an alias is a flag only,
    and no field is read from a variable spelled like its Python name."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if field.alias is None:
            return None, field_name, False
        return super().get_field_value(field, field_name)

    def _extract_field_info(self, field: FieldInfo, field_name: str, *args: Any, **kwargs: Any):
        infos = super()._extract_field_info(field, field_name, *args, **kwargs)
        return [info for info in infos if info[0] != field_name] or infos[:1]


class ProcessSettings(BaseSettings):
    """Base of every process's settings: frozen, unknown keys refused, empty variables ignored."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", populate_by_name=True, env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init keywords), then the environment; no dotenv or secrets directory."""
        return init_settings, _AliasEnvSource(settings_cls)


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


def settings_from_args(parser: argparse.ArgumentParser, settings: type[S], args: argparse.Namespace,
                       **values: Any) -> S:
    """``settings`` from the flags given in ``args`` (plus ``values``), the environment and the
    defaults, validated once; a bad value exits 2 through ``parser.error`` with one line."""
    given = {name: getattr(args, name) for name in settings.model_fields if getattr(args, name, None) is not None}
    try:
        return settings(**given, **values)
    except ValidationError as exc:
        _exit_with(parser, settings, exc, getattr(args, "command", None))


def _flag_of(parser: argparse.ArgumentParser, dest: str, command: str | None) -> str | None:
    """The option string of ``dest`` in ``parser`` or, for the top-level parser, in ``command``'s."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return _flag_of(action.choices[command], dest, None)
    return next((a.option_strings[0] for a in parser._actions if a.dest == dest and a.option_strings), None)


def _exit_with(parser: argparse.ArgumentParser, settings: type[ProcessSettings], exc: ValidationError,
               command: str | None) -> NoReturn:
    err = exc.errors()[0]
    message = str(err.get("msg", "invalid value"))
    loc = [str(part) for part in err.get("loc", ())]
    if loc:
        field_name = next((n for n, f in settings.model_fields.items() if loc[0] in (n, f.alias)), loc[0])
        field = settings.model_fields.get(field_name)
        env = field.alias if field is not None else None
        where = _flag_of(parser, field_name, command) or env or field_name.replace("_", "-")
        if err.get("type") == "missing":
            message = f"{where} is required" + (f" (or set {env})" if env else "")
        else:
            message = f"{where}: {message}"
    parser.error(message)


def format_duration(seconds: float) -> str:
    """900 -> ``15m``, 3600 -> ``1h``, 90 -> ``90s``."""
    s = int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"

