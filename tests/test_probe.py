"""The image-sentiment probe: builder determinism and balance, bad inputs, and that CLMLF learns it from pixels.

The training test uses the real frozen EfficientNet-Lite0 on a few hundred probe
images (features cached, tiny fusion, tiny random text encoder) and compares
against the same recipe with the images ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clmlf.cli import main
from clmlf.data.datasets import load_split
from clmlf.data.probe import (
    DEFAULT_GLYPHS,
    FONT_PACKAGE,
    GLYPH_SETS,
    HELD_OUT,
    LABELS,
    ProbeConfig,
    ProbeError,
    build_probe,
    face_patches,
    find_emoji_font,
    render_glyphs,
    visible_square,
)
from clmlf.evaluation.probe_analysis import SENTIMENT_TEXTS

torch.set_num_threads(1)

try:
    find_emoji_font()
    HAVE_FONT = True
except ProbeError:
    HAVE_FONT = False
needs_font = pytest.mark.skipif(not HAVE_FONT, reason=f"Debian package {FONT_PACKAGE} not installed (make system-deps)")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_probe(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "p"
    assert main(["probe", "build", "--out", str(out), "--size", "90", "--seed", "3"]) == 0
    return out


@needs_font
def test_same_seed_gives_byte_identical_files_and_another_seed_other_files(small_probe, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    build_probe(ProbeConfig(out=again, size=90, seed=3))
    build_probe(ProbeConfig(out=other, size=90, seed=4))
    first = _digests(small_probe)
    assert len(first) == 90 + 6  # one JPEG per post + 3 splits, translations, faces, info
    assert _digests(again) == first
    changed = {k for k, v in _digests(other).items() if first.get(k) != v}
    assert len(changed) > 80


@needs_font
def test_splits_are_balanced_and_test_holds_only_the_held_out_glyphs(small_probe):
    faces = json.loads((small_probe / "probe_faces.json").read_text())
    train_set = GLYPH_SETS[DEFAULT_GLYPHS]
    train_glyphs = {g for gs in train_set.values() for g in gs}
    held_out = {g for gs in HELD_OUT.values() for g in gs}
    assert not train_glyphs & held_out
    sizes = {}
    for split in ("train", "dev", "test"):
        entries = json.loads((small_probe / f"{split}.json").read_text())
        sizes[split] = len(entries)
        counts = Counter(e["emotion_label"] for e in entries)
        assert set(counts) == {0, 1, 2} and max(counts.values()) - min(counts.values()) <= 1
        for entry in entries:
            face = faces[entry["id"]]
            assert face["label"] == entry["emotion_label"] and face["split"] == split
            assert face["glyph"] in (held_out if split == "test" else train_glyphs)
            assert face["glyph"] in (HELD_OUT if split == "test" else train_set)[entry["emotion_label"]]
            vx0, vy0, vx1, vy1 = visible_square(face["width"], face["height"])
            x0, y0, x1, y1 = face["box"]
            assert vx0 <= x0 < x1 <= vx1 and vy0 <= y0 < y1 <= vy1  # survives the model's center crop
    assert sizes == {"train": 62, "dev": 14, "test": 14}


@needs_font
def test_every_glyph_set_renders_extends_core_and_never_holds_a_test_glyph(tmp_path):
    held_out = {g for gs in HELD_OUT.values() for g in gs}
    for name, glyph_set in GLYPH_SETS.items():
        assert set(glyph_set) == {0, 1, 2}
        for label, glyphs in glyph_set.items():
            assert len(set(glyphs)) == len(glyphs) and not set(glyphs) & held_out, name
            assert set(GLYPH_SETS["core"][label]) <= set(glyphs), name
        assert len(render_glyphs(find_emoji_font(), [g for gs in glyph_set.values() for g in gs])) == \
            sum(len(gs) for gs in glyph_set.values())
    assert sum(len(gs) for gs in GLYPH_SETS["wide"].values()) == 67
    out = tmp_path / "wide"
    assert main(["probe", "build", "--out", str(out), "--size", "60", "--glyphs", "wide"]) == 0
    info = json.loads((out / "probe_info.json").read_text())
    assert info["glyph_set"] == "wide" and sum(map(len, info["train_glyphs"].values())) == 67
    faces = json.loads((out / "probe_faces.json").read_text()).values()
    wide = {g for gs in GLYPH_SETS["wide"].values() for g in gs}
    assert all(f["glyph"] in (held_out if f["split"] == "test" else wide) for f in faces)


@needs_font
def test_text_is_label_free_and_the_loader_reads_the_probe(small_probe):
    split = load_split(small_probe, "probe", "train")
    assert split.stats.with_image == len(split.samples) == 62 and split.stats.missing_translations == 0
    sentiment_words = {w.strip(",") for texts in SENTIMENT_TEXTS.values() for t in texts for w in t.split()}
    sentiment_words -= {"I", "a", "so", "this", "is", "with", "and", "what", "me", "it", "am", "day", "time", "news"}
    by_label = {label: {s.text for s in split.samples if s.label == label} for label in (0, 1, 2)}
    for sample in split.samples:
        assert sample.translation == sample.text
        assert not set(sample.text.split()) & sentiment_words, sample.text
    assert len(set.union(*by_label.values())) > 30  # varied sentences, not one per class


def test_missing_font_exits_2_naming_the_debian_package(tmp_path, capsys, monkeypatch):
    assert_line = f"apt-get install {FONT_PACKAGE}"
    with pytest.raises(SystemExit) as exc:
        main(["probe", "build", "--out", str(tmp_path / "p"), "--font", str(tmp_path / "NotoColorEmoji.ttf")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and assert_line in err
    monkeypatch.setattr("clmlf.data.probe.FONT_DIRS", (str(tmp_path),))
    with pytest.raises(SystemExit) as exc:
        main(["probe", "build", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and FONT_PACKAGE in err
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize(("args", "needle"), [(["--size", "10"], "--size must be >= 30"),
                                               (["--seed", "-1"], "--seed must be >= 0"),
                                               (["--size", "many"], "invalid int")])
def test_bad_build_arguments_exit_2_with_one_line(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as exc:
        main(["probe", "build", "--out", str(tmp_path / "p"), *args])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and needle in err


def test_image_cache_with_augmentation_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--preset", "probe", "--data-root", str(tmp_path), "--out", str(tmp_path / "r"),
              "--image-cache"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and "--no-image-augment" in err


@settings(max_examples=100, deadline=None)
@given(width=st.integers(60, 900), height=st.integers(60, 900), data=st.data())
def test_face_patches_cover_the_face_and_nothing_far_from_it(width, height, data):
    vx0, vy0, vx1, vy1 = visible_square(width, height)
    x0 = data.draw(st.integers(vx0, vx1 - 2))
    y0 = data.draw(st.integers(vy0, vy1 - 2))
    x1 = data.draw(st.integers(x0 + 1, vx1))
    y1 = data.draw(st.integers(y0 + 1, vy1))
    record = {"width": width, "height": height, "box": [x0, y0, x1, y1]}
    mask = face_patches(record, 256, 224)
    assert mask.shape == (7, 7) and mask.any()
    rows, cols = np.nonzero(mask)
    # the occupied patches form one rectangle (a box maps to a box)
    assert mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    scale = 256 / min(width, height)
    left = (round(width * scale) - 224) // 2
    cell = 224 / 7
    # the patch holding the box's centre is marked; a patch wholly left of the box is not
    cx = ((x0 + x1) / 2 * scale - left) / cell
    assert mask[:, min(6, max(0, int(cx)))].any()
    if cols.min() > 0:
        assert (x0 * scale - left) >= cols.min() * cell - 1e-6


def test_a_face_filling_the_crop_covers_every_patch():
    width, height = 300, 200
    assert face_patches({"width": width, "height": height, "box": list(visible_square(width, height))}, 256, 224).all()


# ----------------------------------------------------------------------------- learning from pixels

PROBE_RECIPE = ["--text-encoder", "tiny-random-bert", "--fusion-dim", "64", "--fusion-layers", "1", "--image-layers", "1", "--max-text-len", "32",
                "--epochs", "6", "--stage1-epochs", "6", "--lr", "1e-3", "--batch-size", "16", "--threads", "1",
                "--no-progress", "--no-lbcl", "--no-dbcl", "--no-image-augment", "--seed", "0"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-train")
    data = root / "data"
    build_probe(ProbeConfig(out=data, size=300, seed=0, glyphs="core"))  # pinned: the bar below is for 35 faces
    cache = root / "text.safetensors"
    with_images, text_only = root / "images", root / "text-only"
    common = ["train", "--preset", "probe", "--data-root", str(data), *PROBE_RECIPE, "--text-cache-file", str(cache)]
    assert main([*common, "--out", str(with_images), "--image-cache"]) == 0
    assert main([*common, "--out", str(text_only), "--no-images"]) == 0
    return data, with_images, text_only


def _best_dev_accuracy(run: Path) -> float:
    return max(json.loads(line)["dev_accuracy"] for line in (run / "metrics.jsonl").read_text().splitlines())


def _evaluate(capsys, run: Path, data: Path, split: str, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run / "best"), "--data-root", str(data), "--dataset", "probe",
                 "--split", split, "--json", "--no-progress", "--threads", "1", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@needs_font
@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute on 2 idle cores; the margin is for a machine shared by many jobs
def test_clmlf_learns_the_probe_from_pixels_and_text_alone_cannot(trained, capsys):
    data, with_images, text_only = trained
    text_acc = _best_dev_accuracy(text_only)
    image_acc = _best_dev_accuracy(with_images)
    assert text_acc <= 0.55  # chance is 1/3 (45 balanced dev posts): the text carries no label
    assert image_acc >= 0.6 and image_acc >= text_acc + 0.2, (image_acc, text_acc)
    # evaluate recomputes the image features in float32 (training read float16 copies from the cache):
    # the same checkpoint scores the same up to a borderline post or two
    dev = _evaluate(capsys, with_images, data, "dev")
    assert abs(dev["accuracy"] - image_acc) <= 2 / 45 + 1e-9
    config = json.loads((with_images / "best" / "config.json").read_text())
    assert "efficientnet_lite0" in json.dumps(config)


@needs_font
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_probe_attention_and_disagreement_report_shares(trained, capsys):
    data, with_images, _ = trained
    capsys.readouterr()
    assert main(["probe", "attention", "--checkpoint", str(with_images / "best"), "--data-root", str(data),
                 "--json", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    image_size = json.loads((with_images / "best" / "config.json").read_text())["model"]["image_size"]
    assert result["posts"] == 45 and result["patches"] == (image_size // 32) ** 2  # the encoder's grid, 12x12 at 384
    assert 0 < result["uniform_share"] < 1 and 0 <= result["face_share_all_heads"] <= 1
    assert len(result["ratio_all_heads_per_layer"]) == 1
    assert main(["probe", "disagree", "--checkpoint", str(with_images / "best"), "--data-root", str(data),
                 "--json", "--threads", "1"]) == 0
    table = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {(r["text"], r["face"]) for r in table} == {(t, f) for t in ("positive", "negative")
                                                        for f in ("positive", "neutral", "negative")}
    for row in table:
        assert row["n"] == 15 and row["neither"] >= 0
        assert row["follows_face"] + row["follows_text"] + row["neither"] == pytest.approx(1.0 + row["agree"] * row["follows_face"])
    # fp32 like clmlf probe glyphs (evaluate's auto precision may be bf16, which can flip a near tie)
    test_accuracy = _evaluate(capsys, with_images, data, "test", "--precision", "fp32")["accuracy"]
    assert main(["probe", "glyphs", "--checkpoint", str(with_images / "best"), "--data-root", str(data),
                 "--split", "test", "--json", "--threads", "1"]) == 0
    glyphs = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    held_out = {g: LABELS[label] for label, gs in HELD_OUT.items() for g in gs}
    assert {row["glyph"] for row in glyphs} <= set(held_out) and sum(row["n"] for row in glyphs) == 45
    assert all(row["label"] == held_out[row["glyph"]] for row in glyphs)
    assert [row["accuracy"] for row in glyphs] == sorted(row["accuracy"] for row in glyphs)  # worst first
    assert sum(row["accuracy"] * row["n"] for row in glyphs) / 45 == pytest.approx(test_accuracy)  # same model, same posts


def test_probe_help_teaches_with_examples_without_loading_torch():
    import subprocess
    import sys

    code = "\n".join([
        "import sys",
        "from clmlf.cli import main",
        "try:",
        "    main(['probe', 'build', '--help'])",
        "except SystemExit as exit:",
        "    assert exit.code == 0, exit.code",
        "assert 'torch' not in sys.modules and 'PIL' not in sys.modules, 'heavy import on --help'",
    ])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "examples:" in result.stdout and FONT_PACKAGE in result.stdout and "--size" in result.stdout
