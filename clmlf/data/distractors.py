"""Natural-looking photos that carry no sentiment label, made offline.

Used twice, with disjoint sources so that what is measured was never trained on:

* ``pool="train"``: images attached at random to part of each training batch so
  the model learns that an uninformative photo must not move its prediction;
* ``pool="eval"``: images attached to every dev post to measure how much the
  dev accuracy moves when arbitrary photos are attached (docs/model-card.md).

Two kinds of picture are mixed: random crops (scale, aspect, flip, colour shift)
of the photographs shipped inside installed packages (scikit-learn's
``china.jpg`` for train; its ``flower.jpg`` and matplotlib's ``grace_hopper.jpg``
for eval), and procedural scenes (a sky/ground gradient, smooth multi-scale
colour noise and blurred blobs) drawn from separate seed ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

POOLS = ("train", "eval")
_EVAL_SEED_OFFSET = 1_000_003


def _package_photo(name: str) -> Image.Image | None:
    """A photograph shipped inside an installed package, or None if that package is missing."""
    try:
        if name in ("china.jpg", "flower.jpg"):
            import sklearn.datasets

            path = Path(sklearn.datasets.__file__).parent / "images" / name
        else:
            import matplotlib

            path = Path(matplotlib.get_data_path()) / "sample_data" / name
        return Image.open(path).convert("RGB")
    except (ImportError, OSError):
        return None


def _photos(pool: str) -> list[Image.Image]:
    names = ("china.jpg",) if pool == "train" else ("flower.jpg", "grace_hopper.jpg")
    return [p for p in (_package_photo(n) for n in names) if p is not None]


def _random_crop(photo: Image.Image, rng: np.random.Generator, size: int) -> Image.Image:
    w, h = photo.size
    scale = rng.uniform(0.3, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(min(w, max(16, round(min(w, h) * scale * np.sqrt(aspect)))))
    ch = int(min(h, max(16, round(min(w, h) * scale / np.sqrt(aspect)))))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    crop = photo.crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    pixels = np.asarray(crop, dtype=np.float32)
    pixels = pixels * rng.uniform(0.7, 1.3, size=3) + rng.uniform(-20, 20)  # colour and brightness shift
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _smooth_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multi-scale colour noise in [0, 1], shape [size, size, 3] (cloud / texture-like)."""
    total = np.zeros((size, size, 3), dtype=np.float32)
    weight = 1.0
    for cells in (2, 4, 8, 16):
        grid = (rng.random((cells, cells, 3)) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255
        total += weight * layer
        weight /= 2
    return total / total.max()


def _procedural_scene(rng: np.random.Generator, size: int) -> Image.Image:
    horizon = rng.uniform(0.3, 0.7)
    sky_top, sky_low = rng.uniform(40, 255, 3), rng.uniform(120, 255, 3)
    ground_top, ground_low = rng.uniform(20, 200, 3), rng.uniform(0, 120, 3)
    rows = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    sky = sky_top + (sky_low - sky_top) * (rows / horizon)
    ground = ground_top + (ground_low - ground_top) * ((rows - horizon) / (1 - horizon))
    base = np.where(rows < horizon, sky, ground)[:, None, :].repeat(size, axis=1)
    pixels = base * (0.6 + 0.4 * _smooth_noise(rng, size))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(size * 0.04, size * 0.3, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.6 else draw.rectangle
        shape((cx - rx, cy - ry, cx + rx, cy + ry), fill=colour)
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 4.0))))


def distractor_images(count: int, pool: str = "train", seed: int = 0, size: int = 256) -> Iterator[Image.Image]:
    """``count`` RGB images of ``size`` x ``size`` from ``pool`` ("train" or "eval"), reproducible from ``seed``."""
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
    rng = np.random.default_rng(seed + (_EVAL_SEED_OFFSET if pool == "eval" else 0))
    photos = _photos(pool)
    for _ in range(count):
        if photos and rng.random() < 0.5:
            yield _random_crop(photos[int(rng.integers(len(photos)))], rng, size)
        else:
            yield _procedural_scene(rng, size)
