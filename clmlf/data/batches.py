"""Samples -> model batches, reproducibly.

* :class:`PostDataset` turns one :class:`clmlf.data.datasets.Sample` into the tensors of its
  original view and (for DBCL) its augmented view. Every random choice of a
  sample (flip, RandAugment ops, whether and which distractor photo is attached)
  is drawn from a generator seeded by ``(seed, epoch, index)``, so a batch is the
  same whatever the number of workers and whether the run was resumed.
* :class:`EpochOrder` is the shuffled order of one epoch (seeded by ``(seed, epoch)``),
  sharded across data-parallel ranks like ``DistributedSampler``, and able to
  start at a position inside the epoch (resume).
* :class:`BatchCollator` tokenizes a list of items into one or two model batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from clmlf.data.augment import ImageAugment, identity_augment
from clmlf.data.datasets import Sample, load_image
from clmlf.model.preprocess import Preprocessor

_MIX = 1_000_003


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample, per-epoch seed (stable across runs, workers and resumes)."""
    return (seed * _MIX * _MIX + epoch * _MIX + index) % (2**63 - 1)


@dataclass
class Item:
    """One sample ready for collation; images are normalised tensors or None (text only)."""

    index: int
    label: int
    text: str
    translation: str
    aspect: str | None
    image: Tensor | None
    image_aug: Tensor | None
    distractor: bool


class PostDataset(Dataset):
    """Samples with their images decoded, augmented and (optionally) a distractor photo attached.

    ``distractors`` is a pool of label-free photos; an image-less sample gets one of
    them with probability ``distractor_rate`` (training only), teaching the model to
    ignore photos that say nothing about the text's sentiment. Distractors are not
    augmented (both views get the same tensor), so their image features can be
    memoised (:mod:`clmlf.data.image_cache`). With ``augment_copies`` K > 0 each
    picture has K fixed augmented versions (each drawn once from its own seed) and
    every epoch picks one of them, so a feature cache can hold all K per picture.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        preprocessor: Preprocessor,
        *,
        augment: ImageAugment = identity_augment,
        with_augmented_view: bool = False,
        distractors: Sequence[Image.Image] = (),
        distractor_rate: float = 0.0,
        seed: int = 0,
        use_images: bool = True,
        augment_copies: int = 0,
    ):
        if augment_copies < 0:
            raise ValueError("augment_copies must be >= 0")
        self.samples = list(samples)
        self.augment_copies = augment_copies
        self.pre = preprocessor
        self.augment = augment
        self.with_augmented_view = with_augmented_view
        self.distractors = list(distractors)
        self.distractor_rate = distractor_rate if self.distractors else 0.0
        self.seed = seed
        self.use_images = use_images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            picture = load_image(sample.image_path) if self.use_images else None
            distractor = False
            if picture is None and self.distractor_rate > 0 and float(torch.rand(())) < self.distractor_rate:
                picture = self.distractors[int(torch.randint(len(self.distractors), ()))]
                distractor = True
            image = image_aug = None
            if distractor:  # not augmented: a fixed pool of tensors whose features can be cached
                image = self.pre.image_tensor(picture)
                image_aug = image if self.with_augmented_view else None
            elif picture is not None:
                base = self.pre.resize_and_crop(picture)
                image = self._augmented(base, index)
                if self.with_augmented_view:
                    image_aug = self._augmented(base, index)
        return Item(index, sample.label, sample.text, sample.translation, sample.aspect, image, image_aug, distractor)

    def _augmented(self, base: Image.Image, index: int) -> Tensor:
        if not self.augment_copies:
            return self.pre.to_tensor(self.augment(base))
        copy = int(torch.randint(self.augment_copies, ()))  # from this epoch's stream of the sample
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, -1 - copy, index))  # fixed per (picture, copy)
            return self.pre.to_tensor(self.augment(base))


class BatchCollator:
    """Items -> ``{"original": batch, "augmented": batch | None, "labels", "indices", "distractors"}``."""

    def __init__(self, preprocessor: Preprocessor, with_augmented_view: bool = False):
        self.pre = preprocessor
        self.with_augmented_view = with_augmented_view

    def __call__(self, items: list[Item]) -> dict:
        aspects = [it.aspect for it in items] if any(it.aspect is not None for it in items) else None
        out = {
            "original": self.pre.collate([it.text for it in items], [it.image for it in items], aspects),
            "augmented": None,
            "labels": torch.tensor([it.label for it in items], dtype=torch.long),
            "indices": torch.tensor([it.index for it in items], dtype=torch.long),
            "distractors": int(sum(it.distractor for it in items)),
        }
        if self.with_augmented_view:
            out["augmented"] = self.pre.collate([it.translation for it in items], [it.image_aug for it in items], aspects)
        return out


class EpochOrder(Sampler[int]):
    """Shuffled (or sequential) indices of one epoch for one rank, optionally from a start position.

    The permutation depends only on ``(seed, epoch)``; rank ``r`` of ``world`` takes
    every ``world``-th index (padded by wrapping, as ``DistributedSampler`` does).
    ``start`` skips that many of this rank's indices (resume inside an epoch).
    """

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 0))
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.world > 1:
            per_rank = -(-self.size // self.world)
            order = (order * 2)[: per_rank * self.world] if order else order
            order = order[self.rank :: self.world]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.indices()) - self.start)


class LengthBucketedOrder(EpochOrder):
    """:class:`EpochOrder` with batches of similar text length (less padding, same samples per epoch).

    The epoch's shuffled order is cut into windows of ``window`` batches; each
    window is sorted by length and cut into batches, and the batches of the whole
    epoch are shuffled again, all seeded by ``(seed, epoch)``. Consecutive
    ``batch_size`` indices form one batch, so the order stays a flat list that a
    resume can enter at any sample position.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, rank: int = 0, world: int = 1,
                 window: int = 50):
        super().__init__(len(lengths), shuffle=True, seed=seed, rank=rank, world=world)
        self.lengths, self.batch_size, self.window = list(lengths), batch_size, window

    def indices(self) -> list[int]:
        order = super().indices()
        span = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start : start + span], key=lambda i: self.lengths[i])
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        # Only the epoch's very last batch can be short; it stays last so every other batch is whole.
        tail = batches.pop() if batches and len(batches[-1]) < self.batch_size else []
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, 1))
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [index for b in shuffled for index in batches[b]] + tail
