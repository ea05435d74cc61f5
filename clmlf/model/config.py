"""``ModelConfig``: every architecture and preprocessing choice of a CLMLF model, in one typed object.

It is stored as JSON inside each checkpoint (``config.json``) and read back with
:meth:`ModelConfig.model_validate`, so a checkpoint fully describes the model it
holds. Defaults follow the paper (MVSA-Single: 3 fusion layers, 2 image layers,
width 768) with this project's embedded encoders (MiniLM + EfficientNet-Lite0).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_LABELS = ("positive", "neutral", "negative")
HEAD_WIDTH = 64


class ModelConfig(BaseModel):
    """Architecture + preprocessing of one CLMLF model (JSON round-trip safe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text_encoder: str = Field("minilm", min_length=1, description="registry name, HF name or local dir")
    image_encoder: str = Field("efficientnet_lite0", min_length=1, description="image registry name")
    image_weights: str | None = Field(None, description="weights file for the image encoder (resnet50)")
    freeze_image_encoder: bool = True
    freeze_text_encoder: bool = False
    fusion_dim: int = Field(768, ge=2, description="width d of the fusion transformers (tran_dim)")
    fusion_layers: int = Field(3, ge=1, le=24)
    image_layers: int = Field(2, ge=0, le=24)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_text_len: int = Field(200, ge=4, le=4096)
    labels: tuple[str, ...] = DEFAULT_LABELS
    # What the classifier reads: attention pooling over every fused token (the paper), their mean, the
    # first text token ([CLS]), or the mean of the text tokens only ("text": the label must reach the
    # text side through the fusion's attention, which the image probe measures).
    pooling: Literal["attention", "mean", "cls", "text"] = "attention"
    image_size: int = Field(224, ge=8, le=1024)
    resize: int = Field(256, ge=8, le=2048)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    aspect: bool = Field(False, description="aspect-based input: [CLS] sentence [SEP] aspect [SEP]")
    trained_with_images: bool = Field(
        True,
        description="False: trained on text alone; images are then ignored (never fetched, decoded or fused)",
    )

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(labels) < 2:
            raise ValueError("at least two labels are needed")
        if len(set(labels)) != len(labels) or any(not name.strip() for name in labels):
            raise ValueError("labels must be distinct non-blank names")
        return labels

    @field_validator("std")
    @classmethod
    def _check_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in std):
            raise ValueError("std values must be positive")
        return std

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.fusion_dim % 2:
            raise ValueError(f"fusion_dim must be even (pooling and classifier use d/2), got {self.fusion_dim}")
        if self.fusion_dim % self.num_heads:
            raise ValueError(
                f"fusion_dim {self.fusion_dim} is not divisible by its {self.num_heads} heads (d/64)"
            )
        if self.resize < self.image_size:
            raise ValueError(f"resize ({self.resize}) must be >= image_size ({self.image_size})")
        return self

    @property
    def num_heads(self) -> int:
        """Attention heads of both transformers: d/64, at least one."""
        return max(1, self.fusion_dim // HEAD_WIDTH)

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.model_validate_json(text)


# Posts per forward pass when none is configured (``clmlf predict --batch-size``, the stream's
# ``--max-batch``), by whether the model reads images. Text-only batches are small in memory (the
# embedded default: 36 MiB of activations at 64) and bf16 GEMMs gain from the larger batch
# (docs/performance.md, 2026-12-03: 1.2x per post at 64 against 32); a paper-sized image model needs
# about 18 MiB of activations per post, so it stays at 32.
AUTO_BATCH_SIZE = {"text-only": 64, "with images": 32}


def auto_batch_size(config: ModelConfig | None) -> int:
    """:data:`AUTO_BATCH_SIZE` for a model of ``config`` (None, unknown: the image-model size, the safe one)."""
    text_only = config is not None and not config.trained_with_images
    return AUTO_BATCH_SIZE["text-only" if text_only else "with images"]
