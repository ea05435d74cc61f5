"""The typed configuration of one training run (flags and preset values, validated once)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clmlf.training.presets import get_preset

RESUME_DIR = "resume"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
SelectionMetric = Literal["accuracy", "f1_weighted", "f1_macro"]


class TrainConfig(BaseModel):
    """Everything one training run needs; preset values fill whatever is left as None."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    data_root: Path
    out: Path
    text_encoder: str = "minilm"
    image_encoder: str = "efficientnet_lite0"
    image_weights: str | None = None
    epochs: int | None = Field(None, ge=1)
    stage1_epochs: int | None = Field(None, ge=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    grad_accum: int = Field(1, ge=1)
    lbcl: bool | None = None
    dbcl: bool | None = None
    lbcl_form: Literal["reference", "paper", "normalized"] | None = None
    dbcl_form: Literal["reference", "normalized"] | None = None
    logit_adjustment: float | None = Field(None, ge=0)
    holdout_fraction: float | None = Field(None, ge=0, lt=1)
    translation_view: bool | None = None
    oversample: dict[str, int] | None = None
    text_train_layers: int | None = Field(None, ge=1)
    length_bucketing: bool | None = None
    prior_shift: bool | None = None
    lr_schedule: Literal["constant", "linear"] | None = None
    fusion_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    seed: int = Field(0, ge=0)
    resume: bool = False
    fusion_dim: int | None = Field(None, ge=2)
    fusion_layers: int | None = Field(None, ge=1)
    image_layers: int | None = Field(None, ge=0)
    max_text_len: int | None = Field(None, ge=4)
    image_size: int = Field(224, ge=8)
    lr: float | None = Field(None, gt=0)
    text_lr: float | None = Field(None, ge=0)
    weight_decay: float | None = Field(None, ge=0)
    temperature: float | None = Field(None, gt=0)
    lbcl_weight: float | None = Field(None, ge=0)
    dbcl_weight: float | None = Field(None, ge=0)
    selection_metric: SelectionMetric | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool | None = None
    compile: bool = False
    workers: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1)
    cache_text: bool = True
    text_cache_file: Path | None = None
    use_images: bool | None = None
    image_augment: bool = True  # flip + RandAugment on training images (off: every image recurs unchanged)
    cache_images: bool = False  # memoise the frozen image encoder's feature maps (needs image_augment off)
    distractor_rate: float = Field(0.0, ge=0, le=1)
    distractor_pool: int = Field(256, ge=1)
    limit_train: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    save_every: int = Field(0, ge=0)
    progress: bool = True

    @model_validator(mode="after")
    def _fill_from_preset(self) -> TrainConfig:
        preset = get_preset(self.preset)
        for name in ("batch_size", "stage1_epochs", "fusion_dim", "fusion_layers", "image_layers", "max_text_len",
                     "lr", "text_lr", "weight_decay", "temperature", "lbcl_weight", "dbcl_weight",
                     "selection_metric", "lbcl", "dbcl", "lbcl_form", "dbcl_form", "logit_adjustment",
                     "holdout_fraction", "translation_view", "text_train_layers", "length_bucketing", "use_images",
                     "prior_shift", "lr_schedule", "fusion_dtype"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(preset, name))
        if self.epochs is None:
            object.__setattr__(self, "epochs", preset.epochs)
        if self.oversample is None:
            object.__setattr__(self, "oversample", dict(preset.oversample))
        if any(n < 1 for n in self.oversample.values()):
            raise ValueError("--oversample repeats must be >= 1")
        if self.prior_shift and not self.holdout_fraction:
            raise ValueError("--prior-shift is chosen on the held-out slice: it needs --holdout-fraction > 0")
        if self.fusion_dim % 2 or self.fusion_dim % max(1, self.fusion_dim // 64):
            raise ValueError(f"fusion width {self.fusion_dim} must be even and divisible by its d/64 heads")
        if self.cache_images and self.image_augment:
            raise ValueError("the image feature cache needs --no-image-augment (augmented pixels never recur)")
        return self

    @model_validator(mode="after")
    def _no_distractors_without_images(self) -> TrainConfig:
        # A text-only model ignores every image (trained_with_images: false), so photos would teach it nothing.
        if not self.use_images and self.distractor_rate > 0:
            raise ValueError("--distractor-rate needs images: a text-only run (--no-images) never sees photos")
        return self

    @property
    def dataset(self) -> str:
        return get_preset(self.preset).dataset

    @property
    def datasets(self) -> tuple[str, ...]:
        """The datasets whose train splits are merged for training (their dev splits are all reported)."""
        return get_preset(self.preset).train_datasets

    @property
    def run_name(self) -> str:
        return "+".join(self.datasets)

    @property
    def aspect(self) -> bool:
        return get_preset(self.preset).aspect

    @property
    def text_frozen_throughout(self) -> bool:
        return self.stage1_epochs >= self.epochs
