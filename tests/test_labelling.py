"""The labelling core (clmlf/serving/labelling.py): parse, image per the model's needs, predict, result record.

``clmlf predict`` and the stream's stages (image stage -> model worker -> sink writer) run the
same core, so the same post gets the same result record from both.
"""

from __future__ import annotations

import base64
import io
import json
import queue
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from pipeline_testlib import b64_image
from tiny_models import build_tiny_checkpoint

from clmlf.commands import predict
from clmlf.serving.inference import Predictor
from clmlf.serving.labelling import (
    IGNORED,
    NO_IMAGE,
    ImageResolver,
    Labeller,
    ResolvedImage,
    event_time,
    result_record,
)
from clmlf.settings import OneLineArgumentParser
from contract.posts import InvalidPost, ResultRecord, iso_utc, parse_post

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000.25
RECEIVED = 1_790_000_000.0
NOT_AN_IMAGE = base64.b64encode(b"these bytes are no image").decode()


def post(**fields) -> object:
    return parse_post(json.dumps({"id": "p", "text": "hello", **fields}))


# ------------------------------------------------------------------------------- image resolver


class Refusal(Exception):
    reason = "blocked_address"


class CountingBudget:
    def __init__(self) -> None:
        self.reserved: list[int] = []
        self.held = 0

    @contextmanager
    def reserve(self, pixels: int):
        self.reserved.append(pixels)
        self.held += pixels
        try:
            yield pixels
        finally:
            self.held -= pixels


def test_resolver_statuses_and_outcomes() -> None:
    fetched: list[str] = []

    def fetch(p):
        fetched.append(p.id)
        if p.id == "refused":
            raise Refusal("no")
        return None if p.id == "empty" else b"bytes"

    def decode(data: bytes) -> str:
        if data != b"bytes":
            raise ValueError("bad")
        return "TENSOR"

    resolve = ImageResolver(fetch, decode)
    url = {"image_url": "https://example.com/a.png"}
    assert resolve(post(id="plain")) == NO_IMAGE and fetched == []  # no source: nothing fetched
    assert resolve(post(id="img", **url)) == ResolvedImage("TENSOR", "used", "used")
    assert resolve(post(id="empty", **url)) == NO_IMAGE
    assert resolve(post(id="refused", **url)) == ResolvedImage(None, "failed", "blocked_address")
    broken = ImageResolver(lambda p: b"other", decode)
    assert broken(post(**url)) == ResolvedImage(None, "failed", "ValueError")  # no reason: the type names it
    assert resolve.needs_io(post(**url)) and not resolve.needs_io(post())


def test_a_text_only_resolver_never_fetches_nor_decodes() -> None:
    def refuse(*args):
        raise AssertionError("a text-only model must not touch the image")

    resolve = ImageResolver(refuse, refuse, use_images=False)
    assert resolve(post(image_url="https://example.com/a.png")) == IGNORED
    assert resolve(post(image_b64=NOT_AN_IMAGE)) == IGNORED
    assert resolve(post()) == NO_IMAGE
    assert not resolve.needs_io(post(image_b64=NOT_AN_IMAGE))


def test_resolver_decodes_within_the_budget() -> None:
    budget = CountingBudget()
    seen: list[int] = []

    def decode(data: bytes) -> str:
        seen.append(budget.held)
        return "TENSOR"

    resolve = ImageResolver(lambda p: b"12345", decode, budget=budget, decoded_pixels=len)
    assert resolve(post(image_b64=NOT_AN_IMAGE)).status == "used"
    assert budget.reserved == [5] and seen == [5] and budget.held == 0  # held while decoding, then released
    with pytest.raises(ValueError, match="both"):
        ImageResolver(lambda p: None, decode, budget=budget)


# ------------------------------------------------------------------------------- records


def test_event_time_falls_back_to_when_the_post_was_received() -> None:
    assert event_time(post(created_at=1_700_000_000), RECEIVED) == 1_700_000_000.0
    assert event_time(post(), RECEIVED) == RECEIVED


def test_result_record_is_the_contract_record() -> None:
    from clmlf.serving.inference import Prediction

    prediction = Prediction("positive", {"positive": 0.91234567, "neutral": 0.05, "negative": 0.03765433})
    record = result_record(
        post(topics=["Acme"]), prediction, image="none", model="m@1", received_at=RECEIVED, processed_at=NOW
    )
    assert json.loads(record.to_json()) == {
        "id": "p",
        "label": "positive",
        "scores": {"positive": 0.912346, "neutral": 0.05, "negative": 0.037654},
        "topics": ["Acme"],
        "created_at": iso_utc(RECEIVED),
        "processed_at": "2027-01-15T08:00:00.250Z",
        "model": "m@1",
        "image": "none",
    }


# ------------------------------------------------------------------------------- the labeller


@pytest.fixture(scope="module")
def text_only_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("text-only") / "ckpt", trained_with_images=False)


def tiny_predictor(checkpoint: Path) -> Predictor:
    return Predictor.from_checkpoint(checkpoint, device="cpu", precision="fp32")


def test_label_reports_progress_per_model_batch(tiny_checkpoint: Path) -> None:
    """``clmlf predict`` moves its bar by these calls: one per model batch, the valid posts in all."""
    predictor = tiny_predictor(tiny_checkpoint)
    predictor.batch_size = 4
    labeller = Labeller.for_predictor(predictor, lambda p: None, clock=lambda: NOW)
    raws = [json.dumps({"id": f"p{i}", "text": "words " * (1 + i % 5)}) for i in range(10)] + [b"{bad"]
    batches: list[int] = []
    out = labeller.label(raws, on_batch=batches.append)
    assert batches == [4, 4, 2]
    assert sum(isinstance(o, ResultRecord) for o in out) == sum(batches) == 10


def test_label_keeps_input_order_and_reports_bad_posts(tiny_checkpoint: Path) -> None:
    fetched: list[str] = []

    def fetch(p):
        fetched.append(p.id)
        return base64.b64decode(p.image_b64) if p.image_b64 else None

    labeller = Labeller.for_predictor(tiny_predictor(tiny_checkpoint), fetch, clock=lambda: NOW)
    raws = [
        json.dumps(
            {"id": "img", "text": "nice picture", "image_b64": b64_image(40), "created_at": 1_700_000_000}
        ),
        b"{not json",
        json.dumps({"id": "plain", "text": "just words", "topics": ["acme"]}).encode(),
        json.dumps({"id": "broken", "text": "broken picture", "image_b64": NOT_AN_IMAGE}),
        json.dumps({"text": "no id"}),
    ]
    out = labeller.label(raws)
    assert [type(o) for o in out] == [ResultRecord, InvalidPost, ResultRecord, ResultRecord, InvalidPost]
    assert (out[1].reason, out[4].reason) == ("invalid_json", "missing_id")
    img, plain, broken = out[0], out[2], out[3]
    assert [r.id for r in (img, plain, broken)] == ["img", "plain", "broken"]
    assert [r.image for r in (img, plain, broken)] == ["used", "none", "failed"]
    assert sorted(fetched) == ["broken", "img"]
    assert img.created_at == "2023-11-14T22:13:20.000Z" and plain.created_at == iso_utc(NOW)  # received now
    assert {r.processed_at for r in (img, plain, broken)} == {iso_utc(NOW)}
    assert plain.topics == ["acme"] and img.topics == ["all"]
    assert all(r.model == labeller.model_name and r.model.startswith("tiny-random@") for r in (img, plain))
    for record in (img, plain, broken):
        assert record.label == max(record.scores, key=record.scores.get)
        assert sum(record.scores.values()) == pytest.approx(1.0, abs=1e-4)
    assert labeller.label([]) == []


def test_label_with_a_text_only_model_ignores_images(text_only_checkpoint: Path) -> None:
    def refuse(p):
        raise AssertionError("fetched")

    labeller = Labeller.for_predictor(tiny_predictor(text_only_checkpoint), refuse, clock=lambda: NOW)
    assert not labeller.uses_images and labeller.images.budget is None
    raws = [
        json.dumps({"id": "a", "text": "words", "image_url": "https://example.com/a.png"}),
        json.dumps({"id": "b", "text": "words"}),
    ]
    with_image, without = labeller.label(raws)
    assert (with_image.image, without.image) == ("ignored", "none")
    assert with_image.scores == without.scores  # the label comes from the text alone


# ------------------------------------------------------------- clmlf predict == the stream


def posts_for_both_paths() -> list[dict]:
    """Distinct text lengths, so both paths sort a batch the same way whatever order it came in."""
    return [
        {
            "id": "used",
            "text": "love this photo",
            "image_b64": b64_image(40),
            "created_at": "2026-11-20T09:12:00Z",
            "topics": ["acme"],
        },
        {"id": "none", "text": "globex support is slow today", "created_at": 1_790_000_100},
        {"id": "failed", "text": "broken", "image_b64": NOT_AN_IMAGE, "created_at": 1_790_000_200},
        {
            "id": "refused",
            "text": "private address!",
            "image_url": "http://127.0.0.1:9/a.png",
            "created_at": 1_790_000_300,
            "aspect": "address",
        },
        {"id": "no-time", "text": "no created_at on this one", "image_b64": b64_image(24)},
    ]


def via_predict_command(tmp_path: Path, checkpoint: Path, posts: list[dict]) -> dict[str, dict]:
    source, out = tmp_path / "posts.jsonl", tmp_path / "results.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in posts))
    parser = OneLineArgumentParser(prog="clmlf")
    predict.add_parser(parser.add_subparsers(dest="command", parser_class=OneLineArgumentParser))
    args = parser.parse_args(
        [
            "predict",
            "--input",
            str(source),
            "--output",
            str(out),
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--no-progress",
        ]
    )
    assert args.func(args, parser) == 0
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


class ListStore:
    def __init__(self) -> None:
        self.records: list[tuple[ResultRecord, float]] = []

    def record(self, results):
        from monitor.store import WriteReport

        self.records.extend(results)
        return WriteReport([True] * len(results))


def via_stream_stages(predictor: Predictor, posts: list[dict], clock=time.time) -> dict[str, ResultRecord]:
    """The stream's own stages, wired as ``consumers.assembly`` wires them, minus Kafka and Redis:
    image stage -> ready queue -> model worker (one micro-batch) -> sink writer -> store."""
    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher
    from consumers.assembly import predict_fn
    from consumers.config import RunConfig
    from consumers.decode_budget import DecodeBudget
    from consumers.image_stage import ImageStage
    from consumers.metrics import PipelineMetrics
    from consumers.offsets import PartitionLease
    from consumers.sinks import SinkWriter
    from consumers.work import WorkItem
    from consumers.worker import ModelWorker

    defaults = RunConfig(
        bootstrap="127.0.0.1:9092", topic="t", group="g", redis_url="redis://127.0.0.1:6379/0"
    )
    ready: queue.Queue = queue.Queue()
    out: queue.Queue = queue.Queue()
    dead: list = []
    outcomes: list[str] = []
    store = ListStore()
    with ImageFetcher(FetchConfig(allow_private=False)) as fetcher:
        labeller = Labeller.for_predictor(
            predictor,
            fetcher.post_image_bytes,
            max_image_pixels=defaults.max_image_pixels,
            budget=DecodeBudget(defaults.max_decode_pixels),
        )
        stage = ImageStage(ready, labeller.images, 2, outcomes.append)
        lease = PartitionLease(("t", 0))
        for offset, fields in enumerate(posts):
            raw = json.dumps(fields).encode()
            stage.submit(
                WorkItem(
                    lease=lease,
                    topic="t",
                    partition=0,
                    offset=offset,
                    key=None,
                    raw=raw,
                    post=parse_post(raw),
                    record_time=RECEIVED,
                    received=time.monotonic(),
                )
            )
        stage.close(wait=True)
    worker = ModelWorker(ready, out, dead.append, predict_fn(labeller), max_batch=len(posts), max_wait=0.01)
    worker.start()
    worker.stop()
    worker.join(timeout=60)
    assert not dead and worker.error is None
    sink = SinkWriter(
        queue.Queue(),
        lambda done: None,
        store,
        labeller.model_name,
        PipelineMetrics(),
        redis_errors=(ConnectionError,),
        clock=clock,
    )
    while not out.empty():
        sink.write(*out.get())
    assert len(outcomes) == len(posts)
    return {result.id: result for result, _ in store.records}


@pytest.mark.parametrize("model", ["with-images", "text-only"])
def test_predict_and_the_stream_write_the_same_record(
    tmp_path: Path, tiny_checkpoint: Path, text_only_checkpoint: Path, model: str
) -> None:
    checkpoint = tiny_checkpoint if model == "with-images" else text_only_checkpoint
    posts = posts_for_both_paths()
    from_predict = via_predict_command(tmp_path, checkpoint, posts)
    from_stream = {
        k: json.loads(r.to_json()) for k, r in via_stream_stages(tiny_predictor(checkpoint), posts).items()
    }
    assert list(from_predict) == [p["id"] for p in posts] and set(from_stream) == set(from_predict)
    expected = {"used": "used", "none": "none", "failed": "failed", "refused": "failed", "no-time": "used"}
    if model == "text-only":
        expected = {k: "none" if k == "none" else "ignored" for k in expected}
    assert {k: r["image"] for k, r in from_predict.items()} == expected
    for post_id, record in from_predict.items():
        stream_record = from_stream[post_id]
        if post_id == "no-time":  # no event time given: predict's is now, the stream's the Kafka timestamp
            assert record["created_at"] == record["processed_at"]
            assert stream_record["created_at"] == iso_utc(RECEIVED)
            record, stream_record = dict(record, created_at=None), dict(stream_record, created_at=None)
        assert dict(record, processed_at=None) == dict(stream_record, processed_at=None), post_id


def test_predict_and_the_stream_write_the_same_bytes(tiny_checkpoint: Path) -> None:
    """With one clock, the core's ``label`` (what ``clmlf predict`` writes per line) and the stream's
    stages produce byte-identical records for posts that carry their event time."""
    posts = [p for p in posts_for_both_paths() if "created_at" in p]
    predictor = tiny_predictor(tiny_checkpoint)
    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher

    with ImageFetcher(FetchConfig()) as fetcher:
        labelled = Labeller.for_predictor(predictor, fetcher.post_image_bytes, clock=lambda: NOW).label(
            [json.dumps(p) for p in posts]
        )
    streamed = via_stream_stages(predictor, posts, clock=lambda: NOW)
    assert [r.to_json() for r in labelled] == [streamed[p["id"]].to_json() for p in posts]


def test_predict_stream_writes_records_and_error_lines_in_order(tiny_checkpoint: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher

    source = io.BytesIO(
        b'{"id": "a", "text": "hi"}\n[1]\n{"id": "b", "text": "yo", "image_b64": "%s"}\n'
        % NOT_AN_IMAGE.encode()
    )
    sink = io.StringIO()
    with ImageFetcher(FetchConfig()) as fetcher, ThreadPoolExecutor(2) as pool:
        stats = predict.predict_stream(
            source, sink, tiny_predictor(tiny_checkpoint), fetcher, pool, progress=False
        )
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert [line.get("id") for line in lines] == ["a", None, "b"]
    assert lines[1] == {
        "id": None,
        "line": 2,
        "error": {"reason": "not_an_object", "detail": "message must be a JSON object, got list"},
    }
    assert lines[2]["image"] == "failed"
    assert stats == {"posts": 2, "bad_lines": 1, "failed_images": 1, "ignored_images": 0}


def test_the_core_and_the_work_item_load_without_torch() -> None:
    probe = (
        "import json, sys; import clmlf.serving.labelling, consumers.work, consumers.image_stage; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO, timeout=120
    )
    assert json.loads(done.stdout) == []
