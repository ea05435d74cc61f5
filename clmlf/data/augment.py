"""Image augmentation of the published recipe (REFERENCE.md sections 2-3).

Training images get a random horizontal flip and RandAugment(2 ops, magnitude 14
of 30) on BOTH the original and the augmented (DBCL) view; evaluation images get
neither. The text view of the augmented sample is the back-translation, which the
loader puts in :attr:`clmlf.data.datasets.Sample.translation`.

RandAugment is torchvision's (``num_magnitude_bins=31`` so magnitude 14 means
"14 of 30"). Its op list differs from the release's: it has Identity and lacks
Invert, SolarizeAdd and Cutout (see docs/training.md).

Randomness comes from torch's global generator (the DataLoader seeds it per
worker), so a run is reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image
from torchvision import transforms

RANDAUGMENT_OPS = 2
RANDAUGMENT_MAGNITUDE = 14
RANDAUGMENT_BINS = 31  # magnitudes 0..30, as in the release

ImageAugment = Callable[[Image.Image], Image.Image]


def train_image_augment(
    num_ops: int = RANDAUGMENT_OPS, magnitude: int = RANDAUGMENT_MAGNITUDE
) -> ImageAugment:
    """PIL -> PIL: horizontal flip (p=0.5) then RandAugment(num_ops, magnitude of 30)."""
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandAugment(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=RANDAUGMENT_BINS),
        ]
    )


def identity_augment(image: Image.Image) -> Image.Image:
    """Evaluation: no augmentation."""
    return image
