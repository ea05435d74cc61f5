"""A tiny random CLMLF checkpoint (tiny-random-bert + tiny-cnn, d=32) for tests of every layer.

A test fixture. It is a real checkpoint directory written by :func:`clmlf.model.checkpoint_save.save_checkpoint`,
so code under test loads it exactly like a trained model. Same seed, same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clmlf.model.config import DEFAULT_LABELS, ModelConfig

TINY_IMAGE_SIZE = 64
TINY_RESIZE = 72


def tiny_config(labels: Sequence[str] = DEFAULT_LABELS, trained_with_images: bool = True) -> ModelConfig:
    """The tiny model's configuration: small images (64 px) and a one-layer fusion of width 32
    (``trained_with_images=False``: a text-only model, which ignores images)."""
    return ModelConfig(
        text_encoder="tiny-random-bert",
        image_encoder="tiny-cnn",
        freeze_image_encoder=True,
        fusion_dim=32,
        fusion_layers=1,
        image_layers=1,
        max_text_len=64,
        labels=tuple(labels),
        image_size=TINY_IMAGE_SIZE,
        resize=TINY_RESIZE,
        trained_with_images=trained_with_images,
    )


def build_tiny_model(labels: Sequence[str] = DEFAULT_LABELS, seed: int = 0, trained_with_images: bool = True):
    """An in-memory tiny CLMLF (eval mode), deterministic from ``seed``; the global RNG is left untouched."""
    from clmlf.model.model import CLMLF

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLMLF(tiny_config(labels, trained_with_images))
    return model.eval()


def build_tiny_checkpoint(
    out_dir: str | Path, labels: Sequence[str] = DEFAULT_LABELS, seed: int = 0, trained_with_images: bool = True
) -> Path:
    """Write a tiny random checkpoint to ``out_dir`` and return its path."""
    from clmlf.model.checkpoint_save import save_checkpoint

    model = build_tiny_model(labels, seed, trained_with_images)
    return save_checkpoint(
        model, model.text_encoder.tokenizer, out_dir, extra={"tiny": True, "seed": seed}, name="tiny-random"
    )
