"""Benchmark datasets on disk -> lists of :class:`Sample`.

Two on-disk formats are read:

* the CLMLF release layout (MVSA-Single, MVSA-Multiple, HFM) under ``--data-root``:
  JSON split files ``[{"id", "text", "emotion_label"}]``, one back-translation file
  ``[{"id", "text_translation"}]`` and optional images ``dataset_image/<id>.jpg``;
* the TomBERT release of Twitter-15/17 for the aspect-based variant (Appendix B):
  tab-separated ``index, label, image id, sentence with $T$, target`` with a header
  line, images in ``<data-root>/twitter2015_images/<image id>``.

A missing or unreadable image never stops anything: the sample becomes image-less
(REFERENCE.md section 7) and the loader counts it in :class:`LoadStats`, which the
caller reports once per run. A malformed split file raises :class:`DataFormatError`
with one line naming the file and the entry.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from clmlf.fetch.decode import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

MVSA_LABELS: tuple[str, ...] = ("positive", "neutral", "negative")
HFM_LABELS: tuple[str, ...] = ("not-sarcastic", "sarcastic")
# TomBERT ids: 0 negative, 1 neutral, 2 positive -> this project's 3-class order.
_TOMBERT_TO_PROJECT = {0: 2, 1: 1, 2: 0}
ASPECT_PLACEHOLDER = "$T$"
SPLITS: tuple[str, ...] = ("train", "dev", "test")


class DataFormatError(ValueError):
    """A split or translation file that cannot be read; the message is one line."""


@dataclass(frozen=True)
class DatasetSpec:
    """Where one dataset lives under the data root and how its labels are named."""

    name: str
    folder: str
    split_files: dict[str, str]
    label_names: tuple[str, ...]
    kind: str = "json"  # "json" (CLMLF release) or "tombert" (aspect-based TSV)
    translation_file: str | None = None
    image_dir: str = "dataset_image"  # relative to the data root for tombert, to the folder for json


DATASETS: dict[str, DatasetSpec] = {
    "mvsa-single": DatasetSpec(
        name="mvsa-single",
        folder="MVSA-single",
        split_files={s: f"10-flod-1/{s}.json" for s in SPLITS},
        label_names=MVSA_LABELS,
        translation_file="MVSA-single_translation.json",
    ),
    "mvsa-multiple": DatasetSpec(
        name="mvsa-multiple",
        folder="MVSA-multiple",
        split_files={s: f"10-flod-1/{s}.json" for s in SPLITS},
        label_names=MVSA_LABELS,
        translation_file="MVSA-multiple_translation.json",
    ),
    "hfm": DatasetSpec(
        name="hfm",
        folder="HFM",
        split_files={"train": "train.json", "dev": "valid.json", "test": "test.json"},
        label_names=HFM_LABELS,
        translation_file="HFM.json",
    ),
    "twitter15": DatasetSpec(
        name="twitter15",
        folder="twitter2015",
        split_files={s: f"{s}.tsv" for s in SPLITS},
        label_names=MVSA_LABELS,
        kind="tombert",
        image_dir="twitter2015_images",
    ),
    "twitter17": DatasetSpec(
        name="twitter17",
        folder="twitter2017",
        split_files={s: f"{s}.tsv" for s in SPLITS},
        label_names=MVSA_LABELS,
        kind="tombert",
        image_dir="twitter2017_images",
    ),
    # Written by `clmlf probe build --out DIR` straight into DIR (clmlf/data/probe.py); test = held-out glyphs.
    "probe": DatasetSpec(
        name="probe",
        folder=".",
        split_files={s: f"{s}.json" for s in SPLITS},
        label_names=MVSA_LABELS,
        translation_file="probe_translation.json",
    ),
}


@dataclass(frozen=True)
class Sample:
    """One labelled post. ``translation`` is the DBCL text view (the text itself when none is shipped)."""

    id: str
    text: str
    label: int
    translation: str
    image_path: Path | None = None
    aspect: str | None = None


@dataclass
class LoadStats:
    """What the loader had to work around, reported once per run."""

    samples: int = 0
    with_image: int = 0
    missing_images: int = 0
    unreadable_images: int = 0
    missing_translations: int = 0

    def summary(self, where: str) -> str:
        return (
            f"{where}: {self.samples} samples, {self.with_image} with an image "
            f"({self.missing_images} missing, {self.unreadable_images} unreadable -> text only), "
            f"{self.missing_translations} without a back-translation (DBCL uses the text itself)"
        )


@dataclass
class Split:
    """The samples of one split with the dataset's label names and load statistics."""

    dataset: str
    split: str
    samples: list[Sample]
    label_names: tuple[str, ...]
    stats: LoadStats = field(default_factory=LoadStats)


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataFormatError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})") from None


def load_split(data_root: str | Path, dataset: str, split: str, probe_images: bool = True) -> Split:
    """Read ``split`` of ``dataset`` under ``data_root``; images are optional per sample.

    With ``probe_images`` every present image is decoded once, so that unreadable
    files are found (and counted) here rather than in the middle of training.
    """
    spec = dataset_spec(dataset)
    if split not in spec.split_files:
        raise DataFormatError(f"{dataset} has no split {split!r} (choose from {', '.join(spec.split_files)})")
    root = Path(data_root)
    path = root / spec.folder / spec.split_files[split]
    if not path.is_file():
        hint = "a folder written by clmlf probe build" if spec.folder == "." else f"the folder holding {spec.folder}/"
        raise DataFormatError(f"{path}: split file not found (is --data-root {hint}?)")
    stats = LoadStats()
    if spec.kind == "tombert":
        samples = _read_tombert(path, root / spec.image_dir, stats)
    else:
        translations = _read_translations(root / spec.folder / spec.translation_file) if spec.translation_file else {}
        samples = _read_json_split(path, root / spec.folder / spec.image_dir, translations, len(spec.label_names), stats)
    if probe_images:
        samples = [_probe(s, stats) for s in samples]
    stats.samples = len(samples)
    stats.with_image = sum(1 for s in samples if s.image_path is not None)
    return Split(dataset=dataset, split=split, samples=samples, label_names=spec.label_names, stats=stats)


def load_image(path: Path | None):
    """Decode a dataset image to RGB, or None when it is absent or unreadable (never raises)."""
    if path is None:
        return None
    try:
        return decode_image(path.read_bytes())
    except (OSError, ImageDecodeError):
        return None


def _probe(sample: Sample, stats: LoadStats) -> Sample:
    if sample.image_path is None or load_image(sample.image_path) is not None:
        return sample
    stats.unreadable_images += 1
    return Sample(sample.id, sample.text, sample.label, sample.translation, None, sample.aspect)


def _read_translations(path: Path) -> dict[str, str]:
    if not path.is_file():
        log.warning("%s: back-translation file not found; DBCL will use the original text", path)
        return {}
    entries = _read_json_list(path)
    out: dict[str, str] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("text_translation"), str) or "id" not in entry:
            raise DataFormatError(f"{path}: entry {i}: expected {{'id', 'text_translation': str}}")
        out[str(entry["id"])] = entry["text_translation"]
    return out


def _read_json_list(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _read_json_split(
    path: Path, image_dir: Path, translations: dict[str, str], n_classes: int, stats: LoadStats
) -> list[Sample]:
    samples = []
    for i, entry in enumerate(_read_json_list(path)):
        where = f"{path}: entry {i}"
        if not isinstance(entry, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(entry).__name__}")
        sample_id, text, label = entry.get("id"), entry.get("text"), entry.get("emotion_label")
        if not isinstance(sample_id, str | int) or isinstance(sample_id, bool) or str(sample_id) == "":
            raise DataFormatError(f"{where}: 'id' must be a non-empty string")
        if not isinstance(text, str):
            raise DataFormatError(f"{where} (id {sample_id}): 'text' must be a string")
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < n_classes:
            raise DataFormatError(f"{where} (id {sample_id}): 'emotion_label' must be an integer in 0..{n_classes - 1}")
        sample_id = str(sample_id)
        translation = translations.get(sample_id)
        if translation is None:
            stats.missing_translations += 1
            translation = text
        image = image_dir / f"{sample_id}.jpg"
        if image.is_file():
            image_path: Path | None = image
        else:
            stats.missing_images += 1
            image_path = None
        samples.append(Sample(sample_id, text, label, translation, image_path))
    return samples


def _read_tombert(path: Path, image_dir: Path, stats: LoadStats) -> list[Sample]:
    """TomBERT TSV: header, then ``index, label, image id, sentence with $T$, target`` per line."""
    samples = []
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        where = f"{path}: line {line_no}"
        if len(row) != 5:
            raise DataFormatError(f"{where}: expected 5 tab-separated fields, got {len(row)}")
        index, label_text, image_id, sentence, target = (cell.strip() for cell in row)
        try:
            label = _TOMBERT_TO_PROJECT[int(label_text)]
        except (ValueError, KeyError):
            raise DataFormatError(f"{where}: label must be 0, 1 or 2, got {label_text!r}") from None
        if ASPECT_PLACEHOLDER not in sentence:
            raise DataFormatError(f"{where}: sentence has no {ASPECT_PLACEHOLDER} placeholder")
        if not target:
            raise DataFormatError(f"{where}: empty target")
        text = sentence.replace(ASPECT_PLACEHOLDER, target)
        image = image_dir / image_id if image_id else None
        if image is not None and image.is_file():
            image_path: Path | None = image
        else:
            stats.missing_images += 1
            image_path = None
        stats.missing_translations += 1
        samples.append(Sample(f"{index}", text, label, text, image_path, aspect=target))
    return samples
