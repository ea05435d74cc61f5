"""Writing a checkpoint directory (format 2): fusion tensors, and of each package encoder only what training changed.

See :mod:`clmlf.model.checkpoint_format` for the layout; :func:`clmlf.model.checkpoint.load` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clmlf.model.checkpoint_format import (
    CONFIG_FILE,
    DTYPES,
    ENCODER_GROUPS,
    ENCODER_META_NAMES,
    FORMAT_VERSION,
    TEXT_ENCODER_CONFIG,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    CheckpointError,
    EncoderStorage,
    StorageDtype,
    dtype_name,
    encoder_digest,
)
from clmlf.model.config import ModelConfig
from clmlf.model.model import CLMLF


def _pristine_encoder(group: str, config: ModelConfig) -> nn.Module:
    """A freshly built package encoder of ``group`` (the weights every fine-tune started from)."""
    from clmlf.model.encoders import create_image_encoder, create_text_encoder

    return create_text_encoder(config) if group == "text_encoder" else create_image_encoder(config)


def _cast_for_storage(key: str, value: torch.Tensor, dtype: torch.dtype | None, out: Path) -> torch.Tensor:
    tensor = value.detach().to("cpu")
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        cast = tensor.to(dtype)
        if not bool(torch.isfinite(cast).all()) and bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{out / WEIGHTS_FILE}: tensor {key} does not fit in {dtype_name(dtype)} (store it as float32)"
            )
        tensor = cast
    return tensor.contiguous().clone()


def _floating_dtypes(tensors: dict[str, torch.Tensor], keys: list[str]) -> tuple[str, ...]:
    return tuple(sorted({dtype_name(tensors[k].dtype) for k in keys if tensors[k].is_floating_point()}))


def save_checkpoint(
    model: CLMLF,
    tokenizer: Any,
    out_dir: str | Path,
    *,
    include_frozen_encoders: bool = False,
    encoder_dtype: StorageDtype = "float16",
    fusion_dtype: StorageDtype | None = None,
    extra: dict[str, Any] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``model`` + ``tokenizer`` as a (format 2) checkpoint directory; returns its path.

    Package encoders are stored as the difference from their package weights
    (``"none"`` when unchanged, else ``"partial"`` in ``encoder_dtype``);
    ``include_frozen_encoders`` stores every encoder whole in its own dtype.
    ``fusion_dtype`` (default: keep) casts everything outside the encoders.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    by_group: dict[str, list[str]] = {"fusion": [], "text_encoder": [], "image_encoder": []}
    for key in state:
        group = key.split(".", 1)[0]
        by_group[group if group in ENCODER_GROUPS else "fusion"].append(key)

    tensors: dict[str, torch.Tensor] = {}
    for key in by_group["fusion"]:
        tensors[key] = _cast_for_storage(key, state[key], DTYPES[fusion_dtype] if fusion_dtype else None, out)
    storage: dict[str, EncoderStorage] = {}
    for group in ENCODER_GROUPS:
        encoder = getattr(model, group)
        keys = by_group[group]
        if include_frozen_encoders or not getattr(encoder, "builtin_weights", False):
            for key in keys:
                tensors[key] = _cast_for_storage(key, state[key], None, out)
            storage[group] = EncoderStorage("full", dtypes=_floating_dtypes(tensors, keys))
            continue
        pristine = _pristine_encoder(group, model.config)
        base = {f"{group}.{k}": v for k, v in pristine.state_dict().items()}
        changed = [k for k in keys if k not in base or not torch.equal(state[k].detach().to("cpu"), base[k])]
        for key in changed:
            tensors[key] = _cast_for_storage(key, state[key], DTYPES[encoder_dtype], out)
        storage[group] = EncoderStorage(
            "partial" if changed else "none",
            keys=tuple(changed),
            dtypes=_floating_dtypes(tensors, changed),
            base_sha256=encoder_digest(pristine),
        )

    text_backbone = model.text_encoder.backbone
    encoders_meta = {}
    for group, meta_name in ENCODER_META_NAMES.items():
        entry: dict[str, Any] = {"name": getattr(model.config, group), "stored": storage[group].mode}
        if group == "text_encoder":
            entry["model_type"] = getattr(text_backbone.config, "model_type", None)
        if storage[group].mode != "none":
            entry["dtypes"] = list(storage[group].dtypes)
        if storage[group].mode == "partial":
            entry["keys"] = list(storage[group].keys)
        if storage[group].base_sha256 is not None:
            entry["base_sha256"] = storage[group].base_sha256
        encoders_meta[meta_name] = entry
    meta = {
        "format_version": FORMAT_VERSION,
        "name": name or out.resolve().name,
        "model": model.config.model_dump(mode="json"),
        "labels": list(model.config.labels),
        "encoders": encoders_meta,
        "fusion": {"dtypes": list(_floating_dtypes(tensors, by_group["fusion"]))},
        "extra": extra or {},
    }
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))
    stale = out / TEXT_ENCODER_CONFIG
    if storage["text_encoder"].mode == "full":
        stale.parent.mkdir(parents=True, exist_ok=True)
        stale.write_text(text_backbone.config.to_json_string(use_diff=False))
    elif stale.is_file():  # rewriting a directory that once held a full text encoder
        stale.unlink()
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out
