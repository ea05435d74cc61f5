"""Sinks: write each labelled batch durably, then report its offsets as done.

:class:`SinkWriter` is a thread that takes ``(items, predictions)`` from the
model worker, builds the CONTRACT.md result records (the labelling core's
:func:`~clmlf.serving.labelling.result_record`), writes them to Redis
through the monitor's idempotent store (one atomic script call per batch),
optionally publishes them to the output topic (key = post id, waiting for the
broker's acknowledgement), updates metrics, and only then emits
:class:`~consumers.work.Done` for every post.  Redis or Kafka outages
(infrastructure: connection refused, timeouts, a loading or read-only Redis)
are retried with exponential backoff (tenacity) for as long as it takes;
offsets stay uncommitted meanwhile and the bounded queues push back to the loop.

One record, one fate: any other failure is the record's own.  A batch the store
refuses is split and written post by post; a post that still fails (or whose
result cannot even be built) becomes a :class:`~consumers.work.DeadLetter`
(reason ``store_failed`` / ``result_failed``) and the writer goes on.  A result
the output topic refuses for good (too large) is stored and counted, logged and
counted in ``clmlf_sink_errors_total{sink="output_topic"}``, not published.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception, stop_when_event_set, wait_exponential_jitter

from clmlf.serving.labelling import result_record
from consumers.metrics import PipelineMetrics
from consumers.work import DeadLetter, Done, WorkItem
from contract.posts import ResultRecord
from monitor.store import WriteReport

log = logging.getLogger(__name__)
Retryable = Callable[[BaseException], bool]
# Redis error replies that mean "the server cannot take writes now", not "this write is wrong".
REDIS_BUSY_REPLIES = frozenset({"OOM", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY",
                                "NOREPLICAS", "BUSY", "MISCONF"})
MAX_DETAIL_CHARS = 500


def redis_is_down(exc: BaseException) -> bool:
    """True for Redis failures of the infrastructure (retried, never drop a record), False for errors
    of the data written (the record's own fate: dead letter)."""
    import redis

    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).split(" ", 1)[0].upper() in REDIS_BUSY_REPLIES
    return False


def kafka_is_down(exc: BaseException) -> bool:
    """True for retriable Kafka failures (broker unreachable, timeouts); False for refusals of the record."""
    if isinstance(exc, OSError):
        return True
    return bool(getattr(exc, "retriable", False)) or type(exc).__name__ in ("KafkaTimeoutError",
                                                                            "NoBrokersAvailable")


def as_predicate(retry_on: tuple[type[BaseException], ...] | Retryable) -> Retryable:
    if isinstance(retry_on, tuple):
        return lambda exc: isinstance(exc, retry_on)
    return retry_on


def describe(exc: BaseException) -> str:
    """One line naming an exception (for dead-letter details)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_DETAIL_CHARS]


class SinkAborted(RuntimeError):
    """Shutdown came before the write succeeded: the batch stays uncommitted (redelivered later)."""


def retry_until(fn: Callable[[], Any], abort: threading.Event,
                retry_on: tuple[type[BaseException], ...] | Retryable,
                on_error: Callable[[BaseException], None], max_wait: float = 5.0) -> Any:
    """Call ``fn`` until it succeeds, backing off exponentially (with jitter) up to ``max_wait`` s,
    as long as its failures are retryable (``retry_on``: exception types or a predicate); any
    other exception propagates at once.

    Gives up with :class:`SinkAborted` once ``abort`` is set.
    """
    retryable = as_predicate(retry_on)

    def before_sleep(state: Any) -> None:
        on_error(state.outcome.exception())

    retrying = Retrying(
        retry=retry_if_exception(retryable),
        wait=wait_exponential_jitter(initial=0.1, max=max_wait),
        stop=stop_when_event_set(abort),
        before_sleep=before_sleep,
        sleep=abort.wait,
        reraise=True,
    )
    try:
        return retrying(fn)
    except Exception as exc:
        if abort.is_set() and retryable(exc):
            raise SinkAborted(str(exc)) from exc
        raise


class SinkWriter(threading.Thread):
    """Stores labelled batches and reports their offsets done (or their posts dead)."""

    def __init__(self, batches: queue.Queue, done: Callable[[Done | DeadLetter], None], store: Any,
                 model_name: str, metrics: PipelineMetrics,
                 redis_errors: tuple[type[BaseException], ...] | Retryable,
                 output: Any = None, output_topic: str | None = None,
                 kafka_errors: tuple[type[BaseException], ...] | Retryable = (Exception,),
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="sink-writer", daemon=True)
        self._batches = batches
        self._done = done
        self._store = store
        self._model_name = model_name
        self._metrics = metrics
        self._redis_down = as_predicate(redis_errors)
        self._output = output
        self._output_topic = output_topic
        self._kafka_down = as_predicate(kafka_errors)
        self._clock = clock
        self._stop_event = threading.Event()
        self.abort = threading.Event()
        self.error: BaseException | None = None

    def stop(self, abort: bool = False) -> None:
        """Exit once the queue is drained; ``abort`` also gives up on a write being retried."""
        self._stop_event.set()
        if abort:
            self.abort.set()

    def run(self) -> None:
        try:
            while not (self._stop_event.is_set() and self._batches.empty()) and not self.abort.is_set():
                try:
                    items, predictions = self._batches.get(timeout=0.1)
                except queue.Empty:
                    continue
                try:
                    self.write(items, predictions)
                except SinkAborted:
                    log.warning("shutdown before %d results were stored; they stay uncommitted", len(items))
                    return
        except BaseException as exc:
            self.error = exc
            log.exception("sink writer died")

    def write(self, items: Sequence[WorkItem], predictions: Sequence[Any]) -> None:
        """Store one batch durably, then emit Done for each live item (DeadLetter for a post that
        cannot be stored).  Only :class:`SinkAborted` (shutdown during an outage) escapes."""
        if len(items) != len(predictions):  # a broken predictor: no post gets a wrong label
            for item in items:
                self._dead_letter(item, "inference_failed",
                                  f"predictor returned {len(predictions)} results for {len(items)} posts")
            return
        live = [(item, pred) for item, pred in zip(items, predictions, strict=True) if not item.lease.revoked]
        if not live:
            return
        now = self._clock()
        ready = []
        for item, pred in live:
            try:
                result = result_record(item.post, pred, image=item.image_status, model=self._model_name,
                                       received_at=item.record_time, processed_at=now)
                result.to_json().encode("utf-8")  # what the store and the output topic will need
            except Exception as exc:
                self._dead_letter(item, "result_failed", describe(exc))
                continue
            ready.append((item, pred, result))
        if ready:
            self._store_and_report(ready)

    def _store_and_report(self, ready: list[tuple[WorkItem, Any, ResultRecord]]) -> None:
        results = [(result, item.event_time) for item, _, result in ready]
        try:
            report = retry_until(lambda: self._store.record(results), self.abort, self._redis_down,
                                 self._sink_error("redis"))
        except SinkAborted:
            raise
        except Exception as exc:  # the data, not Redis: find the post(s) at fault
            if len(ready) == 1:
                log.warning("post %r could not be stored (dead-lettered): %s", ready[0][0].post.id, describe(exc))
                self._dead_letter(ready[0][0], "store_failed", describe(exc))
                return
            log.warning("a batch of %d could not be stored (%s); storing its posts one by one", len(ready),
                        describe(exc))
            for one in ready:
                self._store_and_report([one])
            return
        if self._output is not None and self._output_topic:
            self._publish_all([result for _, _, result in ready])
        self._report(ready, report)

    def _report(self, ready: list[tuple[WorkItem, Any, ResultRecord]], report: WriteReport) -> None:
        stored = self._clock()
        m = self._metrics
        try:
            for kind, count in report.out_of_window.items():
                m.out_of_window.labels(kind=kind).inc(count)
            for item, pred, result in ready:
                m.count_processed(pred.label, result.topics)
                m.end_to_end_latency.labels(source="event").observe(max(0.0, stored - item.event_time))
                m.end_to_end_latency.labels(source="ingest").observe(max(0.0, stored - item.record_time))
            m.last_progress.set(stored)
        except Exception as exc:  # metrics never decide a post's fate: it is stored
            log.warning("metrics update failed: %s", describe(exc))
        for item, _, _ in ready:
            self._done(Done(item.lease, item.offset))

    def _publish_all(self, results: list[ResultRecord]) -> None:
        try:
            retry_until(lambda: self._publish(results), self.abort, self._kafka_down,
                        self._sink_error("output_topic"))
        except SinkAborted:
            raise
        except Exception as exc:
            if len(results) > 1:
                for result in results:
                    self._publish_all([result])
                return
            self._metrics.sink_errors.labels(sink="output_topic").inc()
            log.warning("output topic refused the result of %r (stored and counted, not published): %s",
                        results[0].id, describe(exc))

    def _publish(self, results: list[ResultRecord]) -> None:
        futures = [self._output.send(self._output_topic, key=r.id.encode("utf-8"), value=r.to_json().encode())
                   for r in results]
        self._output.flush(timeout=10)
        for future in futures:
            future.get(timeout=10)

    def _dead_letter(self, item: WorkItem, reason: str, detail: str) -> None:
        if not item.lease.revoked:
            self._done(DeadLetter(item, reason, detail))

    def _sink_error(self, sink: str) -> Callable[[BaseException], None]:
        def on_error(exc: BaseException) -> None:
            self._metrics.sink_errors.labels(sink=sink).inc()
            log.warning("%s write failed, retrying: %s", sink, exc)
        return on_error
