"""``clmlf predict`` end to end on the tiny checkpoint: results, error lines, images, stdin/stdout, bad arguments."""

from __future__ import annotations

import base64
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_testlib import LoopbackServer, QuietHandler
from PIL import Image

from clmlf.commands import predict
from clmlf.settings import OneLineArgumentParser

REPO = Path(__file__).resolve().parents[1]
LABELS = {"positive", "neutral", "negative"}


def run_predict(argv: list[str]) -> int:
    """``clmlf predict ARGV`` in-process, through the same parser wiring as ``clmlf.cli``."""
    parser = OneLineArgumentParser(prog="clmlf")
    predict.add_parser(parser.add_subparsers(dest="command", parser_class=OneLineArgumentParser))
    args = parser.parse_args(["predict", *argv])
    return args.func(args, parser)


def jpeg_b64(color: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 80), color).save(buffer, "JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    """A real HTTP server on loopback serving /cat.jpg (a private address: refused unless allowed)."""
    body = base64.b64decode(jpeg_b64((30, 30, 200)))

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            self.send_body(body, "image/jpeg")

    with LoopbackServer(Handler) as server:
        yield f"{server.base}/cat.jpg"


def test_end_to_end_with_bad_lines_and_images(tmp_path: Path, tiny_checkpoint: Path, image_server: str) -> None:
    lines = [
        json.dumps({"id": "a", "text": "love my new acme phone", "topics": ["acme"], "image_b64": jpeg_b64(),
                    "created_at": "2026-11-20T09:12:00Z"}),
        "this is not json",
        json.dumps({"id": "b", "text": "globex support is slow", "topics": ["globex"]}),
        json.dumps({"text": "no id here"}),
        json.dumps({"id": "c", "text": "look at this", "image_url": image_server}),  # private: refused
        json.dumps({"id": "d", "text": "broken picture", "image_b64": base64.b64encode(b"not an image").decode()}),
        json.dumps({"id": "e", "text": "", "image_b64": jpeg_b64((0, 255, 0))}),
        json.dumps({"id": "f", "text": 42}),
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    assert run_predict(["--input", str(source), "--checkpoint", str(tiny_checkpoint), "--output", str(out),
                        "--batch-size", "2"]) == 0
    results = read_lines(out)
    assert len(results) == len(lines)

    assert results[1] == {"id": None, "line": 2, "error": {"reason": "invalid_json",
                                                          "detail": results[1]["error"]["detail"]}}
    assert results[3]["line"] == 4 and results[3]["error"]["reason"] == "missing_id"
    assert results[7] == {"id": "f", "line": 8, "error": {"reason": "bad_text", "detail": "'text' must be a string"}}

    by_id = {r["id"]: r for r in results if "error" not in r}
    assert list(by_id) == ["a", "b", "c", "d", "e"]
    assert [by_id[k]["image"] for k in "abcde"] == ["used", "none", "failed", "failed", "used"]
    for record in by_id.values():
        assert set(record["scores"]) == LABELS and record["label"] in LABELS
        assert sum(record["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert record["model"].startswith("tiny-random@")
    assert by_id["a"]["created_at"] == "2026-11-20T09:12:00.000Z" and by_id["a"]["topics"] == ["acme"]
    assert by_id["b"]["created_at"] == by_id["b"]["processed_at"]  # no event time: now
    assert by_id["c"]["topics"] == ["all"]


def test_failed_image_is_classified_on_text_alone(tmp_path: Path, tiny_checkpoint: Path, image_server: str) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text(
        json.dumps({"id": "with-url", "text": "same words", "image_url": image_server}) + "\n"
        + json.dumps({"id": "text-only", "text": "same words"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    run_predict(["--input", str(source), "--checkpoint", str(tiny_checkpoint), "--output", str(out)])
    failed, text_only = read_lines(out)
    assert failed["image"] == "failed" and text_only["image"] == "none"
    assert failed["scores"] == text_only["scores"]


def test_allow_private_images_fetches_from_loopback(tmp_path: Path, tiny_checkpoint: Path, image_server: str) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"id": "u", "text": "photo", "image_url": image_server}) + "\n")
    out = tmp_path / "out.jsonl"
    run_predict(["--input", str(source), "--checkpoint", str(tiny_checkpoint), "--output", str(out),
                 "--allow-private-images"])
    assert read_lines(out)[0]["image"] == "used"


def test_bundled_examples(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "out.jsonl"
    examples = REPO / "examples" / "posts.jsonl"
    assert run_predict(["--input", str(examples), "--checkpoint", str(tiny_checkpoint), "--output", str(out)]) == 0
    posts = [json.loads(line) for line in examples.read_text().splitlines()]
    results = read_lines(out)
    assert [r["id"] for r in results] == [p["id"] for p in posts]
    assert [r["image"] for r in results] == ["used" if "image_b64" in p else "none" for p in posts]
    assert 15 <= len(posts) <= 30 and any("image_b64" in p for p in posts)
    assert {"acme", "globex"} <= {t for p in posts for t in p.get("topics", [])}


def test_stdin_and_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tiny_checkpoint: Path) -> None:
    payload = (json.dumps({"id": "s1", "text": "hello"}) + "\n" + json.dumps({"id": "s2", "text": "bye"}) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(payload)))
    monkeypatch.setenv("CLMLF_CHECKPOINT", str(tiny_checkpoint))  # flag default comes from the environment
    assert run_predict(["--input", "-", "--output", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["s1", "s2"]


def assert_exit_2(argv: list[str], capsys: pytest.CaptureFixture, needle: str) -> None:
    with pytest.raises(SystemExit) as info:
        run_predict(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_missing_input_file(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_checkpoint: Path) -> None:
    assert_exit_2(["--input", str(tmp_path / "nope.jsonl"), "--checkpoint", str(tiny_checkpoint)], capsys,
                  "--input: file not found")


def test_missing_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source), "--checkpoint", str(tmp_path / "no-ckpt")], capsys,
                  "checkpoint directory not found")


def test_a_run_directory_means_its_best_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                  tiny_checkpoint: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "best")
    (run / "metrics.jsonl").write_text("")
    source = tmp_path / "p.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "love my new acme phone", "created_at": 1700000000}) + "\n")
    results = {}
    for name, checkpoint in (("run", run), ("best", run / "best")):
        out = tmp_path / f"{name}.jsonl"
        assert run_predict(["--input", str(source), "--output", str(out), "--checkpoint", str(checkpoint),
                            "--no-progress"]) == 0
        results[name] = {k: v for k, v in read_lines(out)[0].items() if k != "processed_at"}
    assert results["run"] == results["best"]

    shutil.rmtree(run / "best")
    shutil.copytree(tiny_checkpoint, run / "last")
    capsys.readouterr()
    assert_exit_2(["--input", str(source), "--checkpoint", str(run)], capsys,
                  f"{run}: training run directory without a best/ checkpoint; pass {run / 'last'}")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [(["--batch-size", "0"], "batch-size"), (["--device", "tpu"], "device"), (["--batch-size", "x"], "invalid int")],
)
def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_checkpoint: Path,
                       extra: list[str], needle: str) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source), "--checkpoint", str(tiny_checkpoint), *extra], capsys, needle)


def test_output_directory_must_exist(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_checkpoint: Path) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source), "--checkpoint", str(tiny_checkpoint), "--output",
                   str(tmp_path / "no" / "out.jsonl")], capsys, "--output: directory does not exist")


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        run_predict(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "clmlf predict --input" in text and "CLMLF_CHECKPOINT" in text


def test_real_entry_point_end_to_end(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """``python -m clmlf.cli predict`` as users run it: exit codes, one-line errors, output file."""
    import subprocess

    def clmlf(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "clmlf.cli", "predict", *argv], capture_output=True,
                              text=True, cwd=REPO, timeout=120, check=False)

    missing = clmlf("--input", str(tmp_path / "missing.jsonl"))
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [f"clmlf: error: --input: file not found: {tmp_path / 'missing.jsonl'}"]

    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"id": "x", "text": "acme!"}) + "\n{broken\n")
    out = tmp_path / "out.jsonl"
    done = clmlf("--input", str(source), "--checkpoint", str(tiny_checkpoint), "--output", str(out))
    assert done.returncode == 0, done.stderr
    results = read_lines(out)
    assert results[0]["id"] == "x" and results[1]["error"]["reason"] == "invalid_json"
    assert "line 2: skipped, invalid_json" in done.stderr


def test_without_checkpoint_and_without_embedded_model(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import clmlf.model.default_model as default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIRNAME", "no_such_default_model")
    monkeypatch.delenv("CLMLF_CHECKPOINT", raising=False)
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source)], capsys, "pass --checkpoint DIR")


@pytest.mark.skipif(not (REPO / "clmlf" / "model" / "default_model_files" / "config.json").is_file(),
                    reason="the embedded default model has not been trained into the tree yet")
def test_embedded_default_model_labels_the_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLMLF_CHECKPOINT", raising=False)
    source = tmp_path / "few.jsonl"
    source.write_text("\n".join((REPO / "examples" / "posts.jsonl").read_text().splitlines()[:4]) + "\n")
    out = tmp_path / "out.jsonl"
    assert run_predict(["--input", str(source), "--output", str(out), "--device", "cpu"]) == 0
    results = read_lines(out)
    assert len(results) == 4 and all("error" not in r for r in results)
    # the embedded default is text-only (trained_with_images: false): a post's image is ignored, never fetched
    assert results[0]["image"] == "ignored" and results[1]["image"] == "none"


def test_device_cuda_without_a_gpu(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_checkpoint: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source), "--checkpoint", str(tiny_checkpoint), "--device", "cuda"], capsys,
                  "--device: device 'cuda' requested but no CUDA GPU is available")


def test_broken_checkpoint_is_blamed_on_the_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                       tiny_checkpoint: Path) -> None:
    """An unloadable stored text encoder is a --checkpoint error naming the file, not a --device error."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "text_encoder" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    source = tmp_path / "p.jsonl"
    source.write_text("{}\n")
    assert_exit_2(["--input", str(source), "--checkpoint", str(broken)], capsys,
                  "--checkpoint: " + str(broken / "text_encoder" / "config.json"))


def test_a_text_only_model_labels_longer_chunks_so_batches_sort_among_more_posts(tmp_path: Path,
                                                                                 tiny_checkpoint: Path) -> None:
    """Chunks bound the image memory held at once; a model that ignores images holds none, so its
    chunks are longer (more posts sorted by token count before batches are cut: less padding)."""
    import io
    from concurrent.futures import ThreadPoolExecutor

    from tiny_models import build_tiny_checkpoint

    from clmlf.commands.predict import CHUNK_LINES, TEXT_ONLY_CHUNK_LINES, predict_stream
    from clmlf.fetch.image_fetch import FetchConfig, ImageFetcher
    from clmlf.model.checkpoint import load
    from clmlf.serving.inference import Predictor

    class Recording(Predictor):
        def predict(self, items, batch_size=None, on_batch=None):
            self.calls.append(len(items))
            return super().predict(items, batch_size, on_batch)

    n = CHUNK_LINES + 44
    lines = b"".join(json.dumps({"id": str(i), "text": f"post {i} " * (1 + i % 7)}).encode() + b"\n" for i in range(n))
    text_only = build_tiny_checkpoint(tmp_path / "text-only", trained_with_images=False)
    seen = {}
    for name, checkpoint in (("with images", tiny_checkpoint), ("text only", text_only)):
        predictor = Recording(load(checkpoint), device="cpu", batch_size=64, precision="fp32")
        predictor.calls = []
        sink = io.StringIO()
        with ImageFetcher(FetchConfig()) as fetcher, ThreadPoolExecutor(2) as pool:
            stats = predict_stream(io.BytesIO(lines), sink, predictor, fetcher, pool, progress=False)
        assert stats["posts"] == n and len(sink.getvalue().splitlines()) == n
        seen[name] = predictor.calls
    assert seen == {"with images": [CHUNK_LINES, 44], "text only": [n]}
    assert TEXT_ONLY_CHUNK_LINES > n
