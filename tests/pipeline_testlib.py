"""Helpers for the pipeline integration tests: posts, producing, members (subprocess or in-process),
the tiny predictor (also slowed down), reading results."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.store import SentimentStore

SESSION_MS = 6000
CLI = [sys.executable, "-m", "consumers.cli"]


def make_posts(n: int, prefix: str = "p", topics: tuple[str, ...] = ("brand",)) -> list[dict[str, Any]]:
    words = ["great", "awful", "fine", "love it", "terrible service", "ok I guess", "best day", "meh"]
    return [{"id": f"{prefix}{i}", "text": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 5)),
             "topics": list(topics)} for i in range(n)]


def png_bytes(size: int = 32, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def b64_image(size: int = 32) -> str:
    return base64.b64encode(png_bytes(size)).decode()


def produce(bootstrap: str, topic: str, values: Iterable[bytes | str | dict], keyed: bool = True) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             max_request_size=64 * 1024 * 1024)
    count = 0
    try:
        for value in values:
            key = None
            if isinstance(value, dict):
                key = (str(value.get("id", "")).encode() or None) if keyed else None
                value = json.dumps(value)
            if isinstance(value, str):
                value = value.encode()
            producer.send(topic, key=key, value=value).get(timeout=30)
            count += 1
    finally:
        producer.close(timeout=10)
    return count


def create_topic(broker: Any, topic: str, partitions: int) -> None:
    broker.create_topics({topic: partitions, f"{topic}.dlq": 1})


class Member:
    """One ``clmlf-monitor run`` subprocess; stderr goes to a log file the test can read."""

    def __init__(self, log_dir: Path, name: str, *, bootstrap: str, topic: str, group: str, redis_url: str,
                 prefix: str, checkpoint: Path, extra: Iterable[str] = (), env: dict[str, str] | None = None):
        self.log_path = log_dir / f"{name}.log"
        argv = [*CLI, "run", "--bootstrap", bootstrap, "--topic", topic, "--group", group,
                "--redis", redis_url, "--redis-prefix", prefix, "--checkpoint", str(checkpoint),
                "--session-timeout-ms", str(SESSION_MS), "--max-wait-ms", "20", "--device", "cpu", *extra]
        if "--metrics-port" not in argv:
            argv += ["--metrics-port", "0"]
        full_env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", LOG_LEVEL="INFO",
                        **(env or {}))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"member did not exit in {timeout}s; log:\n{self.log()[-3000:]}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def tiny_predictor(checkpoint: Any) -> Any:
    """The tiny checkpoint's predictor on CPU, one torch thread (the tests share two cores)."""
    import torch

    from clmlf.serving.inference import Predictor

    torch.set_num_threads(1)
    return Predictor.from_checkpoint(checkpoint, "cpu")


class SlowPredictor:
    """A predictor ``delay`` seconds slower per batch: a model that cannot keep up, or work surely in
    flight when a rebalance or a network cut comes."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner, self._delay = inner, delay
        self.model_name, self.preprocessor, self.device = inner.model_name, inner.preprocessor, inner.device

    def predict(self, items, batch_size=None, on_batch=None):
        time.sleep(self._delay)
        return self._inner.predict(items, batch_size=batch_size, on_batch=on_batch)


class InProcessMember:
    """One member assembled in this process (no interpreter + model start-up per member), run on a thread
    that starts at once; ``settings`` are :class:`consumers.config.RunConfig` fields over test defaults."""

    def __init__(self, checkpoint: Any, predictor: Any = None, serve_http: bool = False, **settings: Any) -> None:
        from consumers.assembly import assemble
        from consumers.config import RunConfig

        defaults = dict(group="g", max_batch=8, max_wait_ms=10, metrics_port=0, session_timeout_ms=3000,
                        alert_interval=0)
        config = RunConfig(**{**defaults, **settings})
        self.member = assemble(config, predictor=predictor or tiny_predictor(checkpoint), serve_http=serve_http)
        self.pipeline = self.member.pipeline
        self.status: list[int] = []
        self.thread = threading.Thread(target=lambda: self.status.append(self.member.run()), daemon=True)
        self.thread.start()

    def metric(self, name: str) -> float:
        return metric_sum(self.member.metrics.render().decode(), name)

    def stop(self) -> None:
        self.pipeline.stop()
        self.thread.join(timeout=60)
        self.member.close()


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def store_for(redis_url: str, prefix: str) -> SentimentStore:
    return SentimentStore(redis.Redis.from_url(redis_url, decode_responses=True), prefix=prefix)


def stored_ids(store: SentimentStore) -> set[str]:
    """Post ids with a stored result (the idempotency markers)."""
    client = store.redis_client
    marker = store.keys.seen("")
    return {key[len(marker):] for key in client.scan_iter(match=f"{marker}*", count=1000)}


def counted_total(store: SentimentStore, topic: str) -> int:
    return store.window_counts(topic, 3600).total


def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list[Any]:
    """Read records of ``topic`` from the beginning until ``expected`` arrived (or timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in sorted(partitions)}
    finally:
        consumer.close(autocommit=False)


def metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` in a Prometheus text exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
