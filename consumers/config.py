"""The one typed configuration object of a ``clmlf-monitor run`` process (and the broker settings of
``produce``), on the settings layer of :mod:`monitor.settings`.

Every field names its environment variable (docs/architecture.md); :func:`add_run_arguments`
declares the flags, :func:`run_config_from_args` validates everything once into :class:`RunConfig`
(flags win over the environment; bad values exit 2 with one line).  Secrets (Redis URL, SASL
password, alert webhook URL) are ``SecretStr`` and never appear in ``repr`` or logs.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator

from clmlf.process_settings import ProcessSettings, settings_from_args
from clmlf.settings import add_precision_arguments
from consumers.batcher import DEFAULT_GROUP_WINDOW
from monitor.alert_settings import AlertOptions, add_alert_arguments
from monitor.settings import (
    Duration,
    LoggingOptions,
    RedisOptions,
    RetentionOptions,
    add_log_level_argument,
    add_redis_arguments,
    add_retention_arguments,
    format_duration,
)


class KafkaSecurity(ProcessSettings):
    """Broker security settings (from ``KAFKA_SECURITY_PROTOCOL`` etc.; environment only)."""

    protocol: Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(str.upper)] = (
        Field("PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL"))
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, alias="KAFKA_SASL_MECHANISM")
    sasl_username: str | None = Field(None, alias="KAFKA_SASL_USERNAME")
    sasl_password: SecretStr | None = Field(None, alias="KAFKA_SASL_PASSWORD")
    ssl_cafile: str | None = Field(None, alias="KAFKA_SSL_CAFILE")

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


def _bytes(value: Any) -> Any:
    try:
        return parse_size(value, BYTE_UNITS)
    except ValueError as exc:
        raise ValueError(f"{exc} (use e.g. 1GiB, 512MiB or a number of bytes)") from None


def _pixels(value: Any) -> Any:
    try:
        return parse_size(value, PIXEL_UNITS)
    except ValueError as exc:
        raise ValueError(f"{exc} (use e.g. 48M or a number of pixels)") from None


def _optional_topic(value: str | None) -> str | None:
    return None if value in (None, "") else check_topic(value)


Bootstrap = Annotated[str, AfterValidator(check_bootstrap)]
Topic = Annotated[str, AfterValidator(check_topic)]
ByteSize = Annotated[int, BeforeValidator(_bytes)]
PixelCount = Annotated[int, BeforeValidator(_pixels)]


class KafkaTarget(ProcessSettings):
    """The broker and topic of ``run`` and ``produce``."""

    bootstrap: Bootstrap = Field(alias="KAFKA_BOOTSTRAP_SERVERS")
    topic: Topic = Field(alias="KAFKA_TOPIC")
    security: KafkaSecurity = Field(default_factory=KafkaSecurity)


class RunConfig(KafkaTarget, RedisOptions, RetentionOptions, AlertOptions, LoggingOptions):
    """Everything one consumer-group member needs, validated once."""

    group: str = Field(min_length=1, max_length=255, alias="KAFKA_GROUP_ID")
    checkpoint: str | None = Field(None, alias="CLMLF_CHECKPOINT")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="CLMLF_DEVICE")
    precision: Literal["auto", "fp32", "bf16", "int8"] = "auto"  # flag and env: clmlf.settings (shared)
    threads: int | None = Field(default=None, ge=1, le=1024)  # None = from the CPU quota; likewise
    # None = chosen at start-up from the model: 64 for a text-only one, 32 when it reads images (clmlf.model.config.AUTO_BATCH_SIZE)
    max_batch: int | None = Field(default=None, ge=1, le=1024, alias="CLMLF_MAX_BATCH")
    max_wait_ms: float = Field(default=50.0, gt=0, le=60_000, alias="CLMLF_MAX_WAIT_MS")
    # ready posts the model worker may hold to group by token count, as a multiple of max_batch
    batch_pool: int = Field(default=DEFAULT_GROUP_WINDOW, ge=1, le=256, alias="CLMLF_BATCH_POOL")
    metrics_port: int = Field(default=9108, ge=0, le=65535, alias="CLMLF_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=255, alias="CLMLF_METRICS_HOST")
    output_topic: Annotated[str | None, AfterValidator(_optional_topic)] = Field(None, alias="KAFKA_OUTPUT_TOPIC")
    exit_when_idle: Duration | None = Field(default=None, gt=0, alias="CLMLF_EXIT_WHEN_IDLE")
    allow_private_images: bool = Field(False, alias="CLMLF_ALLOW_PRIVATE_IMAGES")
    image_workers: int = Field(default=8, ge=1, le=256, alias="CLMLF_IMAGE_WORKERS")
    image_timeout: Duration = Field(default=5.0, gt=0, le=120, alias="CLMLF_IMAGE_TIMEOUT")
    max_in_flight: int = Field(default=1024, ge=1, le=1_000_000, alias="CLMLF_MAX_IN_FLIGHT")
    max_in_flight_bytes: ByteSize = Field(default=DEFAULT_MAX_IN_FLIGHT_BYTES, ge=1 << 20, le=1 << 40,
                                          alias="CLMLF_MAX_IN_FLIGHT_BYTES")
    max_decode_pixels: PixelCount = Field(default=DEFAULT_MAX_DECODE_PIXELS, ge=1_000_000, le=2_000_000_000,
                                          alias="CLMLF_MAX_DECODE_PIXELS")
    max_image_pixels: PixelCount = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1_000_000, le=2_000_000_000,
                                         alias="CLMLF_MAX_IMAGE_PIXELS")
    shutdown_grace: Duration = Field(default=30.0, ge=0, le=3600, alias="CLMLF_SHUTDOWN_GRACE")
    session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000, alias="KAFKA_SESSION_TIMEOUT_MS")
    max_topic_labels: int = Field(default=50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _image_fits_the_decode_budget(self) -> RunConfig:
        if self.max_image_pixels > self.max_decode_pixels:
            raise ValueError(f"--max-image-pixels ({self.max_image_pixels}) must be at most "
                             f"--max-decode-pixels ({self.max_decode_pixels})")
        return self

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    def describe(self) -> str:
        """One log line with the settings that matter (secrets redacted)."""
        return (
            f"topic={self.topic} group={self.group} bootstrap={self.bootstrap} "
            f"redis={self.display_url} prefix={self.redis_prefix} "
            f"checkpoint={self.checkpoint or '<embedded>'} device={self.device} precision={self.precision} "
            f"threads={self.threads or 'auto'} max_batch={self.max_batch or 'auto'} "
            f"max_wait_ms={self.max_wait_ms:g} batch_pool={self.batch_pool} output_topic={self.output_topic or '-'} "
            f"metrics={self.metrics_host}:{self.metrics_port} security={self.security.protocol} "
            f"max_in_flight={self.max_in_flight}/{self.max_in_flight_bytes / 2**20:.0f}MiB "
            f"decode_pixels={self.max_decode_pixels} image_pixels={self.max_image_pixels} "
            f"retention={format_duration(self.minute_retention)}/"
            f"{format_duration(self.hourly_retention)} alerts={self.alerts_display()}"
        )


def add_kafka_target_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--bootstrap", metavar="HOST:PORT[,..]", help="Kafka bootstrap servers [KAFKA_BOOTSTRAP_SERVERS]")
    parser.add_argument("--topic", help="input topic of posts [KAFKA_TOPIC]")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every ``run`` flag (``dest`` = the :class:`RunConfig` field; no defaults of their own)."""
    kafka = parser.add_argument_group("Kafka")
    add_kafka_target_arguments(kafka)
    kafka.add_argument("--group", help="consumer group; members share the partitions [KAFKA_GROUP_ID]")
    kafka.add_argument("--output-topic",
                       help="also publish each result record here, key = post id [KAFKA_OUTPUT_TOPIC]")
    kafka.add_argument("--session-timeout-ms", help="group session timeout (default 10000) [KAFKA_SESSION_TIMEOUT_MS]")

    store = parser.add_argument_group("Redis")
    add_redis_arguments(store)
    add_retention_arguments(store)

    alerts = parser.add_argument_group("Trend alerts (docs/alerts.md)")
    add_alert_arguments(alerts, interval_flag="--alert-interval")
    alerts.add_argument("--no-alerts", action="store_true",
                        help="no alert evaluation in this member (a dedicated `clmlf-monitor alerter` runs)")

    model = parser.add_argument_group("Model and batching")
    model.add_argument("--checkpoint", metavar="DIR",
                       help="checkpoint directory (default: the embedded model) [CLMLF_CHECKPOINT]")
    model.add_argument("--device", choices=("auto", "cpu", "cuda"),
                       help="auto = CUDA (bf16 autocast) when present, else CPU [CLMLF_DEVICE]")
    add_precision_arguments(model)
    model.add_argument("--max-batch", metavar="N",
                       help="flush a micro-batch at N posts (default auto: 64 for a text-only model, whose bf16 "
                            "forward runs 1.2x faster per post at 64 than at 32, else 32) [CLMLF_MAX_BATCH]")
    model.add_argument("--max-wait-ms", metavar="MS",
                       help="... or when its oldest post waited MS (default 50) [CLMLF_MAX_WAIT_MS]")
    model.add_argument("--batch-pool", metavar="K",
                       help="under backlog, hold up to K x max-batch ready posts and batch the oldest with those "
                            "of closest token count: less padding (default 16) [CLMLF_BATCH_POOL]")

    images = parser.add_argument_group(
        "Images", "A checkpoint trained without images (trained_with_images: false) never fetches or decodes "
        "one: its posts report \"image\": \"ignored\" and these options have no effect.")
    images.add_argument("--allow-private-images", action="store_true", default=None,
                        help="allow image URLs on private/loopback addresses (tests, trusted networks) "
                             "[CLMLF_ALLOW_PRIVATE_IMAGES]")
    images.add_argument("--image-workers", metavar="N",
                        help="concurrent image fetch+decode threads (default 8) [CLMLF_IMAGE_WORKERS]")
    images.add_argument("--image-timeout", metavar="DURATION",
                        help="total time budget per image fetch (default 5s) [CLMLF_IMAGE_TIMEOUT]")
    images.add_argument("--max-decode-pixels", metavar="N",
                        help="decode budget: pixels all image workers together may decode at once, at most "
                             "14 bytes each while decoding (default 48M) [CLMLF_MAX_DECODE_PIXELS]")
    images.add_argument("--max-image-pixels", metavar="N",
                        help="refuse (image: failed) an image whose header declares more pixels; at most "
                             "--max-decode-pixels (default 40M) [CLMLF_MAX_IMAGE_PIXELS]")

    ops = parser.add_argument_group("Operations")
    ops.add_argument("--metrics-port", metavar="P",
                     help="port of /metrics, /healthz, /readyz; 0 = off (default 9108) [CLMLF_METRICS_PORT]")
    ops.add_argument("--metrics-host", metavar="ADDR",
                     help="address the metrics/probe server binds (default 127.0.0.1, this machine only; "
                          "0.0.0.0 where Prometheus scrapes from elsewhere, as the container images set) "
                          "[CLMLF_METRICS_HOST]")
    ops.add_argument("--max-in-flight", metavar="N",
                     help="posts held in memory before partitions are paused (default 1024) [CLMLF_MAX_IN_FLIGHT]")
    ops.add_argument("--max-in-flight-bytes", metavar="SIZE",
                     help="also pause partitions when the posts held take this much memory (raw value, "
                          "base64 image, image tensor), e.g. 512MiB (default 1GiB) [CLMLF_MAX_IN_FLIGHT_BYTES]")
    ops.add_argument("--exit-when-idle", metavar="DURATION",
                     help="exit 0 after this long with nothing to do (scripts, tests) [CLMLF_EXIT_WHEN_IDLE]")
    ops.add_argument("--shutdown-grace", metavar="DURATION",
                     help="on SIGTERM, time to finish in-flight posts (default 30s) [CLMLF_SHUTDOWN_GRACE]")
    add_log_level_argument(ops)


def run_config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RunConfig:
    """Validate the flags, the environment (security included) and the defaults into one :class:`RunConfig`,
    or exit 2."""
    overrides = {"alert_interval": 0.0} if args.no_alerts else {}
    if args.no_alerts:
        args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "alert_interval"})
    return settings_from_args(parser, RunConfig, args, **overrides)
