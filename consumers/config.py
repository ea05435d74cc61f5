"""The one typed configuration object of a ``clmlf-monitor run`` process.

Flags get their defaults from environment variables (docs/architecture.md);
:func:`add_run_arguments` declares them, :func:`run_config_from_args` validates
everything once into :class:`RunConfig` (bad values exit 2 with one line).
Secrets (SASL password, alert webhook URL) are ``SecretStr`` and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from clmlf.settings import (
    add_precision_arguments,
    build_config,
    env_default,
    env_flag,
    parse_duration,
    redact_url,
)
from monitor.config import RetentionSettings, add_retention_arguments, format_duration


class KafkaSecurity(BaseModel):
    """Broker security settings (from ``KAFKA_SECURITY_PROTOCOL`` etc.; environment only)."""

    model_config = ConfigDict(frozen=True)

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSecurity:
        if self.protocol.startswith("SASL") and not (self.sasl_mechanism and self.sasl_username
                                                     and self.sasl_password):
            raise ValueError("SASL needs KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python clients."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            kwargs.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password.get_secret_value() if self.sasl_password else None,
            )
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        return kwargs

    @classmethod
    def from_env(cls) -> dict[str, Any]:
        return {
            "protocol": (env_default("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") or "").upper(),
            "sasl_mechanism": env_default("KAFKA_SASL_MECHANISM"),
            "sasl_username": env_default("KAFKA_SASL_USERNAME"),
            "sasl_password": env_default("KAFKA_SASL_PASSWORD"),
            "ssl_cafile": env_default("KAFKA_SSL_CAFILE"),
        }


# The memory budget of one member, sized to the 4 GiB limit of the k8s consumer pod (docs/security.md):
# ~0.9 GB process + model, decode budget x 14 B/pixel (worst mode, bench/decode_memory.py) = 0.63 GiB,
# in-flight posts 1 GiB, batch activations, fetched image bytes: about 3.3 GiB in all.
DEFAULT_MAX_IN_FLIGHT_BYTES = 1 << 30
DEFAULT_MAX_DECODE_PIXELS = 48_000_000
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def parse_size(text: str | int, units: dict[str, int]) -> int:
    """``1073741824``, ``512MiB``, ``1GiB`` (bytes) or ``48M``, ``40000000`` (pixels) -> int."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    value = str(text).strip().replace("_", "")
    for suffix in sorted(units, key=len, reverse=True):
        if value.lower().endswith(suffix.lower()):
            number = value[: len(value) - len(suffix)].strip()
            break
    else:
        number, suffix = value, ""
    try:
        amount = Fraction(number)  # exact: 4611686019GB is 4611686019 * 10**9, not a float's rounding
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"invalid size {text!r}") from None
    if amount < 0:
        raise ValueError(f"invalid size {text!r}")
    return int(amount * units.get(suffix, 1))


BYTE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 1000, "MB": 10**6, "GB": 10**9}
PIXEL_UNITS = {"K": 1000, "M": 1_000_000}


def check_bootstrap(value: str) -> str:
    """Normalised ``HOST:PORT[,HOST:PORT..]`` or ValueError."""
    servers = [s.strip() for s in value.split(",") if s.strip()]
    if not servers:
        raise ValueError("give at least one HOST:PORT")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not (0 < int(port) < 65536):
            raise ValueError(f"{server!r} is not HOST:PORT")
    return ",".join(servers)


def check_topic(value: str) -> str:
    """A legal Kafka topic name or ValueError."""
    if not value or len(value) > 249 or not all(c.isalnum() or c in "._-" for c in value):
        raise ValueError(f"{value!r} is not a valid Kafka topic name (letters, digits, '.', '_', '-')")
    return value


class RunConfig(BaseModel):
    """Everything one consumer-group member needs, validated once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str
    topic: str
    group: str = Field(min_length=1, max_length=255)
    redis_url: str
    redis_prefix: str = Field(default="clmlf", min_length=1, max_length=64)
    checkpoint: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"
    threads: int | None = Field(default=None, ge=1, le=1024)  # None = from the CPU quota
    max_batch: int = Field(default=32, ge=1, le=1024)
    max_wait_ms: float = Field(default=50.0, gt=0, le=60_000)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    output_topic: str | None = None
    exit_when_idle: float | None = Field(default=None, gt=0)
    allow_private_images: bool = False
    image_workers: int = Field(default=8, ge=1, le=256)
    image_timeout: float = Field(default=5.0, gt=0, le=120)
    max_in_flight: int = Field(default=1024, ge=1, le=1_000_000)
    max_in_flight_bytes: int = Field(default=DEFAULT_MAX_IN_FLIGHT_BYTES, ge=1 << 20, le=1 << 40)
    max_decode_pixels: int = Field(default=DEFAULT_MAX_DECODE_PIXELS, ge=1_000_000, le=2_000_000_000)
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1_000_000, le=2_000_000_000)
    shutdown_grace: float = Field(default=30.0, ge=0, le=3600)
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    max_topic_labels: int = Field(default=50, ge=1, le=10_000)
    retention: RetentionSettings = RetentionSettings()
    alert_interval: float = Field(default=30.0, ge=0, le=86_400)  # 0 = no alert evaluation in this member
    alert_webhook: SecretStr | None = None
    log_level: str = "INFO"
    security: KafkaSecurity = KafkaSecurity()

    @model_validator(mode="after")
    def _image_fits_the_decode_budget(self) -> RunConfig:
        if self.max_image_pixels > self.max_decode_pixels:
            raise ValueError(f"--max-image-pixels ({self.max_image_pixels}) must be at most "
                             f"--max-decode-pixels ({self.max_decode_pixels})")
        return self

    @field_validator("bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        return check_bootstrap(value)

    @field_validator("topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        return check_topic(value)

    @field_validator("output_topic")
    @classmethod
    def _check_output_topic(cls, value: str | None) -> str | None:
        return None if value in (None, "") else check_topic(value)

    @field_validator("redis_url")
    @classmethod
    def _check_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return level

    @field_validator("alert_interval")
    @classmethod
    def _check_alert_interval(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("must be 0 (off) or at least 100ms")
        return value

    @field_validator("alert_webhook", mode="before")
    @classmethod
    def _check_webhook(cls, value: Any) -> Any:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text in (None, ""):
            return None
        if not str(text).startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def describe(self) -> str:
        """One log line with the settings that matter (secrets redacted)."""
        return (
            f"topic={self.topic} group={self.group} bootstrap={self.bootstrap} "
            f"redis={redact_url(self.redis_url)} prefix={self.redis_prefix} "
            f"checkpoint={self.checkpoint or '<embedded>'} device={self.device} precision={self.precision} "
            f"threads={self.threads or 'auto'} max_batch={self.max_batch} "
            f"max_wait_ms={self.max_wait_ms:g} output_topic={self.output_topic or '-'} "
            f"metrics={self.metrics_host}:{self.metrics_port} security={self.security.protocol} "
            f"max_in_flight={self.max_in_flight}/{self.max_in_flight_bytes / 2**20:.0f}MiB "
            f"decode_pixels={self.max_decode_pixels} image_pixels={self.max_image_pixels} "
            f"retention={format_duration(self.retention.minute_retention)}/"
            f"{format_duration(self.retention.hourly_retention)} alerts={self._alerts_display()}"
        )

    def _alerts_display(self) -> str:
        if not self.alert_interval:
            return "off"
        if self.alert_webhook is None:
            return f"every {self.alert_interval:g}s"
        parts = urlsplit(self.alert_webhook.get_secret_value())  # host only: paths often hold tokens
        return f"every {self.alert_interval:g}s webhook={parts.scheme}://{parts.hostname}/.."


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bytes_arg(text: str) -> int:
    try:
        return parse_size(text, BYTE_UNITS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (use e.g. 1GiB, 512MiB or a number of bytes)") from None


def _pixels_arg(text: str) -> int:
    try:
        return parse_size(text, PIXEL_UNITS)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (use e.g. 48M or a number of pixels)") from None


def _interval_arg(text: str) -> float:
    """A duration, or ``0`` / ``off`` for none."""
    if text.strip().lower() in ("0", "off"):
        return 0.0
    return _duration_arg(text)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every ``run`` flag, defaults from the environment (flags win)."""
    kafka = parser.add_argument_group("Kafka")
    kafka.add_argument("--bootstrap", default=env_default("KAFKA_BOOTSTRAP_SERVERS"), metavar="HOST:PORT[,..]",
                       help="Kafka bootstrap servers [KAFKA_BOOTSTRAP_SERVERS]")
    kafka.add_argument("--topic", default=env_default("KAFKA_TOPIC"), help="input topic of posts [KAFKA_TOPIC]")
    kafka.add_argument("--group", default=env_default("KAFKA_GROUP_ID"),
                       help="consumer group; members share the partitions [KAFKA_GROUP_ID]")
    kafka.add_argument("--output-topic", default=env_default("KAFKA_OUTPUT_TOPIC"),
                       help="also publish each result record here, key = post id [KAFKA_OUTPUT_TOPIC]")
    kafka.add_argument("--session-timeout-ms", type=int,
                       default=env_default("KAFKA_SESSION_TIMEOUT_MS", 10_000),
                       help="group session timeout (default 10000) [KAFKA_SESSION_TIMEOUT_MS]")

    store = parser.add_argument_group("Redis")
    store.add_argument("--redis", dest="redis_url", default=env_default("REDIS_URL"), metavar="URL",
                       help="Redis URL, e.g. redis://:secret@host:6379/0 [REDIS_URL]")
    store.add_argument("--redis-prefix", default=env_default("CLMLF_REDIS_PREFIX", "clmlf"),
                       help="key prefix (default clmlf) [CLMLF_REDIS_PREFIX]")
    add_retention_arguments(store)

    alerts = parser.add_argument_group("Trend alerts (docs/alerts.md)")
    alerts.add_argument("--alert-interval", type=_interval_arg,
                        default=env_default("CLMLF_ALERT_INTERVAL", "30s"), metavar="DURATION",
                        help="evaluate trend alerts this often, and once more on exit; 0 = off "
                             "(default 30s) [CLMLF_ALERT_INTERVAL]")
    alerts.add_argument("--no-alerts", action="store_true",
                        help="no alert evaluation in this member (a dedicated `clmlf-monitor alerter` runs)")
    alerts.add_argument("--alert-webhook", default=env_default("CLMLF_ALERT_WEBHOOK_URL"), metavar="URL",
                        help="POST fired/resolved alerts here, Alertmanager format; never logged "
                             "[CLMLF_ALERT_WEBHOOK_URL]")

    model = parser.add_argument_group("Model and batching")
    model.add_argument("--checkpoint", default=env_default("CLMLF_CHECKPOINT"), metavar="DIR",
                       help="checkpoint directory (default: the embedded model) [CLMLF_CHECKPOINT]")
    model.add_argument("--device", default=env_default("CLMLF_DEVICE", "auto"), choices=("auto", "cpu", "cuda"),
                       help="auto = CUDA (bf16 autocast) when present, else CPU [CLMLF_DEVICE]")
    add_precision_arguments(model)
    model.add_argument("--max-batch", type=int, default=env_default("CLMLF_MAX_BATCH", 32), metavar="N",
                       help="flush a micro-batch at N posts (default 32) [CLMLF_MAX_BATCH]")
    model.add_argument("--max-wait-ms", type=float, default=env_default("CLMLF_MAX_WAIT_MS", 50), metavar="MS",
                       help="... or when its oldest post waited MS (default 50) [CLMLF_MAX_WAIT_MS]")

    images = parser.add_argument_group(
        "Images", "A checkpoint trained without images (trained_with_images: false) never fetches or decodes "
        "one: its posts report \"image\": \"ignored\" and these options have no effect.")
    images.add_argument("--allow-private-images", action="store_true",
                        default=env_flag("CLMLF_ALLOW_PRIVATE_IMAGES"),
                        help="allow image URLs on private/loopback addresses (tests, trusted networks) "
                             "[CLMLF_ALLOW_PRIVATE_IMAGES]")
    images.add_argument("--image-workers", type=int, default=env_default("CLMLF_IMAGE_WORKERS", 8), metavar="N",
                        help="concurrent image fetch+decode threads (default 8) [CLMLF_IMAGE_WORKERS]")
    images.add_argument("--image-timeout", type=_duration_arg, default=env_default("CLMLF_IMAGE_TIMEOUT", "5s"),
                        metavar="DURATION", help="total time budget per image fetch (default 5s) "
                        "[CLMLF_IMAGE_TIMEOUT]")
    images.add_argument("--max-decode-pixels", type=_pixels_arg,
                        default=env_default("CLMLF_MAX_DECODE_PIXELS", DEFAULT_MAX_DECODE_PIXELS), metavar="N",
                        help="decode budget: pixels all image workers together may decode at once, at most "
                             "14 bytes each while decoding (default 48M) [CLMLF_MAX_DECODE_PIXELS]")
    images.add_argument("--max-image-pixels", type=_pixels_arg,
                        default=env_default("CLMLF_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS), metavar="N",
                        help="refuse (image: failed) an image whose header declares more pixels; at most "
                             "--max-decode-pixels (default 40M) [CLMLF_MAX_IMAGE_PIXELS]")

    ops = parser.add_argument_group("Operations")
    ops.add_argument("--metrics-port", type=int, default=env_default("CLMLF_METRICS_PORT", 9108), metavar="P",
                     help="port of /metrics, /healthz, /readyz; 0 = off (default 9108) [CLMLF_METRICS_PORT]")
    ops.add_argument("--metrics-host", default=env_default("CLMLF_METRICS_HOST", "127.0.0.1"), metavar="ADDR",
                     help="address the metrics/probe server binds (default 127.0.0.1, this machine only; "
                          "0.0.0.0 where Prometheus scrapes from elsewhere, as the container images set) "
                          "[CLMLF_METRICS_HOST]")
    ops.add_argument("--max-in-flight", type=int, default=env_default("CLMLF_MAX_IN_FLIGHT", 1024), metavar="N",
                     help="posts held in memory before partitions are paused (default 1024) "
                          "[CLMLF_MAX_IN_FLIGHT]")
    ops.add_argument("--max-in-flight-bytes", type=_bytes_arg,
                     default=env_default("CLMLF_MAX_IN_FLIGHT_BYTES", DEFAULT_MAX_IN_FLIGHT_BYTES), metavar="SIZE",
                     help="also pause partitions when the posts held take this much memory (raw value, "
                          "base64 image, image tensor), e.g. 512MiB (default 1GiB) [CLMLF_MAX_IN_FLIGHT_BYTES]")
    ops.add_argument("--exit-when-idle", type=_duration_arg, default=env_default("CLMLF_EXIT_WHEN_IDLE"),
                     metavar="DURATION", help="exit 0 after this long with nothing to do (scripts, tests) "
                     "[CLMLF_EXIT_WHEN_IDLE]")
    ops.add_argument("--shutdown-grace", type=_duration_arg,
                     default=env_default("CLMLF_SHUTDOWN_GRACE", "30s"), metavar="DURATION",
                     help="on SIGTERM, time to finish in-flight posts (default 30s) [CLMLF_SHUTDOWN_GRACE]")
    ops.add_argument("--log-level", default=env_default("LOG_LEVEL", "INFO"), help="logging level [LOG_LEVEL]")


def run_config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """Validate the parsed flags (and security environment) into one :class:`RunConfig`, or exit 2."""
    for flag, value in (("--bootstrap", args.bootstrap), ("--topic", args.topic), ("--group", args.group),
                        ("--redis", args.redis_url)):
        if not value:
            parser.error(f"{flag} is required (or set its environment variable)")
    values = {name: getattr(args, name) for name in (
        "bootstrap", "topic", "group", "redis_url", "redis_prefix", "checkpoint", "device", "precision", "threads",
        "max_batch", "max_wait_ms", "metrics_port", "metrics_host", "output_topic", "exit_when_idle",
        "allow_private_images", "image_workers", "image_timeout", "max_in_flight", "max_in_flight_bytes",
        "max_decode_pixels", "max_image_pixels", "shutdown_grace", "session_timeout_ms", "log_level")}
    values["security"] = KafkaSecurity.from_env()
    values["retention"] = RetentionSettings.from_args(args)
    values["alert_interval"] = 0.0 if args.no_alerts else args.alert_interval
    values["alert_webhook"] = args.alert_webhook
    return build_config(parser, RunConfig, values)
