"""Fast unit tests of the consumer pieces: DLQ envelope and writer, config, stages, metrics, probes."""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import pytest

from clmlf.serving.labelling import ImageResolver
from clmlf.settings import OneLineArgumentParser
from consumers.config import RunConfig, add_run_arguments, run_config_from_args
from consumers.dlq import REASON_HEADER, DeadLetterWriter, dlq_envelope
from consumers.health import HealthServer
from consumers.image_stage import ImageStage
from consumers.log_throttle import ThrottleFilter
from consumers.metrics import OTHER_TOPIC, PipelineMetrics
from consumers.offsets import PartitionLease
from consumers.sinks import SinkAborted, SinkWriter, retry_until
from consumers.work import DeadLetter, Done, WorkItem, post_bytes, tokens_bytes
from consumers.worker import ModelWorker
from contract.posts import parse_post
from monitor.store import WriteReport

BASE = ["--bootstrap", "127.0.0.1:9092", "--topic", "posts", "--group", "g", "--redis", "redis://127.0.0.1:6379/0"]


def parse(argv: list[str]) -> RunConfig:
    parser = OneLineArgumentParser(prog="run")
    add_run_arguments(parser)
    return run_config_from_args(parser.parse_args(argv), parser)


def item(post_id: str = "p1", text: str = "hello", offset: int = 0, lease: PartitionLease | None = None,
         **fields) -> WorkItem:
    raw = json.dumps({"id": post_id, "text": text, **fields}).encode()
    return WorkItem(lease=lease or PartitionLease(("posts", 0)), topic="posts", partition=0, offset=offset,
                    key=post_id.encode(), raw=raw, post=parse_post(raw), record_time=time.time(),
                    received=time.monotonic())


# ---------------------------------------------------------------------------------------------- DLQ

def test_dlq_envelope_holds_original_bytes_reason_and_position():
    raw = b"\xff not utf-8"
    envelope = json.loads(dlq_envelope(value=raw, key=b"k", reason="invalid_utf8", detail="bad byte",
                                       topic="posts", partition=3, offset=42, timestamp_ms=1700000000000))
    assert base64.b64decode(envelope["value_b64"]) == raw and base64.b64decode(envelope["key_b64"]) == b"k"
    assert (envelope["reason"], envelope["detail"], envelope["topic"], envelope["partition"],
            envelope["offset"], envelope["timestamp_ms"]) == ("invalid_utf8", "bad byte", "posts", 3, 42,
                                                            1700000000000)
    assert envelope["value_truncated"] is False and envelope["value_bytes"] == len(raw)


def test_dlq_envelope_cuts_giant_values_and_keeps_their_size():
    raw = b"x" * 1000
    envelope = json.loads(dlq_envelope(value=raw, key=None, reason="too_large", detail="big", topic="t",
                                       partition=0, offset=0, timestamp_ms=None, max_value_bytes=100))
    assert base64.b64decode(envelope["value_b64"]) == raw[:100]
    assert envelope["value_truncated"] is True and envelope["value_bytes"] == 1000
    tombstone = json.loads(dlq_envelope(value=None, key=None, reason="invalid_json", detail="empty",
                                        topic="t", partition=0, offset=1, timestamp_ms=None))
    assert tombstone["value_b64"] is None and tombstone["value_bytes"] is None


class FakeFuture:
    def __init__(self, error: Exception | None = None):
        self.is_done, self.exception = True, error

    def succeeded(self) -> bool:
        return self.exception is None


class FlakyProducer:
    """Fails the first ``failures`` sends (refusing the large envelope when ``too_large``)."""

    def __init__(self, failures: int = 0, too_large: bool = False):
        self.failures, self.too_large, self.sent = failures, too_large, []

    def send(self, topic, key=None, value=None, headers=None):
        from kafka.errors import KafkaConnectionError, MessageSizeTooLargeError

        if self.too_large and len(value) > 400:
            raise MessageSizeTooLargeError("too big")
        if self.failures:
            self.failures -= 1
            return FakeFuture(KafkaConnectionError("down"))
        self.sent.append((topic, key, value, headers))
        return FakeFuture()


def submit(writer: DeadLetterWriter, lease: PartitionLease, value: bytes, offset: int = 7) -> None:
    writer.submit(lease, dlq_topic="posts.dlq", source_topic="posts", partition=0, offset=offset, key=None,
                  value=value, timestamp_ms=None, reason="invalid_json", detail="nope")


def test_dead_letter_writer_retries_until_acknowledged():
    producer, errors = FlakyProducer(failures=1), []
    writer = DeadLetterWriter(producer, on_error=lambda: errors.append(1), max_backoff=0.0)
    lease = PartitionLease(("posts", 0))
    submit(writer, lease, b"{")
    assert writer.completed() == [] and len(errors) == 1  # first send failed, nothing is done yet
    time.sleep(0.01)
    assert writer.completed() == []  # resent now
    assert writer.completed() == [(lease, 7)] and len(writer) == 0
    topic, _, value, headers = producer.sent[0]
    assert topic == "posts.dlq" and headers == [(REASON_HEADER, b"invalid_json")]


def test_dead_letter_refused_as_too_large_is_resent_without_the_value():
    producer = FlakyProducer(too_large=True)
    writer = DeadLetterWriter(producer, max_backoff=0.0)
    lease = PartitionLease(("posts", 0))
    submit(writer, lease, b"x" * 2000)
    writer.completed()
    assert writer.completed() == [(lease, 7)]
    assert json.loads(producer.sent[0][2])["value_b64"] == ""


def test_dead_letters_of_revoked_partitions_are_dropped():
    writer = DeadLetterWriter(FlakyProducer(failures=5), max_backoff=0.0)
    lease = PartitionLease(("posts", 0))
    submit(writer, lease, b"{")
    lease.revoked = True
    assert writer.completed() == [] and len(writer) == 0


# ------------------------------------------------------------------------------------------- config

def test_config_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("CLMLF_MAX_BATCH", "7")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "bob")
    config = parse([*BASE, "--max-wait-ms", "15", "--exit-when-idle", "1m", "--output-topic", "out"])
    assert (config.max_batch, config.max_wait_ms, config.exit_when_idle, config.output_topic) == (7, 15, 60, "out")
    assert config.dlq_topic == "posts.dlq"
    assert config.security.client_kwargs()["sasl_plain_password"] == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in config.describe()


def test_max_batch_is_chosen_from_the_model_unless_given(monkeypatch):
    from types import SimpleNamespace

    from clmlf.model.config import AUTO_BATCH_SIZE as AUTO_MAX_BATCH
    from consumers.assembly import auto_max_batch

    assert parse(BASE).max_batch is None and "max_batch=auto" in parse(BASE).describe()
    assert parse([*BASE, "--max-batch", "12"]).max_batch == 12

    def fake(trained_with_images):
        return SimpleNamespace(loaded=SimpleNamespace(config=SimpleNamespace(trained_with_images=trained_with_images)))

    assert auto_max_batch(fake(False)) == AUTO_MAX_BATCH["text-only"] == 64
    assert auto_max_batch(fake(True)) == AUTO_MAX_BATCH["with images"] == 32
    assert auto_max_batch(object()) == 32  # a predictor that does not say: the image-model cap, the safe one


def test_batch_pool_sets_how_many_ready_posts_the_model_worker_groups_by_length(monkeypatch):
    assert parse(BASE).batch_pool == 16 and "batch_pool=16" in parse(BASE).describe()
    assert parse([*BASE, "--batch-pool", "4"]).batch_pool == 4
    monkeypatch.setenv("CLMLF_BATCH_POOL", "8")
    assert parse(BASE).batch_pool == 8
    worker = ModelWorker(queue.Queue(), queue.Queue(), lambda d: None, lambda items: [], 32, 0.05, group_window=8)
    assert worker.batcher.capacity == 8 * 32


@pytest.mark.parametrize("argv, needle", [
    (BASE[2:], "--bootstrap"),
    ([*BASE[:1], "nohostport", *BASE[2:]], "HOST:PORT"),
    ([*BASE[:3], "bad topic!", *BASE[4:]], "topic"),
    ([*BASE[:7], "http://x"], "redis"),
    ([*BASE, "--max-batch", "0"], "max-batch"),
    ([*BASE, "--max-wait-ms", "-1"], "max-wait-ms"),
    ([*BASE, "--batch-pool", "0"], "batch-pool"),
    ([*BASE, "--exit-when-idle", "soon"], "exit-when-idle"),
    ([*BASE, "--device", "tpu"], "device"),
    ([*BASE, "--metrics-port", "70000"], "metrics-port"),
])
def test_bad_config_exits_2_with_one_line(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_sasl_without_credentials_is_rejected(monkeypatch, capsys):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SystemExit) as exc:
        parse(BASE)
    assert exc.value.code == 2 and "SASL" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- worker

@dataclass
class Pred:
    label: str
    scores: dict


def run_worker(items, predict, max_batch=4, max_wait=0.01):
    ready, out, dead = queue.Queue(), queue.Queue(), []
    worker = ModelWorker(ready, out, dead.append, predict, max_batch, max_wait)
    worker.start()
    for it in items:
        ready.put(it)
    worker.stop()
    worker.join(timeout=10)
    batches = []
    while not out.empty():
        batches.append(out.get())
    return batches, dead


def test_worker_batches_predicts_and_skips_revoked_work():
    revoked = PartitionLease(("posts", 1), revoked=True)
    items = [item(f"p{i}", "x" * (i + 1), offset=i) for i in range(6)] + [item("gone", lease=revoked)]
    batches, dead = run_worker(items, lambda batch: [Pred("positive", {"positive": 1.0}) for _ in batch])
    done = [it.post.id for batch, _ in batches for it in batch]
    assert sorted(done) == sorted(f"p{i}" for i in range(6)) and not dead
    assert all(len(batch) <= 4 and len(batch) == len(preds) for batch, preds in batches)


def test_worker_isolates_a_poison_post_as_a_dead_letter():
    def predict(batch):
        if any(it.post.text == "poison" for it in batch):
            raise RuntimeError("boom")
        return [Pred("neutral", {"neutral": 1.0}) for _ in batch]
    batches, dead = run_worker([item("a"), item("b", "poison"), item("c")], predict)
    assert sorted(it.post.id for batch, _ in batches for it in batch) == ["a", "c"]
    assert len(dead) == 1 and isinstance(dead[0], DeadLetter) and dead[0].item.post.id == "b"
    assert dead[0].reason == "inference_failed" and "boom" in dead[0].detail


# -------------------------------------------------------------------------------------- image stage

def test_image_stage_marks_outcomes_and_never_drops_a_post():
    class Boom(Exception):
        reason = "timeout"

    def fetch(post):
        if post.id == "slow":
            raise Boom("too slow")
        return b"bytes" if post.has_image_source else None

    ready, outcomes = queue.Queue(), []
    stage = ImageStage(ready, ImageResolver(fetch, lambda data: "TENSOR"), 2, outcomes.append)
    stage.submit(item("text"))
    stage.submit(item("img", image_url="http://example.com/a.png"))
    stage.submit(item("slow", image_url="http://example.com/b.png"))
    stage.close(wait=True)
    got = {}
    while not ready.empty():
        it = ready.get()
        got[it.post.id] = (it.image_status, it.image)
    assert got == {"text": ("none", None), "img": ("used", "TENSOR"), "slow": ("failed", None)}
    assert sorted(outcomes) == ["none", "timeout", "used"]


# -------------------------------------------------------------------------------------------- sinks

class FlakyStore:
    def __init__(self, failures: int):
        self.failures, self.records = failures, []

    def record(self, results):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis down")
        self.records.extend(results)
        return WriteReport([True] * len(results))


def test_sink_retries_the_store_then_reports_done_in_order():
    store, done, metrics = FlakyStore(failures=2), [], PipelineMetrics()
    sink = SinkWriter(queue.Queue(), done.append, store, "tiny", metrics, redis_errors=(ConnectionError,))
    items = [item("a", topics=["brand"]), item("b", offset=1, topics=["brand"])]
    sink.write(items, [Pred("positive", {"positive": 0.9, "negative": 0.1}), Pred("negative", {"negative": 1.0})])
    assert [r.id for r, _ in store.records] == ["a", "b"]
    assert [(d.offset) for d in done] == [0, 1] and all(isinstance(d, Done) for d in done)
    text = metrics.render().decode()
    assert 'clmlf_sink_errors_total{sink="redis"} 2.0' in text
    assert 'clmlf_posts_processed_total{label="positive",topic="brand"} 1.0' in text


def test_retry_until_gives_up_when_aborted():
    abort = threading.Event()
    calls = []

    def always_down():
        calls.append(1)
        if len(calls) == 3:
            abort.set()
        raise ConnectionError("down")

    with pytest.raises(SinkAborted):
        retry_until(always_down, abort, (ConnectionError,), lambda exc: None, max_wait=0.01)
    assert len(calls) == 3


# ------------------------------------------------------------------------------------ metrics/probes

def test_topic_labels_are_capped():
    metrics = PipelineMetrics(max_topics=2)
    for topic in ("a", "b", "c", "d", "a"):
        metrics.count_processed("positive", [topic])
    text = metrics.render().decode()
    assert f'topic="{OTHER_TOPIC}"}} 2.0' in text and 'topic="a"} 2.0' in text and 'topic="c"' not in text


def test_health_server_serves_metrics_and_probes():
    metrics = PipelineMetrics()
    state = {"ready": False}
    server = HealthServer("127.0.0.1", 0, metrics.render, lambda: (True, "fresh"),
                          lambda: (state["ready"], "no partitions")).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        body = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        assert "clmlf_queue_depth" in body and "clmlf_model_info" in body
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert exc.value.code == 503
        state["ready"] = True
        assert json.loads(urllib.request.urlopen(f"{base}/readyz", timeout=5).read())["ok"] is True
    finally:
        server.close()


def test_throttle_passes_one_record_per_template_per_interval():
    throttle = ThrottleFilter(interval=60)

    def rec(name, msg):
        return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)
    assert throttle.filter(rec("kafka.net", "socket %s lost"))
    assert not throttle.filter(rec("kafka.net", "socket %s lost"))
    assert throttle.filter(rec("kafka.net", "another message"))
    assert throttle.filter(rec("clmlf.run", "socket %s lost")) and throttle.filter(rec("clmlf.run", "socket %s lost"))


def test_every_metric_named_in_the_architecture_doc_is_exported():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    section = doc.split("## Prometheus metrics", 1)[1]
    names = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `clmlf_")}
    text = PipelineMetrics().render().decode()
    exported = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exported |= {f"{name}_total" for name in exported}
    assert names and names <= exported, names - exported


# ------------------------------------------------------------------------ one record, one fate

class PickyStore:
    """Refuses (like a client-side encoding error or a script error would) any batch holding ``bad``."""

    def __init__(self, bad: str, error: Exception):
        self.bad, self.error, self.records, self.calls = bad, error, [], 0

    def record(self, results):
        self.calls += 1
        if any(r.id == self.bad for r, _ in results):
            raise self.error
        self.records.extend(results)
        return WriteReport([True] * len(results))


@pytest.mark.parametrize("error", [
    UnicodeEncodeError("utf-8", "sur\ud800", 3, 4, "surrogates not allowed"),  # finding 1, at the store
    ValueError("Exceeds the limit (4300 digits)"),
    RuntimeError("ERR Error running script"),
])
def test_sink_dead_letters_the_post_the_store_refuses_and_stores_the_rest(error):
    from consumers.sinks import redis_is_down

    store, out, metrics = PickyStore("bad", error), [], PipelineMetrics()
    sink = SinkWriter(queue.Queue(), out.append, store, "tiny", metrics, redis_errors=redis_is_down)
    items = [item("a", topics=["brand"]), item("bad", offset=1), item("c", offset=2, topics=["brand"])]
    preds = [Pred("positive", {"positive": 1.0})] * 3
    sink.write(items, preds)  # must not raise: the sink thread would die and the member exit 1
    assert sorted(r.id for r, _ in store.records) == ["a", "c"]
    assert sorted(d.offset for d in out if isinstance(d, Done)) == [0, 2]
    dead = [d for d in out if isinstance(d, DeadLetter)]
    assert [(d.item.post.id, d.reason) for d in dead] == [("bad", "store_failed")]
    assert type(error).__name__ in dead[0].detail and "\n" not in dead[0].detail


def test_sink_dead_letters_a_post_whose_result_cannot_be_built_and_a_short_prediction_list():
    store, out = FlakyStore(failures=0), []
    sink = SinkWriter(queue.Queue(), out.append, store, "tiny", PipelineMetrics(), redis_errors=(ConnectionError,))
    sink.write([item("a"), item("b", offset=1)], [Pred("positive", {"positive": 1.0}), Pred("x", {"x": "nan?"})])
    assert [r.id for r, _ in store.records] == ["a"]
    assert [(d.item.post.id, d.reason) for d in out if isinstance(d, DeadLetter)] == [("b", "result_failed")]
    out.clear()
    sink.write([item("c"), item("d", offset=1)], [Pred("positive", {"positive": 1.0})])
    assert {(d.item.post.id, d.reason) for d in out} == {("c", "inference_failed"), ("d", "inference_failed")}


def test_only_infrastructure_failures_are_retried():
    import redis

    from consumers.sinks import kafka_is_down, redis_is_down

    for exc in (redis.ConnectionError("refused"), redis.TimeoutError("timed out"), ConnectionResetError(),
                redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
                redis.ResponseError("LOADING Redis is loading the dataset in memory"),
                redis.exceptions.ReadOnlyError("READONLY You can't write against a read only replica.")):
        assert redis_is_down(exc), exc
    for exc in (redis.ResponseError("ERR Error running script (call to f_1): bad argument"),
                redis.DataError("Invalid input of type: 'dict'"),
                UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), ValueError("x")):
        assert not redis_is_down(exc), exc
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

    assert kafka_is_down(KafkaConnectionError()) and kafka_is_down(KafkaTimeoutError())
    assert not kafka_is_down(MessageSizeTooLargeError()) and not kafka_is_down(ValueError())


def test_worker_treats_a_short_prediction_list_as_a_failed_batch():
    def predict(batch):  # drops the last post of every batch: no post may get another's label
        return [Pred("neutral", {"neutral": 1.0}) for _ in batch[:-1]]
    batches, dead = run_worker([item("a"), item("b", offset=1)], predict, max_batch=2, max_wait=5)
    assert batches == [] and sorted(d.item.post.id for d in dead) == ["a", "b"]
    assert all(d.reason == "inference_failed" for d in dead)


def test_image_stage_never_loses_a_post_when_counting_fails():
    def count(outcome):
        raise KeyError(outcome)
    ready = queue.Queue()
    stage = ImageStage(ready, ImageResolver(lambda post: b"bytes", lambda data: "TENSOR"), 1, count)
    stage.submit(item("img", image_url="http://example.com/a.png"))
    stage.close(wait=True)
    got = ready.get_nowait()
    assert (got.post.id, got.image_status, stage.in_progress) == ("img", "failed", 0)


def test_error_counters_are_exported_before_their_first_event():
    text = PipelineMetrics().render().decode()
    for sink in ("redis", "output_topic", "dlq"):
        assert f'clmlf_sink_errors_total{{sink="{sink}"}} 0.0' in text
    for kind in ("future", "expired"):
        assert f'clmlf_out_of_window_events_total{{kind="{kind}"}} 0.0' in text


def test_metrics_server_binds_loopback_unless_told(monkeypatch):
    assert parse(BASE).metrics_host == "127.0.0.1"
    assert parse([*BASE, "--metrics-host", "0.0.0.0"]).metrics_host == "0.0.0.0"
    monkeypatch.setenv("CLMLF_METRICS_HOST", "::")
    assert parse(BASE).metrics_host == "::"


# ------------------------------------------------------------------ loop: commits and lost partitions

class CommitLog:
    """The consumer's commit API, scripted: raises while ``down``, records what was committed."""

    def __init__(self) -> None:
        self.down, self.commits = False, []

    def commit(self, offsets):
        from kafka.errors import KafkaConnectionError

        if self.down:
            raise KafkaConnectionError("broker unreachable")
        self.commits.append({tp.partition: meta.offset for tp, meta in offsets.items()})

    def seek(self, tp, offset):
        pass


def test_finished_work_of_lost_partitions_is_committed_when_they_return_and_the_stop_never_lies(caplog):
    """Finding 7: after lost partitions, --exit-when-idle logged "offsets committed" though the last
    commit had failed and the finished work was never committed."""
    import asyncio

    from kafka import TopicPartition

    from consumers.loop_settings import LoopSettings
    from consumers.pipeline import Pipeline
    from consumers.rebalance import RebalanceListener

    class Idle:
        error = None

    consumer, completions = CommitLog(), queue.Queue()
    pipeline = Pipeline(LoopSettings("posts", "posts.dlq", 100, None, 1.0), consumer,
                        DeadLetterWriter(producer=None), None, queue.Queue(), Idle(), queue.Queue(), Idle(),
                        completions, PipelineMetrics())
    listener, tp = RebalanceListener(pipeline), TopicPartition("posts", 0)
    asyncio.run(listener.on_partitions_assigned({tp}))
    for offset in range(8):
        completions.put(Done(pipeline.tracker.start_owned(tp, offset), offset))
    consumer.down = True
    pipeline._collect()
    assert not pipeline._commit()  # the work is stored, its commit fails ...
    asyncio.run(listener.on_partitions_lost({tp}))  # ... and the session expires: dropped without a commit
    consumer.down = False
    caplog.set_level(logging.INFO, logger="consumers.pipeline")
    asyncio.run(listener.on_partitions_assigned({tp}))  # the group gives the partition back
    assert pipeline._drain() == 0
    assert consumer.commits == [{0: 8}]  # the work finished before the loss is committed now
    assert caplog.records[-1].getMessage() == "stopped cleanly; offsets committed"

    # Lost for good (another member owns it now): the stop must not claim a commit.
    pipeline = Pipeline(LoopSettings("posts", "posts.dlq", 100, None, 1.0), consumer,
                        DeadLetterWriter(producer=None), None, queue.Queue(), Idle(), queue.Queue(), Idle(),
                        completions, PipelineMetrics())
    listener = RebalanceListener(pipeline)
    asyncio.run(listener.on_partitions_assigned({tp}))
    completions.put(Done(pipeline.tracker.start_owned(tp, 8), 8))
    consumer.down = True
    pipeline._collect()
    assert not pipeline._commit()
    asyncio.run(listener.on_partitions_lost({tp}))
    consumer.down = False
    assert pipeline._drain() == 0
    last = caplog.records[-1].getMessage()
    assert "offsets committed" not in last and "posts[0]" in last and "lost" in last, last


# ------------------------------------------------------------------ loop: text encoded off the model thread

def test_the_consumer_loop_encodes_each_posts_text_and_a_failed_encoding_loses_nothing(caplog):
    """The model thread only pads: tokens travel on the work item, and the batcher groups by their count."""
    import asyncio
    from types import SimpleNamespace

    from kafka import TopicPartition

    from consumers.loop_settings import LoopSettings
    from consumers.pipeline import Pipeline
    from consumers.rebalance import RebalanceListener

    class Collect:
        error = None

        def __init__(self) -> None:
            self.items: list[WorkItem] = []

        def submit(self, item: WorkItem) -> None:
            self.items.append(item)

    def encode(post):
        if "poison" in post.text:
            raise RuntimeError("tokenizer broke")
        return ("tokens of", post.text, "x" * 7)[:3]

    images = Collect()
    pipeline = Pipeline(LoopSettings("posts", "posts.dlq", 100, None, 1.0), CommitLog(),
                        DeadLetterWriter(producer=None), images, queue.Queue(), Collect(), queue.Queue(),
                        Collect(), queue.Queue(), PipelineMetrics(), encode_text=encode)
    tp = TopicPartition("posts", 0)
    asyncio.run(RebalanceListener(pipeline).on_partitions_assigned({tp}))
    caplog.set_level(logging.WARNING, logger="consumers.pipeline")
    for offset, text in enumerate(["a fine day", "a poison pill of a text"]):
        value = json.dumps({"id": str(offset), "text": text, "topics": ["t"]}).encode()
        pipeline._take(tp, SimpleNamespace(offset=offset, key=None, value=value, timestamp=0))
    assert [item.tokens for item in images.items] == [("tokens of", "a fine day", "xxxxxxx"), None]
    assert [item.text_length for item in images.items] == [3, len("a poison pill of a text")]
    assert "text encoding failed on the consumer loop (RuntimeError)" in caplog.text
    # What the encoded text holds counts against --max-in-flight-bytes.
    held = pipeline.tracker.held_bytes()
    assert held >= sum(post_bytes(item.post, 0) for item in images.items) + tokens_bytes(images.items[0].tokens)
    assert tokens_bytes(None) == 0 and tokens_bytes([101, 2204, 102]) >= 3 * 28
