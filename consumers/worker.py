"""The model worker: the one thread that owns the model.

It pulls ready posts into a :class:`~consumers.batcher.MicroBatcher`, runs a
micro-batch whenever one is due (size, age) and hands ``(items, predictions)``
to the sink queue.  If a batch raises, each post is retried alone; a post that
still fails becomes a dead letter (reason ``inference_failed``), so one poison
post never stalls its partition.  On stop it flushes what it holds.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from consumers.batcher import DEFAULT_GROUP_WINDOW, MicroBatcher
from consumers.work import DeadLetter, WorkItem

PredictFn = Callable[[Sequence[WorkItem]], list[Any]]
log = logging.getLogger(__name__)


class ModelWorker(threading.Thread):
    """Batches ready posts and runs the model on them."""

    def __init__(self, ready: queue.Queue[WorkItem], out: queue.Queue, dead: Callable[[DeadLetter], None],
                 predict: PredictFn, max_batch: int, max_wait: float,
                 observe_batch: Callable[[int, float], None] = lambda size, seconds: None,
                 idle_tick: float = 0.1, group_window: int = DEFAULT_GROUP_WINDOW) -> None:
        """``group_window``: the batcher holds up to ``group_window * max_batch`` posts to group by length."""
        super().__init__(name="model-worker", daemon=True)
        self._ready = ready
        self._out = out
        self._dead = dead
        self._predict = predict
        self._observe = observe_batch
        self._tick = idle_tick
        self.batcher: MicroBatcher[WorkItem] = MicroBatcher(max_batch, max_wait, lambda it: it.text_length,
                                                            group_window=group_window)
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def stop(self) -> None:
        """Finish: flush everything queued, then exit."""
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the consumer loop's health check
            self.error = exc
            log.exception("model worker died")

    def _loop(self) -> None:
        while True:
            stopping = self._stop_event.is_set()
            wait = self.batcher.time_until_due(time.monotonic())
            timeout = self._tick if wait is None else min(wait, self._tick)
            if not self.batcher.full:
                try:
                    item = self._ready.get(timeout=timeout) if timeout > 0 and not stopping else \
                        self._ready.get_nowait()
                    self.batcher.add(item, time.monotonic())
                    while not self.batcher.full:
                        self.batcher.add(self._ready.get_nowait(), time.monotonic())
                except queue.Empty:
                    pass
            now = time.monotonic()
            if self.batcher.due(now) or (stopping and len(self.batcher)):
                self._run_batch(self.batcher.take())
            elif stopping and self._ready.empty() and not len(self.batcher):
                return

    def _run_batch(self, batch: list[WorkItem]) -> None:
        batch = [item for item in batch if not item.lease.revoked]
        if not batch:
            return
        started = time.perf_counter()
        try:
            predictions = list(self._predict(batch))
            if len(predictions) != len(batch):
                raise RuntimeError(f"predictor returned {len(predictions)} results for {len(batch)} posts")
        except Exception:
            log.exception("inference failed on a batch of %d; retrying one by one", len(batch))
            self._one_by_one(batch)
            return
        self._observe(len(batch), time.perf_counter() - started)
        self._out.put((batch, predictions))

    def _one_by_one(self, batch: list[WorkItem]) -> None:
        for item in batch:
            try:
                predictions = list(self._predict([item]))
                if len(predictions) != 1:
                    raise RuntimeError(f"predictor returned {len(predictions)} results for 1 post")
                prediction = predictions[0]
            except Exception as exc:
                self._dead(DeadLetter(item, "inference_failed", " ".join(f"{type(exc).__name__}: {exc}".split())[:500]))
                continue
            self._out.put(([item], [prediction]))
