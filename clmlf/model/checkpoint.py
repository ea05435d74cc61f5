"""Loading a checkpoint directory back into a model (``clmlf.load``), without pickle.

What a directory holds, its format versions (2 written now, 1 still read) and how
each encoder is stored: :mod:`clmlf.model.checkpoint_format`. Writing one:
:func:`clmlf.model.checkpoint_save.save_checkpoint`. Every failure is a
:class:`CheckpointError` of one line naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clmlf.model.checkpoint_format import (
    CONFIG_FILE,
    ENCODER_GROUPS,
    ENCODER_META_NAMES,
    TEXT_ENCODER_CONFIG,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    CheckpointError,
    EncoderStorage,
    dtype_name,
    encoder_digest,
    read_checkpoint_config,
    read_json,
    storage_layout,
    weights_digest,
)
from clmlf.model.config import ModelConfig
from clmlf.model.model import CLMLF
from clmlf.model.preprocess import Preprocessor

# Files of a training run directory (clmlf train --out RUN_DIR) that mark it as one.
RUN_MARKERS = ("train_config.json", "metrics.jsonl", "last", "resume")


@dataclass
class LoadedModel:
    model: CLMLF
    preprocessor: Preprocessor
    config: ModelConfig
    name: str


# Files a Hugging Face tokenizer can take its vocabulary from; ``tokenizer_config.json`` alone has none
# (transformers then builds a 5-token tokenizer that maps every word to [UNK], silently).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                    "tokenizer.model")


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    read_json(directory / "tokenizer_config.json")
    for json_file in sorted(directory.glob("*.json")):
        read_json(json_file)  # a corrupt file is named, not just its folder
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
            read_json(path / TEXT_ENCODER_CONFIG)  # one-line error if missing or broken
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
        if value.is_floating_point() and dtype_name(value.dtype) not in declared[group]:
            raise CheckpointError(
                f"{weights_file}: tensor {key} is {dtype_name(value.dtype)}, config.json declares "
                f"{sorted(declared[group])} for {group}"
            )
