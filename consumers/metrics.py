"""Prometheus metrics of one consumer process (names fixed in docs/architecture.md).

Everything lives on a private :class:`CollectorRegistry` owned by a
:class:`PipelineMetrics` object (no global default registry), so tests and
several pipelines in one process never collide.  Topic label values are capped:
the first ``max_topics`` topics seen keep their name, later ones become
``other``.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

OTHER_TOPIC = "other"
SINKS = ("redis", "output_topic", "dlq")
OUT_OF_WINDOW_KINDS = ("future", "expired")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
INFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class TopicLabeler:
    """Maps topic names to bounded label values (thread-safe)."""

    def __init__(self, max_topics: int) -> None:
        self._max = max_topics
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, topic: str) -> str:
        if topic in self._known:
            return topic
        with self._lock:
            if topic in self._known:
                return topic
            if len(self._known) < self._max:
                self._known.add(topic)
                return topic
        return OTHER_TOPIC


class PipelineMetrics:
    """All metrics exported by ``clmlf-monitor run``."""

    def __init__(self, max_topics: int = 50, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.topic_label = TopicLabeler(max_topics)
        r = self.registry
        self.posts_processed = Counter("clmlf_posts_processed", "Posts labelled and stored, by label and topic",
                                       ["label", "topic"], registry=r)
        self.batch_size = Histogram("clmlf_batch_size", "Posts per inference micro-batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference_seconds = Histogram("clmlf_inference_seconds", "Model time per micro-batch",
                                           buckets=INFERENCE_BUCKETS, registry=r)
        self.end_to_end_latency = Histogram(
            "clmlf_end_to_end_latency_seconds",
            "Result stored minus event time (source=event) or Kafka record time (source=ingest)",
            ["source"], buckets=LATENCY_BUCKETS, registry=r)
        self.image_fetch = Counter("clmlf_image_fetch", "Image outcomes (used, none, ignored, failed reasons)",
                                   ["outcome"], registry=r)
        self.dlq = Counter("clmlf_dlq", "Records sent to the dead-letter topic, by reason", ["reason"],
                           registry=r)
        self.queue_depth = Gauge("clmlf_queue_depth", "Posts waiting in each internal queue", ["queue"],
                                 registry=r)
        self.consumer_lag = Gauge("clmlf_consumer_lag", "High watermark minus position per assigned partition",
                                  ["topic", "partition"], registry=r)
        self.offset_resets = Counter(
            "clmlf_offset_resets", "Fetch positions found beyond a partition's end (topic recreated, broker "
            "data lost) and reset by the offset-reset policy", ["topic", "partition"], registry=r)
        self.commit_failures = Counter("clmlf_commit_failures", "Offset commits that failed", registry=r)
        self.sink_errors = Counter("clmlf_sink_errors", "Failed sink writes (retried), by sink", ["sink"],
                                   registry=r)
        self.out_of_window = Counter("clmlf_out_of_window_events",
                                     "Posts stored but outside the aggregation window", ["kind"], registry=r)
        self.last_progress = Gauge("clmlf_last_progress_timestamp_seconds",
                                   "Unix time a post was last stored or dead-lettered", registry=r)
        self.assigned_partitions = Gauge("clmlf_assigned_partitions", "Partitions assigned to this member",
                                         registry=r)
        self.model_info = Gauge("clmlf_model_info",
                                "Model served by this process (value 1), with the precision chosen at start-up",
                                ["model", "device", "precision"], registry=r)
        for sink in SINKS:  # present from the start, so rate() and alerts see the first error
            self.sink_errors.labels(sink=sink)
        for kind in OUT_OF_WINDOW_KINDS:
            self.out_of_window.labels(kind=kind)
        self.in_flight_bytes = Gauge("clmlf_in_flight_bytes",
                                     "Memory held by in-flight posts (raw value, base64 image, image tensor)",
                                     registry=r)
        self.decode_pixels = Gauge("clmlf_image_decode_pixels",
                                   "Pixels being decoded right now, reserved from the decode budget", registry=r)
        self.alert_active = Gauge("clmlf_alert_active", "Trend alerts currently firing (1) per topic and kind",
                                  ["topic", "kind"], registry=r)

    def count_processed(self, label: str, topics: list[str] | tuple[str, ...]) -> None:
        """One post processed: +1 for the (label, first topic) series.

        The counter sums to the number of posts (not post x topic pairs) as
        CONTRACT.md requires; the post's first topic names the series.
        """
        topic = topics[0] if topics else "all"
        self.posts_processed.labels(label=label, topic=self.topic_label(topic)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
