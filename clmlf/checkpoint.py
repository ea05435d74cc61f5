"""Checkpoint directories: save a trained CLMLF model and load it back, without pickle.

Layout::

    config.json          format_version, name, model config (labels included), encoders used,
                         which parameter groups model.safetensors holds, free-form "extra"
    model.safetensors    the stored tensors (parameters and buffers)
    tokenizer/           the text tokenizer (Hugging Face files)
    text_encoder/config.json   architecture of a stored text encoder (only when it is stored)

A frozen encoder whose weights come from an installed package (MiniLM,
EfficientNet-Lite0) is not stored by default: it is rebuilt from that package at
load time, which keeps the embedded default model small. Trained encoders, and
encoders without a built-in source, are always stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from clmlf.config import ModelConfig
from clmlf.model import CLMLF
from clmlf.preprocess import Preprocessor

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
TEXT_ENCODER_CONFIG = "text_encoder/config.json"
ENCODER_GROUPS = ("text_encoder", "image_encoder")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message is one line naming the file."""


@dataclass
class LoadedModel:
    model: CLMLF
    preprocessor: Preprocessor
    config: ModelConfig
    name: str


def _encoder_is_stored(encoder: nn.Module, include_frozen: bool) -> bool:
    frozen = bool(getattr(encoder, "frozen", False))
    builtin = bool(getattr(encoder, "builtin_weights", False))
    return include_frozen or not (frozen and builtin)


def save_checkpoint(
    model: CLMLF,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    include_frozen_encoders: bool = False,
    extra: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` as a checkpoint directory; returns its path."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stored = {
        "text_encoder": _encoder_is_stored(model.text_encoder, include_frozen_encoders),
        "image_encoder": _encoder_is_stored(model.image_encoder, include_frozen_encoders),
    }
    tensors = {}
    for key, value in model.state_dict().items():
        group = key.split(".", 1)[0]
        if group in ENCODER_GROUPS and not stored[group]:
            continue
        tensors[key] = value.detach().to("cpu").contiguous().clone()

    text_backbone = model.text_encoder.backbone
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name or out.resolve().name,
        "model": model.config.model_dump(mode="json"),
        "labels": list(model.config.labels),
        "encoders": {
            "text": {"name": model.config.text_encoder, "stored": stored["text_encoder"],
                     "model_type": getattr(text_backbone.config, "model_type", None)},
            "image": {"name": model.config.image_encoder, "stored": stored["image_encoder"]},
        },
        "stored_groups": ["fusion"] + [group for group in ENCODER_GROUPS if stored[group]],
        "extra": extra or {},
    }
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    if stored["text_encoder"]:
        (out / TEXT_ENCODER_CONFIG).parent.mkdir(parents=True, exist_ok=True)
        (out / TEXT_ENCODER_CONFIG).write_text(text_backbone.config.to_json_string(use_diff=False))
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: file missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_checkpoint_config(path: str | Path) -> tuple[dict[str, Any], ModelConfig]:
    """The raw ``config.json`` metadata and its validated :class:`ModelConfig`."""
    file = Path(path) / CONFIG_FILE
    meta = _read_json(file)
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{file}: unsupported format_version {version!r} (this code reads {FORMAT_VERSION})")
    try:
        config = ModelConfig.model_validate(meta.get("model"))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "model"
        raise CheckpointError(f"{file}: invalid model config at {where}: {err.get('msg')}") from None
    groups = meta.get("stored_groups")
    known = ("fusion", *ENCODER_GROUPS)
    if not isinstance(groups, list) or "fusion" not in groups or any(g not in known for g in groups):
        raise CheckpointError(f"{file}: stored_groups must be a list of {', '.join(known)} including fusion, got {groups!r:.60}")
    return meta, config


def weights_digest(path: str | Path, length: int = 8) -> str:
    """Short sha256 of ``model.safetensors``: identifies the exact weights in result records."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]


# Files a Hugging Face tokenizer can take its vocabulary from; ``tokenizer_config.json`` alone has none
# (transformers then builds a 5-token tokenizer that maps every word to [UNK], silently).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    _read_json(directory / "tokenizer_config.json")
    for json_file in sorted(directory.glob("*.json")):
        _read_json(json_file)  # a corrupt file is named, not just its folder
    if not any((directory / name).is_file() for name in VOCABULARY_FILES):
        raise CheckpointError(f"{directory / 'tokenizer.json'}: file missing (no vocabulary file in the tokenizer)")
    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # tokenizers raise many types on broken files
        raise CheckpointError(f"{directory}: tokenizer files unreadable ({type(exc).__name__})") from None


def _check_vocabulary_fits(path: Path, tokenizer: Any, model: CLMLF) -> None:
    """Token ids past the text encoder's embedding table would crash the forward pass mid-run."""
    embeddings = getattr(model.text_encoder.backbone, "get_input_embeddings", lambda: None)()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is not None and len(tokenizer) > rows:
        raise CheckpointError(
            f"{path / TOKENIZER_DIR}: vocabulary of {len(tokenizer)} tokens does not fit the text encoder's "
            f"{rows} embeddings (tokenizer from another model?)"
        )


def _build_model(path: Path, meta: dict[str, Any], config: ModelConfig, tokenizer: Any) -> CLMLF:
    from clmlf.encoders import (
        EncoderError,
        create_image_encoder,
        create_text_encoder,
        text_encoder_from_hf_config,
    )

    stored_groups = set(meta.get("stored_groups", []))
    try:
        if "text_encoder" in stored_groups:
            _read_json(path / TEXT_ENCODER_CONFIG)  # one-line error if missing or broken
            try:
                text = text_encoder_from_hf_config(path / TEXT_ENCODER_CONFIG.rsplit("/", 1)[0], tokenizer)
            except (ValueError, OSError, KeyError) as exc:  # unknown model_type, missing keys, ...
                first = " ".join(str(exc).split())[:160] or type(exc).__name__
                raise CheckpointError(f"{path / TEXT_ENCODER_CONFIG}: not a usable text encoder config ({first})") from None
            if config.freeze_text_encoder:
                text.freeze()
        else:
            text = create_text_encoder(config)
            text.tokenizer = tokenizer
        # A stored image encoder gets its weights from model.safetensors, not from its original file.
        image_config = config.model_copy(update={"image_weights": None}) if "image_encoder" in stored_groups else config
        image = create_image_encoder(image_config)
        return CLMLF(config, text, image)
    except EncoderError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: {exc}") from None


def load(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory (never unpickles). Raises :class:`CheckpointError` with one line."""
    import os

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    meta, config = read_checkpoint_config(path)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file}: file missing")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_file}: corrupt or unreadable ({' '.join(str(exc).split())[:120]})") from None

    tokenizer = _load_tokenizer(path / TOKENIZER_DIR)
    model = _build_model(path, meta, config, tokenizer)
    _check_vocabulary_fits(path, tokenizer, model)
    stored_groups = set(meta.get("stored_groups", []))
    expected = {
        key for key in model.state_dict()
        if key.split(".", 1)[0] not in ENCODER_GROUPS or key.split(".", 1)[0] in stored_groups
    }
    missing = sorted(expected - tensors.keys())
    unexpected = sorted(tensors.keys() - expected)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{weights_file}: tensors do not match the model in config.json ({detail})")
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{weights_file}: tensor shapes do not match config.json ({first})") from None
    model.to(device).eval()
    name = f"{meta.get('name') or path.resolve().name}@{weights_digest(path)}"
    return LoadedModel(model=model, preprocessor=Preprocessor(config, tokenizer), config=config, name=name)
