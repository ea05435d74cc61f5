"""What one training run reads: merged train splits, a held-out selection slice, the splits it reports.

    data = training_data(data_root, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.1, seed=0,
                         translation_view=True)
    data.train          # what the model learns from (back-translations added as extra samples)
    data.selection      # ("holdout", samples): picks best/; with holdout_fraction 0 it is the dev split
    data.reports        # {"holdout": ..., "holdout/mvsa-single": ..., ..., "mvsa-single/dev": ..., ...}

``oversample={"mvsa-single": 2}`` repeats that set's training posts (after the hold-out
draw, so the slice is untouched): with MVSA-Multiple four times the size of
MVSA-Single, the smaller set would otherwise weigh 20% of every gradient.

The held-out slice is drawn from the train splits by a hash of each post's
normalised text (and the seed), not by position: identical texts (retweets,
which MVSA-Multiple has hundreds of) always land on the same side, so nothing
the model trains on is in the slice that selects it. The dev splits are never
used for selection when a slice is held out, so their figures stay estimates.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from clmlf.data.datasets import DataFormatError, Sample, load_split

log = logging.getLogger(__name__)

HOLDOUT = "holdout"
TRANSLATION_SUFFIX = "#bt"
REPEAT_SUFFIX = "#r"


@dataclass
class TrainingData:
    train: list[Sample]
    selection: tuple[str, list[Sample]]
    reports: dict[str, list[Sample]]
    label_names: tuple[str, ...]
    label_counts: list[int] = field(default_factory=list)

    def eval_samples(self) -> list[Sample]:
        """Every sample any evaluation of the run reads (each once)."""
        seen: dict[str, Sample] = {}
        for samples in self.reports.values():
            for sample in samples:
                seen.setdefault(sample.id, sample)
        return list(seen.values())


def text_key(text: str) -> str:
    """The identity of a post's text for the hold-out draw: case and whitespace folded."""
    return " ".join(text.lower().split())


def in_holdout(text: str, fraction: float, seed: int) -> bool:
    """Whether a post with this text belongs to the held-out slice (stable across runs and machines)."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\x00{text_key(text)}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def holdout_split(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """``(kept for training, held out)``, split by :func:`in_holdout` of each text."""
    kept, held = [], []
    for sample in samples:
        (held if in_holdout(sample.text, fraction, seed) else kept).append(sample)
    return kept, held


def with_translation_views(samples: list[Sample]) -> list[Sample]:
    """Each sample, then (where it has one that differs) its back-translation as an extra labelled sample.

    The extra sample's own augmented text view is the original text, so DBCL still pairs the two.
    """
    out = []
    for sample in samples:
        out.append(sample)
        if sample.translation and sample.translation != sample.text:
            out.append(replace(sample, id=sample.id + TRANSLATION_SUFFIX, text=sample.translation,
                               translation=sample.text))
    return out


def oversampled(samples: list[Sample], repeats: dict[str, int]) -> list[Sample]:
    """Each sample of dataset ``name`` (id ``name/...``) ``repeats[name]`` times, copies with distinct ids."""
    out = []
    for sample in samples:
        out.append(sample)
        for k in range(1, repeats.get(sample.id.split("/", 1)[0], 1)):
            out.append(replace(sample, id=f"{sample.id}{REPEAT_SUFFIX}{k}"))
    return out


def training_data(
    data_root: str | Path,
    datasets: tuple[str, ...],
    *,
    holdout_fraction: float,
    seed: int,
    translation_view: bool,
    probe_images: bool = True,
    limit_train: int | None = None,
    oversample: dict[str, int] | None = None,
) -> TrainingData:
    """Load and assemble the run's splits (see the module docstring); sample ids become ``dataset/id``."""
    label_names: tuple[str, ...] | None = None
    train: list[Sample] = []
    reports: dict[str, list[Sample]] = {}
    for name in datasets:
        train_split = load_split(data_root, name, "train", probe_images=probe_images)
        dev_split = load_split(data_root, name, "dev", probe_images=probe_images)
        for split in (train_split, dev_split):
            log.info(split.stats.summary(f"{name}/{split.split}"))
        if label_names is None:
            label_names = train_split.label_names
        elif train_split.label_names != label_names:
            raise DataFormatError(f"{name}: labels {train_split.label_names} differ from {label_names}; "
                                  "only datasets with the same labels can be merged")
        prefix = f"{name}/" if len(datasets) > 1 else ""
        train.extend(replace(s, id=prefix + s.id) for s in train_split.samples)
        reports[f"{name}/dev"] = [replace(s, id=f"{name}/dev/{s.id}") for s in dev_split.samples]
    assert label_names is not None
    if limit_train:
        train = train[:limit_train]
    train, held = holdout_split(train, holdout_fraction, seed)
    if holdout_fraction > 0:
        if not held:
            raise ValueError(f"holdout fraction {holdout_fraction} left no training post out")
        by_source = {}
        if len(datasets) > 1:
            for name in datasets:
                by_source[f"{HOLDOUT}/{name}"] = [s for s in held if s.id.startswith(f"{name}/")]
        reports = {HOLDOUT: held, **{k: v for k, v in by_source.items() if v}, **reports}
        selection = (HOLDOUT, held)
    else:
        first = f"{datasets[0]}/dev"
        selection = (first, reports[first])
    if not train or not all(reports.values()):
        raise ValueError(f"{'+'.join(datasets)}: train and dev splits must not be empty")
    unknown = set(oversample or {}) - set(datasets)
    if unknown or len(datasets) < 2 and oversample:
        raise ValueError(f"--oversample names {', '.join(sorted(unknown or oversample))}: it applies to the "
                         f"merged datasets of the run ({', '.join(datasets)})")
    if oversample:
        train = oversampled(train, oversample)
    counts = [0] * len(label_names)
    for sample in train:
        counts[sample.label] += 1
    if translation_view:
        train = with_translation_views(train)
    return TrainingData(train=train, selection=selection, reports=reports, label_names=label_names,
                        label_counts=counts)
