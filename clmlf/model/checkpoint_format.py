"""The checkpoint directory format: its layout, versions and metadata, read and validated here.

Written by :func:`clmlf.model.checkpoint_save.save_checkpoint`, loaded (without pickle) by
:func:`clmlf.model.checkpoint.load`.

Layout::

    config.json          format_version, name, model config (labels included), how each encoder is
                         stored, the dtypes of the stored tensors, free-form "extra"
    model.safetensors    the stored tensors (parameters and buffers)
    tokenizer/           the text tokenizer (Hugging Face files)
    text_encoder/config.json   architecture of a fully stored text encoder (only then)

Format version 2 (written now) stores only what was trained. Each encoder is
stored one of three ways (``encoders.text.stored`` / ``encoders.image.stored``):

* ``"none"``: its weights come from an installed package (MiniLM, EfficientNet-Lite0)
  and are unchanged; it is rebuilt from that package at load time.
* ``"partial"``: a package encoder that was fine-tuned: only the tensors that differ
  from the package's pristine weights (exact comparison with a freshly built
  encoder) are stored, listed in ``keys``, by default in float16; loading rebuilds
  the package encoder and overlays them (cast back to the model's float32).
* ``"full"``: every tensor (encoders without a package source, such as a BERT
  directory or a tiny test encoder, or ``include_frozen_encoders=True``).

A package-built encoder also records ``base_sha256``, the digest of the package
weights it was compared with, so a different installed package version is a
one-line error instead of silently different predictions. ``fusion.dtypes``
and ``encoders.*.dtypes`` name the floating-point dtypes in the file.

Format 1 (``stored: true/false`` and ``stored_groups``; the embedded default until
it is retrained) still loads. Any other version, or a malformed description of
what is stored, is a :class:`CheckpointError` of one line naming the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import ValidationError
from torch import nn

from clmlf.model.config import ModelConfig

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
TEXT_ENCODER_CONFIG = "text_encoder/config.json"
ENCODER_GROUPS = ("text_encoder", "image_encoder")
# config.json names of the two encoder groups (``encoders.text``, ``encoders.image``)
ENCODER_META_NAMES = {"text_encoder": "text", "image_encoder": "image"}
STORAGE_MODES = ("none", "partial", "full")
StorageDtype = Literal["float16", "bfloat16", "float32"]
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64,
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message is one line naming the file."""


@dataclass(frozen=True)
class EncoderStorage:
    """How one encoder group is held by a checkpoint (parsed from, or written to, config.json)."""

    mode: str  # one of STORAGE_MODES
    keys: tuple[str, ...] = ()  # "partial": the stored state-dict keys (with their group prefix)
    dtypes: tuple[str, ...] = ()  # floating-point dtypes of its stored tensors
    base_sha256: str | None = None  # package-built encoders: digest of the package weights


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encoder_digest(encoder: nn.Module) -> str:
    """sha256 over an encoder's state dict (names, dtypes, shapes, bytes), in state-dict order."""
    digest = hashlib.sha256()
    for key, value in encoder.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{dtype_name(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_json(path: Path) -> dict[str, Any]:
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
    """The raw ``config.json`` metadata and its validated :class:`ModelConfig`.

    A config without ``trained_with_images`` (every format 1 checkpoint) reads as
    True: those models were trained with photos.
    """
    file = Path(path) / CONFIG_FILE
    meta = read_json(file)
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        readable = " or ".join(str(v) for v in READABLE_VERSIONS)
        raise CheckpointError(f"{file}: unsupported format_version {version!r} (this code reads {readable})")
    try:
        config = ModelConfig.model_validate(meta.get("model"))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "model"
        raise CheckpointError(f"{file}: invalid model config at {where}: {err.get('msg')}") from None
    storage_layout(file, meta)  # a malformed description of what is stored fails here, before any weights
    return meta, config


def storage_layout(file: Path, meta: dict[str, Any]) -> dict[str, EncoderStorage]:
    """How each encoder group is stored, from format 1 or 2 metadata; raises :class:`CheckpointError`."""
    if meta.get("format_version") == 1:
        groups = meta.get("stored_groups")
        known = ("fusion", *ENCODER_GROUPS)
        if not isinstance(groups, list) or "fusion" not in groups or any(g not in known for g in groups):
            raise CheckpointError(
                f"{file}: stored_groups must be a list of {', '.join(known)} including fusion, got {groups!r:.60}"
            )
        return {group: EncoderStorage("full" if group in groups else "none") for group in ENCODER_GROUPS}

    encoders = meta.get("encoders")
    if not isinstance(encoders, dict):
        raise CheckpointError(f"{file}: encoders must be an object with text and image entries")
    layout: dict[str, EncoderStorage] = {}
    for group, meta_name in ENCODER_META_NAMES.items():
        where = f"encoders.{meta_name}"
        entry = encoders.get(meta_name)
        if not isinstance(entry, dict):
            raise CheckpointError(f"{file}: {where} must be an object, got {entry!r:.60}")
        mode = entry.get("stored")
        if mode not in STORAGE_MODES:
            raise CheckpointError(f"{file}: {where}.stored must be one of {', '.join(STORAGE_MODES)}, got {mode!r:.60}")
        keys: tuple[str, ...] = ()
        if mode == "partial":
            raw_keys = entry.get("keys")
            if (not isinstance(raw_keys, list) or not all(isinstance(k, str) for k in raw_keys)
                    or len(set(raw_keys)) != len(raw_keys)):
                raise CheckpointError(f"{file}: {where}.keys must be a list of distinct tensor names, got {raw_keys!r:.60}")
            foreign = [k for k in raw_keys if not k.startswith(f"{group}.")]
            if foreign:
                raise CheckpointError(f"{file}: {where}.keys must start with '{group}.', got {foreign[0]!r:.80}")
            keys = tuple(raw_keys)
        elif "keys" in entry:
            raise CheckpointError(f"{file}: {where}.keys is only allowed with stored 'partial', not {mode!r}")
        dtypes: tuple[str, ...] = ()
        if mode != "none":
            dtypes = _dtype_list(file, f"{where}.dtypes", entry.get("dtypes"))
        base = entry.get("base_sha256")
        if mode != "full" and not (isinstance(base, str) and len(base) == 64):
            raise CheckpointError(f"{file}: {where}.base_sha256 must be the 64-hex digest of the package weights")
        layout[group] = EncoderStorage(mode, keys, dtypes, base if mode != "full" else None)
    fusion = meta.get("fusion")
    if not isinstance(fusion, dict):
        raise CheckpointError(f"{file}: fusion must be an object with a dtypes list")
    _dtype_list(file, "fusion.dtypes", fusion.get("dtypes"))
    return layout


def _dtype_list(file: Path, where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in DTYPES for v in value):
        raise CheckpointError(f"{file}: {where} must be a list of {', '.join(DTYPES)}, got {value!r:.60}")
    return tuple(value)


def weights_digest(path: str | Path, length: int = 8) -> str:
    """Short sha256 of ``model.safetensors``: identifies the exact weights in result records."""
    digest = hashlib.sha256()
    with open(Path(path) / WEIGHTS_FILE, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
