"""A checkpoint trained without images (``trained_with_images: false``) never lets an image count.

End to end: in ``clmlf predict`` and in a real ``clmlf-monitor run`` (real broker and
Redis) every post that carries an image reports ``"image": "ignored"``, its URL is
never requested (a loopback HTTP server counts requests) and inline bytes are not
decoded; metrics count ``ignored`` as its own outcome. A model trained with images
keeps using them (so these tests can fail).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from http_testlib import LoopbackServer, QuietHandler
from pipeline_testlib import Member, b64_image, create_topic, png_bytes, produce, store_for
from tiny_models import build_tiny_checkpoint, build_tiny_model

from clmlf.commands import predict
from clmlf.settings import OneLineArgumentParser

torch.set_num_threads(1)

NOT_AN_IMAGE = base64.b64encode(b"these bytes would fail to decode").decode()


class CountingImageServer(LoopbackServer):
    """Loopback HTTP server answering every GET with a real PNG; records each requested path."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        body = png_bytes(48)
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                server.requests.append(self.path)
                self.send_body(body)

        super().__init__(Handler)


@pytest.fixture
def image_server() -> Iterator[CountingImageServer]:
    server = CountingImageServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def text_only_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("text-only") / "ckpt", trained_with_images=False)


def posts_with_images(base: str) -> list[dict]:
    return [
        {"id": "url", "text": "look at my new acme phone", "image_url": f"{base}/a.png"},
        {"id": "b64", "text": "globex support again", "image_b64": b64_image(40)},
        {"id": "broken", "text": "picture attached", "image_b64": NOT_AN_IMAGE},
        {"id": "url-only", "text": "", "image_url": f"{base}/b.png"},
        {"id": "plain", "text": "just words about initech"},
    ]


EXPECTED = {"url": "ignored", "b64": "ignored", "broken": "ignored", "url-only": "ignored", "plain": "none"}


def test_the_model_itself_ignores_images_when_trained_without_them() -> None:
    text_only, with_images = build_tiny_model(trained_with_images=False), build_tiny_model()
    pre_batch = {"texts": ["great acme phone", "awful globex line"]}
    gen = torch.Generator().manual_seed(0)
    pixels = [torch.randn(3, 64, 64, generator=gen), torch.randn(3, 64, 64, generator=gen)]
    from clmlf.model.preprocess import Preprocessor

    for model in (text_only, with_images):
        pre = Preprocessor(model.config, model.text_encoder.tokenizer)
        seen = model(**pre.collate(pre_batch["texts"], pixels)).logits
        blind = model(**pre.collate(pre_batch["texts"], [None, None])).logits
        if model is text_only:
            assert torch.equal(seen, blind)
        else:
            assert not torch.allclose(seen, blind)


def run_predict(argv: list[str]) -> int:
    parser = OneLineArgumentParser(prog="clmlf")
    predict.add_parser(parser.add_subparsers(dest="command", parser_class=OneLineArgumentParser))
    args = parser.parse_args(["predict", *argv])
    return args.func(args, parser)


def predict_file(tmp_path: Path, checkpoint: Path, posts: list[dict], name: str) -> dict[str, dict]:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in posts))
    out = tmp_path / f"{name}-results.jsonl"
    assert run_predict(["--input", str(source), "--output", str(out), "--checkpoint", str(checkpoint),
                        "--device", "cpu", "--no-progress", "--allow-private-images"]) == 0
    return {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}


def test_predict_reports_ignored_and_never_fetches(tmp_path: Path, text_only_checkpoint: Path,
                                                  tiny_checkpoint: Path, image_server: CountingImageServer) -> None:
    posts = posts_with_images(image_server.base)
    results = predict_file(tmp_path, text_only_checkpoint, posts, "text-only")
    assert {k: r["image"] for k, r in results.items()} == EXPECTED
    assert image_server.requests == []  # not one connection to the image URL
    # the label comes from the text alone: the same scores as the posts without their images
    stripped = [{k: v for k, v in p.items() if not k.startswith("image_")} | {"text": p["text"] or " "}
                for p in posts if p["text"]]
    alone = predict_file(tmp_path, text_only_checkpoint, stripped, "stripped")
    for post_id in alone:
        assert results[post_id]["scores"] == alone[post_id]["scores"], post_id

    # the same posts with a model trained with images: fetched, decoded, used (or failed)
    used = predict_file(tmp_path, tiny_checkpoint, posts, "with-images")
    assert {k: r["image"] for k, r in used.items()} == {"url": "used", "b64": "used", "broken": "failed",
                                                         "url-only": "used", "plain": "none"}
    assert sorted(image_server.requests) == ["/a.png", "/b.png"]


@pytest.mark.integration
def test_stream_reports_ignored_and_never_fetches(tmp_path: Path, broker, redis_server, text_only_checkpoint: Path,
                                                 unique_name: str, image_server: CountingImageServer) -> None:
    topic = unique_name
    create_topic(broker, topic, 1)
    posts = posts_with_images(image_server.base)
    produce(broker.bootstrap, topic, posts)
    member = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=redis_server.url,
                    prefix=unique_name, checkpoint=text_only_checkpoint,
                    extra=["--exit-when-idle", "2s", "--allow-private-images"])
    assert member.wait(timeout=240) == 0, member.log()[-3000:]  # start-up alone can take a minute on a busy host
    store = store_for(redis_server.url, unique_name)
    results = {p["id"]: store.get_result(p["id"]) for p in posts}
    assert all(results.values()), [k for k, v in results.items() if not v]
    assert {k: r["image"] for k, r in results.items()} == EXPECTED
    assert image_server.requests == []
    assert "trained without images: post images are ignored" in member.log()


@pytest.mark.integration
def test_stream_metrics_count_ignored_as_its_own_outcome(broker, redis_server, text_only_checkpoint: Path,
                                                         unique_name: str, image_server: CountingImageServer) -> None:
    from clmlf.serving.inference import Predictor
    from consumers.assembly import assemble
    from consumers.config import RunConfig

    topic = unique_name
    create_topic(broker, topic, 1)
    produce(broker.bootstrap, topic, posts_with_images(image_server.base))
    config = RunConfig(bootstrap=broker.bootstrap, topic=topic, group="g", redis_url=redis_server.url,
                       redis_prefix=unique_name, max_batch=4, max_wait_ms=5, exit_when_idle=5, metrics_port=0,
                       session_timeout_ms=6000, alert_interval=0, allow_private_images=True)
    assembled = assemble(config, predictor=Predictor.from_checkpoint(text_only_checkpoint, "cpu"), serve_http=False)
    try:
        assert not assembled.pipeline.images.resolve.use_images  # nothing fetched, decoded or pooled
        assert assembled.run() == 0
    finally:
        assembled.close()
    store = store_for(redis_server.url, unique_name)
    assert all(store.get_result(post["id"]) for post in posts_with_images(image_server.base))
    registry = assembled.metrics.registry
    assert registry.get_sample_value("clmlf_image_fetch_total", {"outcome": "ignored"}) == 4.0
    assert registry.get_sample_value("clmlf_image_fetch_total", {"outcome": "none"}) == 1.0
    assert registry.get_sample_value("clmlf_image_fetch_total", {"outcome": "used"}) is None
    assert image_server.requests == []
