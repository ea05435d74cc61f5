"""The typed configuration of one training run (flags, environment and preset values, validated once).

:class:`TrainConfig` is the settings class of ``clmlf train`` on the settings layer of
:mod:`clmlf.process_settings`: a value comes from the flag given, else its environment variable
(the field's alias: ``CLMLF_TRAIN_`` + the flag's name, e.g. ``--stage1-epochs`` ->
``CLMLF_TRAIN_STAGE1_EPOCHS``, ``--no-text-cache`` -> ``CLMLF_TRAIN_TEXT_CACHE=false``; ``--data-root``
and ``--device`` read ``CLMLF_DATA_ROOT`` / ``CLMLF_DEVICE`` like the other commands), else the preset
(for the fields left None), else the field's default. ``preset`` and ``out`` are flags only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from clmlf.process_settings import ProcessSettings
from clmlf.training.presets import get_preset

RESUME_DIR = "resume"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "train_config.json"
SelectionMetric = Literal["accuracy", "f1_weighted", "f1_macro"]


def parse_repeat(text: str) -> tuple[str, int]:
    """``DATASET=N`` (N >= 1) -> ``(DATASET, N)``, the value of ``--oversample``."""
    name, sep, count = text.strip().partition("=")
    if not sep or not name or not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected DATASET=N with N >= 1, got {text!r}")
    return name, int(count)


def _repeats(value: Any) -> Any:
    """``--oversample`` pairs, or the environment's ``DATASET=N[,DATASET=N...]``, as a dict."""
    if isinstance(value, str):
        value = [parse_repeat(part) for part in value.split(",") if part.strip()]
    if isinstance(value, list | tuple):
        return dict(value)
    return value


Repeats = Annotated[dict[str, int] | None, NoDecode, BeforeValidator(_repeats)]


class TrainConfig(ProcessSettings):
    """Everything one training run needs; preset values fill whatever is left as None."""

    preset: str
    data_root: Path = Field(alias="CLMLF_DATA_ROOT")
    out: Path
    text_encoder: str = Field("minilm", alias="CLMLF_TRAIN_TEXT_ENCODER")
    image_encoder: str = Field("efficientnet_lite0", alias="CLMLF_TRAIN_IMAGE_ENCODER")
    image_weights: str | None = Field(None, alias="CLMLF_TRAIN_IMAGE_WEIGHTS")
    epochs: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_EPOCHS")
    stage1_epochs: int | None = Field(None, ge=0, alias="CLMLF_TRAIN_STAGE1_EPOCHS")
    max_steps: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_MAX_STEPS")
    batch_size: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_BATCH_SIZE")
    grad_accum: int = Field(1, ge=1, alias="CLMLF_TRAIN_GRAD_ACCUM")
    lbcl: bool | None = Field(None, alias="CLMLF_TRAIN_LBCL")
    dbcl: bool | None = Field(None, alias="CLMLF_TRAIN_DBCL")
    lbcl_form: Literal["reference", "paper", "normalized"] | None = Field(None, alias="CLMLF_TRAIN_LBCL_FORM")
    dbcl_form: Literal["reference", "normalized"] | None = Field(None, alias="CLMLF_TRAIN_DBCL_FORM")
    logit_adjustment: float | None = Field(None, ge=0, alias="CLMLF_TRAIN_LOGIT_ADJUSTMENT")
    holdout_fraction: float | None = Field(None, ge=0, lt=1, alias="CLMLF_TRAIN_HOLDOUT_FRACTION")
    translation_view: bool | None = Field(None, alias="CLMLF_TRAIN_TRANSLATION_VIEW")
    oversample: Repeats = Field(None, alias="CLMLF_TRAIN_OVERSAMPLE")
    text_train_layers: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_TEXT_TRAIN_LAYERS")
    length_bucketing: bool | None = Field(None, alias="CLMLF_TRAIN_LENGTH_BUCKETING")
    prior_shift: bool | None = Field(None, alias="CLMLF_TRAIN_PRIOR_SHIFT")
    lr_schedule: Literal["constant", "linear"] | None = Field(None, alias="CLMLF_TRAIN_LR_SCHEDULE")
    fusion_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    seed: int = Field(0, ge=0, alias="CLMLF_TRAIN_SEED")
    # Data order, dropout and augmentation (None: ``seed``). The model's initialisation and the held-out
    # slice follow ``seed`` only, so runs that differ in order_seed can be weight-averaged (clmlf soup).
    order_seed: int | None = Field(None, ge=0, alias="CLMLF_TRAIN_ORDER_SEED")
    resume: bool = Field(False, alias="CLMLF_TRAIN_RESUME")
    fusion_dim: int | None = Field(None, ge=2, alias="CLMLF_TRAIN_FUSION_DIM")
    fusion_layers: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_FUSION_LAYERS")
    image_layers: int | None = Field(None, ge=0, alias="CLMLF_TRAIN_IMAGE_LAYERS")
    pooling: Literal["attention", "mean", "cls", "text"] | None = Field(None, alias="CLMLF_TRAIN_POOLING")
    max_text_len: int | None = Field(None, ge=4, alias="CLMLF_TRAIN_MAX_TEXT_LEN")
    image_size: int | None = Field(None, ge=8, alias="CLMLF_TRAIN_IMAGE_SIZE")
    lr: float | None = Field(None, gt=0, alias="CLMLF_TRAIN_LR")
    text_lr: float | None = Field(None, ge=0, alias="CLMLF_TRAIN_TEXT_LR")
    weight_decay: float | None = Field(None, ge=0, alias="CLMLF_TRAIN_WEIGHT_DECAY")
    temperature: float | None = Field(None, gt=0, alias="CLMLF_TRAIN_TEMPERATURE")
    lbcl_weight: float | None = Field(None, ge=0, alias="CLMLF_TRAIN_LBCL_WEIGHT")
    dbcl_weight: float | None = Field(None, ge=0, alias="CLMLF_TRAIN_DBCL_WEIGHT")
    selection_metric: SelectionMetric | None = Field(None, alias="CLMLF_TRAIN_SELECTION_METRIC")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", alias="CLMLF_DEVICE")
    amp: bool | None = Field(None, alias="CLMLF_TRAIN_AMP")
    compile: bool = Field(False, alias="CLMLF_TRAIN_COMPILE")
    workers: int = Field(0, ge=0, alias="CLMLF_TRAIN_WORKERS")
    threads: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_THREADS")
    cache_text: bool = Field(True, alias="CLMLF_TRAIN_TEXT_CACHE")  # --no-text-cache
    text_cache_file: Path | None = Field(None, alias="CLMLF_TRAIN_TEXT_CACHE_FILE")
    use_images: bool | None = Field(None, alias="CLMLF_TRAIN_IMAGES")  # --images / --no-images
    # flip + RandAugment on training images (off: every image recurs unchanged); --no-image-augment
    image_augment: bool = Field(True, alias="CLMLF_TRAIN_IMAGE_AUGMENT")
    # memoise the frozen image encoder's feature maps (needs image_augment off, or augment_copies); --image-cache
    cache_images: bool = Field(False, alias="CLMLF_TRAIN_IMAGE_CACHE")
    # K fixed augmented versions per training picture, one picked per epoch (0: a fresh augmentation every time)
    augment_copies: int = Field(0, ge=0, alias="CLMLF_TRAIN_AUGMENT_COPIES")
    distractor_rate: float = Field(0.0, ge=0, le=1, alias="CLMLF_TRAIN_DISTRACTOR_RATE")
    distractor_pool: int = Field(256, ge=1)
    limit_train: int | None = Field(None, ge=1, alias="CLMLF_TRAIN_LIMIT_TRAIN")
    eval_batch_size: int = Field(64, ge=1, alias="CLMLF_TRAIN_EVAL_BATCH_SIZE")
    save_every: int = Field(0, ge=0, alias="CLMLF_TRAIN_SAVE_EVERY")
    progress: bool = Field(True, alias="CLMLF_TRAIN_PROGRESS")  # --no-progress

    @model_validator(mode="after")
    def _fill_from_preset(self) -> TrainConfig:
        preset = get_preset(self.preset)
        for name in ("batch_size", "stage1_epochs", "fusion_dim", "fusion_layers", "image_layers", "max_text_len",
                     "lr", "text_lr", "weight_decay", "temperature", "lbcl_weight", "dbcl_weight",
                     "selection_metric", "lbcl", "dbcl", "lbcl_form", "dbcl_form", "logit_adjustment",
                     "holdout_fraction", "translation_view", "text_train_layers", "length_bucketing", "use_images",
                     "prior_shift", "lr_schedule", "fusion_dtype", "pooling", "image_size"):
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
        if self.cache_images and self.image_augment and not self.augment_copies:
            raise ValueError("the image feature cache needs --no-image-augment or --augment-copies K "
                             "(freshly augmented pixels never recur)")
        if self.augment_copies and not self.image_augment:
            raise ValueError("--augment-copies needs image augmentation (drop --no-image-augment)")
        return self

    @model_validator(mode="after")
    def _no_distractors_without_images(self) -> TrainConfig:
        # A text-only model ignores every image (trained_with_images: false), so photos would teach it nothing.
        if not self.use_images and self.distractor_rate > 0:
            raise ValueError("--distractor-rate needs images: a text-only run (--no-images) never sees photos")
        return self

    @property
    def data_seed(self) -> int:
        """The seed of data order, dropout and augmentation (``order_seed``, else ``seed``)."""
        return self.seed if self.order_seed is None else self.order_seed

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
