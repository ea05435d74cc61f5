"""Checkpoint directories: save a trained CLMLF model and load it back, without pickle.

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
from clmlf.model.model import CLMLF
from clmlf.model.preprocess import Preprocessor

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
# Files of a training run directory (clmlf train --out RUN_DIR) that mark it as one.
RUN_MARKERS = ("train_config.json", "metrics.jsonl", "last", "resume")


class CheckpointError(ValueError):
    """A checkpoint that cannot be written or read; the message is one line naming the file."""


@dataclass
class LoadedModel:
    model: CLMLF
    preprocessor: Preprocessor
    config: ModelConfig
    name: str


@dataclass(frozen=True)
class EncoderStorage:
    """How one encoder group is held by a checkpoint (parsed from, or written to, config.json)."""

    mode: str  # one of STORAGE_MODES
    keys: tuple[str, ...] = ()  # "partial": the stored state-dict keys (with their group prefix)
    dtypes: tuple[str, ...] = ()  # floating-point dtypes of its stored tensors
    base_sha256: str | None = None  # package-built encoders: digest of the package weights


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encoder_digest(encoder: nn.Module) -> str:
    """sha256 over an encoder's state dict (names, dtypes, shapes, bytes), in state-dict order."""
    digest = hashlib.sha256()
    for key, value in encoder.state_dict().items():
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}|{_dtype_name(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
                f"{out / WEIGHTS_FILE}: tensor {key} does not fit in {_dtype_name(dtype)} (store it as float32)"
            )
        tensor = cast
    return tensor.contiguous().clone()


def _floating_dtypes(tensors: dict[str, torch.Tensor], keys: list[str]) -> tuple[str, ...]:
    return tuple(sorted({_dtype_name(tensors[k].dtype) for k in keys if tensors[k].is_floating_point()}))


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
    """The raw ``config.json`` metadata and its validated :class:`ModelConfig`.

    A config without ``trained_with_images`` (every format 1 checkpoint) reads as
    True: those models were trained with photos.
    """
    file = Path(path) / CONFIG_FILE
    meta = _read_json(file)
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


def _build_model(path: Path, config: ModelConfig, layout: dict[str, EncoderStorage], tokenizer: Any) -> CLMLF:
    from clmlf.model.encoders import (
        EncoderError,
        create_image_encoder,
        create_text_encoder,
        text_encoder_from_hf_config,
    )

    try:
        if layout["text_encoder"].mode == "full":
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
        full_image = layout["image_encoder"].mode == "full"
        image = create_image_encoder(config.model_copy(update={"image_weights": None}) if full_image else config)
        model = CLMLF(config, text, image)
    except EncoderError as exc:
        raise CheckpointError(f"{path / CONFIG_FILE}: {exc}") from None
    for group, storage in layout.items():
        if storage.base_sha256 is None:
            continue
        encoder = getattr(model, group)
        meta_name = ENCODER_META_NAMES[group]
        if not getattr(encoder, "builtin_weights", False):
            raise CheckpointError(
                f"{path / CONFIG_FILE}: encoders.{meta_name}.stored {storage.mode!r} needs an encoder built from a "
                f"package, and {getattr(config, group)!r} is not"
            )
        if encoder_digest(encoder) != storage.base_sha256:
            raise CheckpointError(
                f"{path / CONFIG_FILE}: the installed {getattr(config, group)!r} package weights differ from those "
                f"this checkpoint was trained from (encoders.{meta_name}.base_sha256); install the version it names"
            )
    return model


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory, or a training run directory (``clmlf train --out``): its ``best/``."""
    path = Path(path)
    if (path / CONFIG_FILE).is_file() or not path.is_dir():
        return path
    if (path / "best" / CONFIG_FILE).is_file():
        return path / "best"
    if any((path / marker).exists() for marker in RUN_MARKERS):
        hint = f"; pass {path / 'last'} for its last saved state" if (path / "last" / CONFIG_FILE).is_file() else ""
        raise CheckpointError(f"{path}: training run directory without a best/ checkpoint{hint}")
    return path


def _expected_keys(model: CLMLF, layout: dict[str, EncoderStorage]) -> set[str]:
    expected = set()
    for key in model.state_dict():
        group = key.split(".", 1)[0]
        mode = layout[group].mode if group in ENCODER_GROUPS else "full"
        if mode == "full":
            expected.add(key)
    for storage in layout.values():
        expected.update(storage.keys)
    return expected


def load(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint directory (or a run directory's ``best/``; never unpickles).

    Raises :class:`CheckpointError` with one line.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from clmlf.model.encoders import hub_offline

    hub_offline()
    path = resolve_checkpoint_dir(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    meta, config = read_checkpoint_config(path)
    layout = storage_layout(path / CONFIG_FILE, meta)
    weights_file = path / WEIGHTS_FILE
    if not weights_file.is_file():
        raise CheckpointError(f"{weights_file}: file missing")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_file}: corrupt or unreadable ({' '.join(str(exc).split())[:120]})") from None

    tokenizer = _load_tokenizer(path / TOKENIZER_DIR)
    model = _build_model(path, config, layout, tokenizer)
    _check_vocabulary_fits(path, tokenizer, model)
    state = model.state_dict()
    unknown = [key for storage in layout.values() for key in storage.keys if key not in state]
    if unknown:
        raise CheckpointError(f"{path / CONFIG_FILE}: partial encoder key {unknown[0]!r:.80} is not a tensor of the model")
    expected = _expected_keys(model, layout)
    missing = sorted(expected - tensors.keys())
    unexpected = sorted(tensors.keys() - expected)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{weights_file}: tensors do not match the model in config.json ({detail})")
    if meta.get("format_version") != 1:
        _check_dtypes(weights_file, tensors, layout, meta)
    # Stored float16/bfloat16 tensors go back to the model's own dtype (float32).
    tensors = {
        key: value.to(state[key].dtype) if value.is_floating_point() and key in state else value
        for key, value in tensors.items()
    }
    try:
        model.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:
        first = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{weights_file}: tensor shapes do not match config.json ({first})") from None
    model.to(device).eval()
    name = f"{meta.get('name') or path.resolve().name}@{weights_digest(path)}"
    return LoadedModel(model=model, preprocessor=Preprocessor(config, tokenizer), config=config, name=name)


def _check_dtypes(weights_file: Path, tensors: dict[str, torch.Tensor], layout: dict[str, EncoderStorage],
                  meta: dict[str, Any]) -> None:
    """Every floating tensor in the file has a dtype its group's ``dtypes`` in config.json names."""
    declared = {group: set(storage.dtypes) for group, storage in layout.items()}
    declared["fusion"] = set(meta["fusion"]["dtypes"])
    for key, value in tensors.items():
        group = key.split(".", 1)[0]
        group = group if group in ENCODER_GROUPS else "fusion"
        if value.is_floating_point() and _dtype_name(value.dtype) not in declared[group]:
            raise CheckpointError(
                f"{weights_file}: tensor {key} is {_dtype_name(value.dtype)}, config.json declares "
                f"{sorted(declared[group])} for {group}"
            )
