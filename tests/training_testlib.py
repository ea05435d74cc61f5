"""Small on-disk datasets in the release layouts, for the data / train / evaluate / visualize tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

# Three label-specific vocabularies so a tiny model can learn something in a few steps.
WORDS = {0: ("great", "love", "happy", "win"), 1: ("table", "report", "monday", "bus"), 2: ("awful", "hate", "sad", "lost")}

TINY_MODEL_ARGS = [
    "--text-encoder", "tiny-random-bert", "--image-encoder", "tiny-cnn", "--fusion-dim", "32",
    "--fusion-layers", "1", "--image-layers", "1", "--image-size", "32", "--max-text-len", "32",
    "--no-progress", "--threads", "1",
]


def _entries(n: int, first_id: int, rng: random.Random, n_classes: int = 3) -> list[dict]:
    return [
        {"id": str(first_id + i), "text": " ".join(rng.choice(WORDS[i % n_classes]) for _ in range(5)),
         "emotion_label": i % n_classes}
        for i in range(n)
    ]


def make_mvsa(root: Path, *, n_train: int = 24, n_dev: int = 9, with_images: int = 6, seed: int = 0,
              folder: str = "MVSA-single") -> Path:
    """``root/<folder>`` in the CLMLF release layout; the first ``with_images`` train and dev ids get a JPEG,
    train id "1" gets an unreadable one, and the last train id has no back-translation."""
    rng = random.Random(seed)
    base = root / folder
    (base / "10-flod-1").mkdir(parents=True, exist_ok=True)
    (base / "dataset_image").mkdir(exist_ok=True)
    train, dev = _entries(n_train, 0, rng), _entries(n_dev, 1000, rng)
    (base / "10-flod-1" / "train.json").write_text(json.dumps(train))
    (base / "10-flod-1" / "dev.json").write_text(json.dumps(dev))
    (base / "10-flod-1" / "test.json").write_text(json.dumps(dev))
    translations = [{"id": e["id"], "text_translation": e["text"] + " indeed"} for e in train[:-1] + dev]
    (base / f"{folder}_translation.json").write_text(json.dumps(translations))
    for entry in train[:with_images] + dev[:with_images]:
        colour = (200, 40, 40) if entry["emotion_label"] == 0 else (40, 40, 200)
        Image.new("RGB", (48, 40), colour).save(base / "dataset_image" / f"{entry['id']}.jpg")
    (base / "dataset_image" / "1.jpg").write_bytes(b"this is not a jpeg")
    return root


def make_hfm(root: Path, n_train: int = 12, n_dev: int = 6) -> Path:
    rng = random.Random(1)
    base = root / "HFM"
    base.mkdir(parents=True, exist_ok=True)
    train, dev = _entries(n_train, 0, rng, 2), _entries(n_dev, 500, rng, 2)
    (base / "train.json").write_text(json.dumps(train))
    (base / "valid.json").write_text(json.dumps(dev))
    (base / "HFM.json").write_text(json.dumps([{"id": e["id"], "text_translation": e["text"]} for e in train + dev]))
    return root


TOMBERT_HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n"


def make_tombert(root: Path, year: str = "2015", rows: list[tuple] | None = None) -> Path:
    """``root/twitter<year>/{train,dev,test}.tsv`` + ``root/twitter<year>_images/``; image 1.jpg exists."""
    rows = rows or [
        (0, 2, "1.jpg", "$T$ is a wonderful place to live", "Paris"),
        (1, 0, "2.jpg", "terrible service from $T$ today", "RT @ united"),
        (2, 1, "3.jpg", "$T$ announced the schedule", "NASA"),
    ]
    folder = root / f"twitter{year}"
    folder.mkdir(parents=True, exist_ok=True)
    images = root / f"twitter{year}_images"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (40, 40), (10, 200, 10)).save(images / "1.jpg")
    body = "".join("\t".join(str(c) for c in row) + "\n" for row in rows)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.tsv").write_text(TOMBERT_HEADER + body)
    return root
