"""The consumer loop: poll, validate, dead-letter, dispatch, commit.

One thread (the caller of :meth:`Pipeline.run`) owns the Kafka consumer and the
:class:`~consumers.offsets.OffsetTracker`.  Each iteration it

1. collects finished offsets (sink writer, dead-letter writer) into the tracker;
2. commits, per partition, the highest offset below which everything is done;
3. pauses all partitions when ``max_in_flight`` posts, or ``max_in_flight_bytes``
   of them (raw value, base64 image, image tensor), are held, and resumes them when
   both are back at half (so every queue stays bounded and memory flat; nothing is
   dropped: unpolled records simply wait in Kafka);
4. polls records, dead-letters invalid ones, encodes the text of valid ones (off the
   model thread) and hands them to the image stage, which feeds the model worker,
   which feeds the sink writer.

Rebalances: on revoke, finished work of the revoked partitions is committed and
unfinished work dropped (its lease is revoked; the new owner gets it again).
Stop (SIGTERM/SIGINT, idle timeout): stop taking records, let in-flight posts
finish within the grace period, commit, close.  Delivery is at-least-once;
counting is exactly-once because the Redis write is idempotent by post id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.backpressure import Backpressure
from consumers.dlq import DeadLetterWriter
from consumers.image_stage import ImageStage
from consumers.loop_settings import LoopSettings
from consumers.metrics import PipelineMetrics
from consumers.offsets import OffsetTracker
from consumers.positions import refresh_lag, rewind_to_committed, seek_partition
from consumers.rebalance import RebalanceListener, partition_names
from consumers.sinks import SinkWriter
from consumers.work import DeadLetter, Done, WorkItem, post_bytes
from consumers.worker import ModelWorker
from contract.posts import InvalidPost, Post, parse_post

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.5  # seconds between routine commits
LAG_INTERVAL = 2.0  # seconds between consumer-lag gauge refreshes
STARTUP_READY_WINDOW = 60.0  # /readyz tolerates no assignment for this long after start


class Pipeline:
    """Wires consumer -> image stage -> model worker -> sink writer and runs the consumer loop."""

    def __init__(self, settings: LoopSettings, consumer: Any, dlq: DeadLetterWriter, images: ImageStage,
                 ready: queue.Queue, worker: ModelWorker, sink_queue: queue.Queue, sink: SinkWriter,
                 completions: queue.Queue, metrics: PipelineMetrics,
                 encode_text: Callable[[Post], Any] | None = None) -> None:
        """``encode_text``: the labeller's text encoding, run here on the consumer loop so the model
        thread only pads (and the micro-batcher groups posts by token count); None: the model encodes."""
        self.settings = settings
        self.encode_text = encode_text
        self.consumer = consumer
        self.dlq = dlq
        self.images = images
        self.ready = ready
        self.worker = worker
        self.sink_queue = sink_queue
        self.sink = sink
        self.completions = completions
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.stop_event = threading.Event()
        self.started_at = time.monotonic()
        self.heartbeat = time.monotonic()
        self.backpressure = Backpressure(settings.max_in_flight, settings.max_in_flight_bytes)
        self._last_commit = 0.0
        self._last_lag = 0.0
        self._last_activity = time.monotonic()
        self.stop_deadline: float | None = None  # set when the stop (drain) begins
        self.drained = False  # the stop finished every in-flight post within the grace period
        self._joined = False
        self._deferred: list[DeadLetter] = []
        # Why the last word on offsets cannot be "committed": a commit that failed and was not yet
        # followed by a successful one, or finished work of lost partitions that never got committed.
        self._commit_failed = False
        self._lost_uncommitted: set[TopicPartition] = set()
        # Where to restart partitions revoked with work dropped, should they come back to this member:
        # kafka-python 3 keeps the fetch position of a partition that is revoked and assigned again
        # in one rebalance, and that position is past the dropped work.
        self._resume: dict[TopicPartition, int] = {}

    # ----------------------------------------------------------------- probes

    def healthy(self, max_age: float = 30.0) -> tuple[bool, str]:
        """Loop heartbeat fresh and the worker threads alive."""
        age = time.monotonic() - self.heartbeat
        for thread in (self.worker, self.sink):
            if thread.error is not None:
                return False, f"{thread.name} died: {type(thread.error).__name__}"
        if age > max_age:
            return False, f"consumer loop stalled for {age:.0f}s"
        return True, f"heartbeat {age:.1f}s ago"

    def has_assignment(self) -> tuple[bool, str]:
        if self.tracker.partitions:
            return True, f"{len(self.tracker.partitions)} partitions assigned"
        if time.monotonic() - self.started_at < STARTUP_READY_WINDOW:
            return True, "starting up"
        return False, "no partitions assigned"

    # ------------------------------------------------------------- rebalance

    def subscribe(self) -> None:
        self.consumer.subscribe([self.settings.topic], listener=RebalanceListener(self))

    def on_assigned(self, partitions: list[TopicPartition]) -> None:
        if not self._joined:
            self._joined = True
            self._last_activity = time.monotonic()  # the idle clock starts once the group is joined
        with self.tracker.locked():
            resume, self._resume = self._resume, {}
            for tp in partitions:
                self.tracker.assign(tp)
                if tp in resume:
                    seek_partition(self.consumer, tp, resume[tp])
                    # Everything below the resume point was finished under the old lease; commit it
                    # now (it may never have been: a revoke's or a loss's commit can fail).
                    self.tracker.done_below(tp, resume[tp])
                    self._lost_uncommitted.discard(tp)
        self.backpressure.paused = False  # a fresh assignment starts unpaused; step 3 re-applies it
        self.metrics.assigned_partitions.set(len(self.tracker.partitions))
        log.info("assigned %s", partition_names(partitions))

    def revoke_commit_points(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Finished work of partitions about to be revoked, as commit points."""
        self._collect(resend=False)
        return self.tracker.commit_points(partitions)

    def revoke_committed(self, points: dict[TopicPartition, int]) -> None:
        self.tracker.committed(points)

    def note_lost_uncommitted(self, partitions: list[TopicPartition]) -> None:
        """Lost partitions are dropped without a commit: remember if finished work went uncommitted."""
        self._collect(resend=False)
        points = self.tracker.commit_points(partitions)
        if points:
            self._lost_uncommitted.update(points)
            log.warning("lost %s before committing their finished work (redelivered to the next owner, "
                        "counted once)", partition_names(list(points)))

    def on_revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        if not partitions:
            return
        with self.tracker.locked():
            for tp in partitions:
                point = self.tracker.resume_point(tp)
                if point is not None:
                    self._resume[tp] = min(point, self._resume.get(tp, point))
            dropped = self.tracker.revoke(partitions)
        for tp in partitions:
            try:
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        self.metrics.assigned_partitions.set(len(self.tracker.partitions))
        log.info("%s %s (%d unfinished posts dropped, redelivered to the next owner)",
                 "lost" if lost else "revoked", partition_names(partitions), dropped)

    # ------------------------------------------------------------------ loop

    def run(self) -> int:
        """Run until stopped; returns the exit status (0 = clean)."""
        self.worker.start()
        self.sink.start()
        self.subscribe()
        try:
            while not self.stop_event.is_set():
                self._iteration(poll=True)
                if self._idle_expired():
                    log.info("idle for %.0fs: exiting", self.settings.exit_when_idle)
                    break
                if self.worker.error or self.sink.error:
                    log.error("a pipeline thread died; exiting so the orchestrator restarts this member")
                    return 1
            return self._drain()
        finally:
            self._close()

    def stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler or another thread)."""
        self.stop_event.set()

    def _iteration(self, poll: bool) -> None:
        self._collect()
        now = time.monotonic()
        if now - self._last_commit >= COMMIT_INTERVAL:
            self._commit()
        self.backpressure.apply(self.consumer, self.tracker.pending(), self.tracker.held_bytes(),
                                force_pause=not poll)
        room = max(1, self.settings.max_in_flight - self.tracker.pending())
        before = self.tracker.leases()
        try:
            batches = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=room)
        except KafkaError as exc:
            log.warning("poll failed, retrying: %s", exc)
            time.sleep(0.5)
            batches = {}
        if poll:
            self._take_batches(batches, before)
        # else: partitions are paused, nothing should arrive; anything that did is redelivered later
        self.heartbeat = time.monotonic()
        self._update_gauges()

    def _take_batches(self, batches: dict[TopicPartition, list[Any]], before: dict[Any, Any]) -> None:
        """Take polled records, unless a rebalance overtook them.

        kafka-python 3 runs rebalances on its IO thread, also while this thread is
        between ``poll()`` and here.  Records of a partition revoked meanwhile are
        dropped (the new owner reads them from the last commit).  Records of a
        partition revoked *and* assigned again meanwhile may predate the revoke:
        taking them under the new lease would let its commit point skip the work
        the revoke dropped, so they are dropped too and the partition is rewound to
        its committed offset.  The tracker's lock keeps rebalance callbacks out
        while the check and the taking happen.
        """
        rewind = []
        with self.tracker.locked():
            for tp, records in batches.items():
                lease = self.tracker.lease(tp)
                if lease is None or (tp in before and before[tp] is not lease):
                    log.info("dropping %d records of %s[%d] polled before a rebalance", len(records),
                             tp.topic, tp.partition)
                    if lease is not None:
                        rewind.append(tp)
                    elif records:  # should the partition come back with its position kept: restart here
                        first = records[0].offset
                        self._resume[tp] = min(first, self._resume.get(tp, first))
                    continue
                for record in records:
                    self._take(tp, record)
        for tp in rewind:
            rewind_to_committed(self.consumer, tp)

    def _take(self, tp: TopicPartition, record: Any) -> None:
        lease = self.tracker.start_owned(tp, record.offset, nbytes=len(record.value or b""))
        if lease is None:  # not owned (callers check first; kept as a guard)
            return
        self._last_activity = time.monotonic()
        value = record.value
        try:
            post = parse_post(value)
        except InvalidPost as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:  # parse_post is total; one record, one fate all the same
            reason, detail = "unparseable", " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        else:
            tokens = self._encode(post)
            self.tracker.hold(lease, record.offset, post_bytes(post, self.settings.image_tensor_bytes, tokens))
            self.images.submit(WorkItem(lease=lease, topic=tp.topic, partition=tp.partition,
                                        offset=record.offset, key=record.key, raw=value, post=post,
                                        record_time=record.timestamp / 1000.0, received=time.monotonic(),
                                        tokens=tokens))
            return
        self.metrics.dlq.labels(reason=reason).inc()
        self.dlq.submit(lease, dlq_topic=self.settings.dlq_topic, source_topic=tp.topic,
                        partition=tp.partition, offset=record.offset, key=record.key, value=value,
                        timestamp_ms=record.timestamp, reason=reason, detail=detail)

    def _encode(self, post: Post) -> Any:
        """The post's tokens, or None (the model worker encodes it) when there is no encoder or it fails."""
        if self.encode_text is None:
            return None
        try:
            return self.encode_text(post)
        except Exception as exc:  # never lose a valid post to its encoding: the model thread tries again
            log.warning("post %r: text encoding failed on the consumer loop (%s)", post.id, type(exc).__name__)
            return None

    def _collect(self, resend: bool = True) -> None:
        """Move finished offsets (sinks, dead letters) into the tracker.

        ``resend=False`` (inside a rebalance callback) sends nothing: new dead
        letters wait for the next normal call.
        """
        while True:
            try:
                message = self.completions.get_nowait()
            except queue.Empty:
                break
            if isinstance(message, Done):
                self.tracker.finish(message.lease, message.offset)
            elif isinstance(message, DeadLetter):
                self._deferred.append(message)
        if resend:
            deferred, self._deferred = self._deferred, []
            for message in deferred:
                self._dead_letter(message)
        dead_lettered = self.dlq.completed(resend=resend)
        for lease, offset in dead_lettered:
            self.tracker.finish(lease, offset)
        if dead_lettered:
            self.metrics.last_progress.set(time.time())

    def _dead_letter(self, message: DeadLetter) -> None:
        item = message.item
        if item.lease.revoked:
            return
        self.metrics.dlq.labels(reason=message.reason).inc()
        self.dlq.submit(item.lease, dlq_topic=self.settings.dlq_topic, source_topic=item.topic,
                        partition=item.partition, offset=item.offset, key=item.key, value=item.raw,
                        timestamp_ms=int(item.record_time * 1000), reason=message.reason, detail=message.detail)

    def _commit(self, partitions: list[TopicPartition] | None = None) -> bool:
        self._last_commit = time.monotonic()
        points = self.tracker.commit_points(partitions)
        if not points:
            if partitions is None:
                self._commit_failed = False  # nothing left to commit: every point was acknowledged
            return True
        try:
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in points.items()})
        except KafkaError as exc:
            self.metrics.commit_failures.inc()
            self._commit_failed = True
            log.warning("commit failed (offsets stay uncommitted, retried): %s", exc)
            return False
        self.tracker.committed(points)
        if partitions is None:
            self._commit_failed = False
        log.debug("committed %s", {f"{tp.topic}[{tp.partition}]": o for tp, o in points.items()})
        return True

    def _update_gauges(self) -> None:
        m = self.metrics
        m.queue_depth.labels(queue="images").set(self.images.in_progress)
        m.queue_depth.labels(queue="ready").set(self.ready.qsize() + len(self.worker.batcher))
        m.queue_depth.labels(queue="sink").set(self.sink_queue.qsize())
        m.queue_depth.labels(queue="dlq").set(len(self.dlq))
        m.queue_depth.labels(queue="in_flight").set(self.tracker.pending())
        m.in_flight_bytes.set(self.tracker.held_bytes())
        now = time.monotonic()
        if now - self._last_lag < LAG_INTERVAL:
            return
        self._last_lag = now
        refresh_lag(self.consumer, self.tracker.partitions, self.metrics)

    def _idle_expired(self) -> bool:
        limit = self.settings.exit_when_idle
        if limit is None or not self._joined:
            return False
        if self.tracker.pending() or len(self.dlq) or self._deferred or self.tracker.commit_points():
            self._last_activity = time.monotonic()
            return False
        return time.monotonic() - self._last_activity >= limit

    def _drain(self) -> int:
        """Finish in-flight posts within the grace period, commit, and report the exit status.

        The grace period bounds the whole stop: once it is over, a write still being retried
        (Redis hung or down) is abandoned at once, its posts stay uncommitted (redelivered).
        """
        self.stop_deadline = time.monotonic() + self.settings.shutdown_grace
        held = self.tracker.pending()
        if held:
            log.info("stopping: finishing %d in-flight posts (grace %.0fs)", held, self.settings.shutdown_grace)
        while (self.tracker.pending() or len(self.dlq)) and time.monotonic() < self.stop_deadline:
            if self.worker.error or self.sink.error:
                break
            self._iteration(poll=False)
            time.sleep(0.01)
        self._collect()
        left = self.tracker.pending()
        if left:
            self.sink.stop(abort=True)  # give up on a write in flight; nothing more is committed for it
        committed = self._commit()
        self.drained = not left and not len(self.dlq)
        if left:
            log.warning("grace period over: %d posts left unfinished (redelivered on restart)", left)
        elif not committed or self._commit_failed:
            log.warning("stopped, but the last commit failed: finished posts are redelivered on restart "
                        "(counted once: the Redis write is idempotent)")
        elif self._lost_uncommitted:
            log.warning("stopped; offsets of the partitions held now are committed, but %s were lost before "
                        "their finished work was committed (redelivered to their next owner, counted once)",
                        partition_names(sorted(self._lost_uncommitted, key=lambda tp: (tp.topic, tp.partition))))
        else:
            log.info("stopped cleanly; offsets committed")
        return 0

    def time_left(self) -> float:
        """Seconds of the stop's grace period still left (0 when over; the full grace before a stop)."""
        if self.stop_deadline is None:
            return self.settings.shutdown_grace
        return max(0.0, self.stop_deadline - time.monotonic())

    def _close(self) -> None:
        self.images.close(wait=False)
        self.worker.stop()
        self.sink.stop(abort=True)
        # The threads are daemons: past the grace period they are not waited for (a Redis call
        # blocked on a hung server would hold the exit up to its socket timeout).
        join = min(5.0, max(0.5, self.time_left()))
        self.worker.join(timeout=join)
        self.sink.join(timeout=min(5.0, max(0.2, self.time_left())))
        try:
            self.consumer.close(autocommit=False, timeout_ms=int(1000 * min(5.0, max(1.0, self.time_left()))))
        except Exception as exc:  # closing must not turn a clean stop into a crash
            log.warning("consumer close: %s", exc)


