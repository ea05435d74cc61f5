"""Builds a ready-to-run :class:`~consumers.pipeline.Pipeline` from one :class:`RunConfig`.

Kept apart from the command so the demo and the benchmark assemble the exact
same pipeline in-process.  Heavy imports (torch, the model) happen here, not at
import time of the CLI.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from consumers.alert_gauge import TopicCappedGauge
from consumers.config import RunConfig
from consumers.decode_budget import DecodeBudget
from consumers.dlq import DeadLetterWriter
from consumers.health import HealthServer
from consumers.image_stage import ImageStage
from consumers.loop_settings import LoopSettings
from consumers.metrics import PipelineMetrics
from consumers.pipeline import Pipeline
from consumers.sinks import SinkWriter, kafka_is_down, redis_is_down
from consumers.work import WorkItem
from consumers.worker import ModelWorker
from monitor.alert_loop import AlertLoop

log = logging.getLogger(__name__)

# A broker that cannot be reached at start-up ends the process (exit 1) after this long;
# once running, outages are retried for as long as they last.
BOOTSTRAP_TIMEOUT_MS = 10_000
FINAL_ALERT_MIN_SECONDS = 2.0  # the final evaluation's budget when the drain left less of the grace
PROBE_REDIS_TIMEOUT = 1.0  # seconds; Kubernetes gives /readyz 3 s


@dataclass
class Assembled:
    """A pipeline plus the resources its owner must close."""

    pipeline: Pipeline
    metrics: PipelineMetrics
    health: HealthServer | None
    alerts: AlertLoop | None
    closers: list[Any]

    def run(self) -> int:
        """Run the pipeline until it stops; after a clean stop (final commit done) evaluate the
        trend alerts once more, so the last stored posts are judged before the process exits.
        That evaluation shares the stop's grace period, and is skipped when the drain used it up
        (Redis down or hung: it could not succeed, and the stop must not overrun its grace)."""
        status = self.pipeline.run()
        if status == 0 and self.alerts is not None:
            if self.pipeline.drained:
                self.alerts.final_evaluation(timeout=max(FINAL_ALERT_MIN_SECONDS, self.pipeline.time_left()))
            else:
                log.warning("final alert evaluation skipped: the stop did not finish its posts in time")
                self.alerts.close(timeout=0)
        return status

    def close(self) -> None:
        if self.health is not None:
            self.health.close()
        if self.alerts is not None:
            self.alerts.close(timeout=min(1.0, self.pipeline.time_left()))
        for resource in self.closers:
            try:
                resource.close()
            except Exception as exc:  # best effort on the way out
                log.debug("close %r: %s", resource, exc)


def auto_max_batch(predictor: Any) -> int:
    """The micro-batch cap for ``predictor`` when none is configured (``AUTO_BATCH_SIZE`` of its model)."""
    from clmlf.model.config import auto_batch_size

    return auto_batch_size(getattr(getattr(predictor, "loaded", None), "config", None))


def load_predictor(config: RunConfig) -> Any:
    """The model, owned later by the worker thread (embedded default when no checkpoint)."""
    from clmlf.serving.inference import Predictor

    return Predictor.from_checkpoint(config.checkpoint, device=config.device, batch_size=config.max_batch,
                                     precision=config.precision)


def predict_fn(labeller: Any):
    """Adapter: work items -> the labelling core's predict (one forward per micro-batch)."""
    def predict(items: Sequence[WorkItem]) -> list[Any]:
        return labeller.predict([it.post for it in items], [it.image for it in items], batch_size=len(items),
                                tokens=[it.tokens for it in items])

    return predict


def kafka_producer(config: RunConfig) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=config.bootstrap.split(","), acks="all", linger_ms=5,
                         max_block_ms=5000, request_timeout_ms=10_000, retries=5,
                         bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
                         **config.security.client_kwargs())


def kafka_consumer(config: RunConfig) -> Any:
    from kafka import KafkaConsumer

    session = config.session_timeout_ms
    return KafkaConsumer(
        bootstrap_servers=config.bootstrap.split(","),
        group_id=config.group,
        client_id=f"clmlf-monitor-{config.group}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session,
        heartbeat_interval_ms=max(300, session // 4),
        max_poll_interval_ms=max(300_000, session),
        max_poll_records=max(100, config.max_batch * 4),
        request_timeout_ms=max(30_000, session + 5000),
        reconnect_backoff_max_ms=2000,
        fetch_max_wait_ms=100,  # an idle partition answers within 100 ms: new posts are seen quickly
        # one fetch is what a poll can add beyond --max-in-flight-bytes: keep it a small part of it
        fetch_max_bytes=fetch_bytes_for(config.max_in_flight_bytes),
        max_partition_fetch_bytes=min(1 << 20, fetch_bytes_for(config.max_in_flight_bytes)),
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        **config.security.client_kwargs(),
    )


def fetch_bytes_for(max_in_flight_bytes: int) -> int:
    """Kafka ``fetch_max_bytes`` for a byte budget: 1/16 of it, within 1..50 MiB (the client's
    default).  A record larger than this is still fetched, alone."""
    return max(1 << 20, min(50 << 20, max_in_flight_bytes // 16))


def assemble(config: RunConfig, predictor: Any | None = None, metrics: PipelineMetrics | None = None,
             serve_http: bool = True) -> Assembled:
    """Everything a ``run`` member needs, wired, not started."""
    import redis

    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher
    from clmlf.serving.labelling import Labeller
    from monitor import redis_client as monitor_redis
    from monitor.store import SentimentStore

    metrics = metrics or PipelineMetrics(max_topics=config.max_topic_labels)
    predictor = predictor or load_predictor(config)
    if config.max_batch is None:
        config = config.model_copy(update={"max_batch": auto_max_batch(predictor)})
        log.info("micro-batch cap %d (auto: 64 for a text-only model, 32 for one that reads images)",
                 config.max_batch)
    device = str(getattr(predictor, "device", config.device))
    plan = getattr(predictor, "precision", None)
    precision = plan.label if plan is not None else config.precision
    metrics.model_info.labels(model=predictor.model_name, device=device, precision=precision).set(1)

    redis_client = monitor_redis.redis_client(config.redis_url, monitor_redis.CONSUMER)
    store = SentimentStore(redis_client, prefix=config.redis_prefix, **config.store_kwargs())
    # The readiness probe's own client: a hung Redis must fail the probe within its 3 s timeout.
    probe_client = monitor_redis.redis_client(config.redis_url, monitor_redis.probe(PROBE_REDIS_TIMEOUT))
    fetcher = ImageFetcher(FetchConfig(allow_private=config.allow_private_images,
                                       total_timeout=config.image_timeout,
                                       read_timeout=min(5.0, config.image_timeout),
                                       connect_timeout=min(3.0, config.image_timeout),
                                       max_connections=max(config.image_workers, 1)))
    producer = kafka_producer(config)
    consumer = kafka_consumer(config)

    bound = config.max_in_flight * 2 + config.max_batch
    ready: queue.Queue[WorkItem] = queue.Queue(maxsize=bound)
    sink_queue: queue.Queue = queue.Queue(maxsize=max(4, bound // max(1, config.max_batch)))
    completions: queue.Queue = queue.Queue()  # holds at most one message per in-flight post

    def count_image(outcome: str) -> None:
        metrics.image_fetch.labels(outcome=outcome).inc()

    labeller = Labeller.for_predictor(
        predictor, fetcher.post_image_bytes, max_image_pixels=config.max_image_pixels,
        budget=DecodeBudget(config.max_decode_pixels, on_change=metrics.decode_pixels.set))
    if not labeller.uses_images:  # a text-only checkpoint: images are neither fetched nor decoded ("ignored")
        log.info("model %s was trained without images: post images are ignored", predictor.model_name)
    images = ImageStage(ready, labeller.images, config.image_workers, count_image)

    def observe(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.inference_seconds.observe(seconds)

    worker = ModelWorker(ready, sink_queue, completions.put, predict_fn(labeller), config.max_batch,
                         config.max_wait_ms / 1000.0, observe, group_window=config.batch_pool)
    sink = SinkWriter(sink_queue, completions.put, store, predictor.model_name, metrics,
                      redis_errors=redis_is_down,
                      output=producer if config.output_topic else None, output_topic=config.output_topic,
                      kafka_errors=kafka_is_down)
    dlq = DeadLetterWriter(producer, on_error=lambda: metrics.sink_errors.labels(sink="dlq").inc())
    image_size = int(predictor.preprocessor.config.image_size)
    settings = LoopSettings(topic=config.topic, dlq_topic=config.dlq_topic, max_in_flight=config.max_in_flight,
                            exit_when_idle=config.exit_when_idle, shutdown_grace=config.shutdown_grace,
                            max_in_flight_bytes=config.max_in_flight_bytes,
                            image_tensor_bytes=3 * image_size * image_size * 4)
    pipeline = Pipeline(settings, consumer, dlq, images, ready, worker, sink_queue, sink, completions, metrics,
                        encode_text=labeller.encode)

    health = None
    if serve_http and config.metrics_port:
        def ready_probe() -> tuple[bool, str]:
            assigned, reason = pipeline.has_assignment()
            if not assigned:
                return False, reason
            try:
                probe_client.ping()
            except (redis.RedisError, OSError) as exc:
                return False, f"redis: {type(exc).__name__}"
            return True, reason

        health = HealthServer(config.metrics_host, config.metrics_port, metrics.render, pipeline.healthy,
                              ready_probe).start()
    closers: list[Any] = [_Closer(producer.close, 5), fetcher, redis_client, probe_client]
    alerts = None
    if config.alert_interval:
        alerts, webhook = alert_loop(config, store, metrics, (redis.RedisError, OSError))
        if webhook is not None:
            closers.insert(0, webhook)
        alerts.start()
    return Assembled(pipeline, metrics, health, alerts, closers)


def alert_loop(config: RunConfig, store: Any, metrics: PipelineMetrics,
               redis_errors: tuple[type[BaseException], ...]) -> tuple[AlertLoop, Any]:
    """The member's trend-alert evaluator (not started) and its webhook notifier (or None)."""
    from monitor.alerts import AlertEngine
    from monitor.webhook import WebhookNotifier

    webhook = WebhookNotifier(config.alert_webhook.get_secret_value()) if config.alert_webhook else None
    engine = AlertEngine(store, config.alert_config(), webhook=webhook,
                         gauge=TopicCappedGauge(metrics.alert_active, metrics.topic_label))
    return AlertLoop(engine.evaluate, config.alert_interval, redis_errors), webhook


class _Closer:
    def __init__(self, fn: Any, *args: Any) -> None:
        self._fn, self._args = fn, args

    def close(self) -> None:
        self._fn(*self._args)
