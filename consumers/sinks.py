"""Sinks: write each labelled batch durably, then report its offsets as done.

:class:`SinkWriter` is a thread that takes ``(items, predictions)`` from the
model worker, builds the CONTRACT.md result records, writes them to Redis
through the monitor's idempotent store (one atomic script call per batch),
optionally publishes them to the output topic (key = post id, waiting for the
broker's acknowledgement), updates metrics, and only then emits
:class:`~consumers.work.Done` for every post.  Redis or Kafka outages are
retried with exponential backoff (tenacity) for as long as it takes; offsets
stay uncommitted meanwhile and the bounded queues push back to the loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_when_event_set, wait_exponential_jitter

from clmlf.posts import ResultRecord, build_result
from consumers.metrics import PipelineMetrics
from consumers.work import Done, WorkItem

log = logging.getLogger(__name__)


class SinkAborted(RuntimeError):
    """Shutdown came before the write succeeded: the batch stays uncommitted (redelivered later)."""


def retry_until(fn: Callable[[], Any], abort: threading.Event, retry_on: tuple[type[BaseException], ...],
                on_error: Callable[[BaseException], None], max_wait: float = 5.0) -> Any:
    """Call ``fn`` until it succeeds, backing off exponentially (with jitter) up to ``max_wait`` s.

    Gives up with :class:`SinkAborted` once ``abort`` is set.
    """
    def before_sleep(state: Any) -> None:
        on_error(state.outcome.exception())

    retrying = Retrying(
        retry=retry_if_exception_type(retry_on),
        wait=wait_exponential_jitter(initial=0.1, max=max_wait),
        stop=stop_when_event_set(abort),
        before_sleep=before_sleep,
        sleep=abort.wait,
        reraise=True,
    )
    try:
        return retrying(fn)
    except retry_on as exc:
        raise SinkAborted(str(exc)) from exc


class SinkWriter(threading.Thread):
    """Stores labelled batches and reports their offsets done."""

    def __init__(self, batches: queue.Queue, done: Callable[[Done], None], store: Any, model_name: str,
                 metrics: PipelineMetrics, redis_errors: tuple[type[BaseException], ...],
                 output: Any = None, output_topic: str | None = None,
                 kafka_errors: tuple[type[BaseException], ...] = (Exception,),
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="sink-writer", daemon=True)
        self._batches = batches
        self._done = done
        self._store = store
        self._model_name = model_name
        self._metrics = metrics
        self._redis_errors = redis_errors
        self._output = output
        self._output_topic = output_topic
        self._kafka_errors = kafka_errors
        self._clock = clock
        self._stop_event = threading.Event()
        self.abort = threading.Event()
        self.busy = False
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
                self.busy = True
                try:
                    self.write(items, predictions)
                except SinkAborted:
                    log.warning("shutdown before %d results were stored; they stay uncommitted", len(items))
                    return
                finally:
                    self.busy = False
        except BaseException as exc:
            self.error = exc
            log.exception("sink writer died")

    def write(self, items: Sequence[WorkItem], predictions: Sequence[Any]) -> None:
        """Store one batch durably, then emit Done for each live item."""
        live = [(item, pred) for item, pred in zip(items, predictions, strict=True) if not item.lease.revoked]
        if not live:
            return
        now = self._clock()
        results = [
            (build_result(item.post, pred.label, pred.scores, event_time=item.event_time, processed_at=now,
                          model=self._model_name, image=item.image_status), item.event_time)
            for item, pred in live
        ]
        report = retry_until(lambda: self._store.record(results), self.abort, self._redis_errors,
                             self._sink_error("redis"))
        if self._output is not None and self._output_topic:
            retry_until(lambda: self._publish([r for r, _ in results]), self.abort, self._kafka_errors,
                        self._sink_error("output_topic"))
        stored = self._clock()
        m = self._metrics
        for kind, count in getattr(report, "out_of_window", {}).items():
            m.out_of_window.labels(kind=kind).inc(count)
        for (item, pred), (result, _) in zip(live, results, strict=True):
            m.count_processed(pred.label, result.topics)
            m.end_to_end_latency.labels(source="event").observe(max(0.0, stored - item.event_time))
            m.end_to_end_latency.labels(source="ingest").observe(max(0.0, stored - item.record_time))
        m.last_progress.set(stored)
        for item, _ in live:
            self._done(Done(item.lease, item.offset))

    def _publish(self, results: list[ResultRecord]) -> None:
        futures = [self._output.send(self._output_topic, key=r.id.encode("utf-8"), value=r.to_json().encode())
                   for r in results]
        self._output.flush(timeout=10)
        for future in futures:
            future.get(timeout=10)

    def _sink_error(self, sink: str) -> Callable[[BaseException], None]:
        def on_error(exc: BaseException) -> None:
            self._metrics.sink_errors.labels(sink=sink).inc()
            log.warning("%s write failed, retrying: %s", sink, exc)
        return on_error
