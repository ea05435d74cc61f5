"""``clmlf visualize``: each figure writes a non-empty PNG; bad inputs exit 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from training_testlib import make_mvsa

from clmlf.cli import main
from clmlf.evaluation.visualize import attention_grid

torch.set_num_threads(1)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_side=100):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000
    with Image.open(path) as image:
        assert min(image.size) >= min_side
        assert np.asarray(image.convert("L")).std() > 5  # something was drawn


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


def test_attention_one_token_and_every_token(tiny_checkpoint, photo, tmp_path, capsys):
    one = tmp_path / "one.png"
    assert main(["visualize", "attention", "--checkpoint", str(tiny_checkpoint), "--text", "so happy at the beach",
                 "--image", str(photo), "--token", "happy", "--out", str(one), "--threads", "1"]) == 0
    _assert_png(one)
    assert torch.get_num_threads() == 1
    every = tmp_path / "every.png"
    assert main(["visualize", "attention", "--checkpoint", str(tiny_checkpoint), "--text", "so happy at the beach",
                 "--image", str(photo), "--out", str(every)]) == 0
    _assert_png(every)
    with Image.open(one) as a, Image.open(every) as b:
        assert b.size[0] > a.size[0]  # five panels are wider than one
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(every)


def test_attention_bad_inputs(tiny_checkpoint, photo, tmp_path, capsys):
    base = ["visualize", "attention", "--checkpoint", str(tiny_checkpoint), "--text", "so happy", "--out",
            str(tmp_path / "x.png")]
    for extra, needle in (
        (["--image", str(photo), "--token", "zebra"], "token 'zebra' is not in the tokenized text"),
        (["--image", str(tmp_path / "missing.jpg")], "image file not found"),
        (["--image", str(tmp_path / "bad.jpg")], "not_an_image"),
        (["--image", str(photo), "--threads", "0"], "threads must be between 1 and 1024, got 0"),
    ):
        (tmp_path / "bad.jpg").write_bytes(b"plain text")
        with pytest.raises(SystemExit) as exit_info:
            main(base + extra)
        assert exit_info.value.code == 2
        assert needle in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


def test_attention_grid_is_square_and_normalised():
    grid = attention_grid(np.arange(49, dtype=float))
    assert grid.shape == (7, 7) and grid.sum() == pytest.approx(1.0) and grid[6, 6] == grid.max()
    with pytest.raises(ValueError, match="square"):
        attention_grid(np.ones(10))


def test_clusters(tiny_checkpoint, tmp_path, capsys):
    make_mvsa(tmp_path / "data", n_train=6, n_dev=12, with_images=4)
    out = tmp_path / "clusters.png"
    assert main(["visualize", "clusters", "--checkpoint", str(tiny_checkpoint), "--data-root", str(tmp_path / "data"),
                 "--dataset", "mvsa-single", "--split", "dev", "--out", str(out)]) == 0
    _assert_png(out)
    summary = [line for line in capsys.readouterr().err.splitlines() if "mvsa-single/dev: 12 samples" in line]
    assert len(summary) == 1 and "(8 missing, 0 unreadable -> text only)" in summary[0]


def test_curves_and_bad_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"epoch": e, "train_loss": 3 / e, "train_ce": 1 / e, "train_lbcl": 1.5 / e, "dev_accuracy": 0.5 + e / 20,
                "dev_f1_weighted": 0.4 + e / 20, "dev_f1_macro": 0.3 + e / 20, "best": e == 3} for e in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "curves.png"
    assert main(["visualize", "curves", "--run", str(run), "--out", str(out)]) == 0
    _assert_png(out)
    (run / "metrics.jsonl").write_text("{broken\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["visualize", "curves", "--run", str(run), "--out", str(out)])
    assert exit_info.value.code == 2 and "line 1 is not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["visualize", "curves", "--run", str(tmp_path / "none"), "--out", str(out)])
    assert exit_info.value.code == 2 and "no metrics file" in capsys.readouterr().err
