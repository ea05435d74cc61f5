"""Checkpoint directories: round trip, what is stored, determinism, and one-line errors for broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clmlf.checkpoint import CheckpointError, load, save_checkpoint, weights_digest
from clmlf.model import CLMLF
from clmlf.tiny import build_tiny_checkpoint, build_tiny_model, tiny_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ck") / "tiny", seed=0)


def sample_batch(loaded) -> dict[str, torch.Tensor]:
    size = loaded.config.image_size
    gen = torch.Generator().manual_seed(0)
    return loaded.preprocessor.collate(
        ["great acme phone", "awful globex support line, again"],
        [torch.randn(3, size, size, generator=gen), None],
    )


def test_round_trip_gives_identical_logits(tiny_dir: Path) -> None:
    loaded = load(tiny_dir)
    original = build_tiny_model(seed=0)
    batch = sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, original(**batch).logits)
    assert not loaded.model.training
    assert loaded.config == tiny_config()
    assert loaded.name == f"tiny-random@{weights_digest(tiny_dir)}"
    meta = json.loads((tiny_dir / "config.json").read_text())
    assert meta["format_version"] == 1 and meta["labels"] == ["positive", "neutral", "negative"]
    assert set(meta["stored_groups"]) == {"fusion", "text_encoder", "image_encoder"}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path, tiny_dir: Path) -> None:
    again = build_tiny_checkpoint(tmp_path / "again", seed=0)
    other = build_tiny_checkpoint(tmp_path / "other", seed=1)
    assert weights_digest(again) == weights_digest(tiny_dir)
    assert weights_digest(other) != weights_digest(tiny_dir)


def test_custom_labels_round_trip(tmp_path: Path) -> None:
    path = build_tiny_checkpoint(tmp_path / "binary", labels=("negative", "positive"))
    loaded = load(path)
    assert loaded.config.labels == ("negative", "positive")
    assert loaded.model.classifier[-1].out_features == 2


def test_frozen_builtin_encoder_is_not_stored_but_reloaded(tmp_path: Path) -> None:
    config = tiny_config().model_copy(update={"image_encoder": "efficientnet_lite0", "image_size": 64, "resize": 72})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLMLF(config).eval()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "effnet")
    stored = load_file(str(path / "model.safetensors"))
    assert not any(key.startswith("image_encoder.") for key in stored)
    assert any(key.startswith("text_encoder.") for key in stored)  # trained, no built-in source
    meta = json.loads((path / "config.json").read_text())
    assert meta["encoders"]["image"] == {"name": "efficientnet_lite0", "stored": False}
    loaded = load(path)
    batch = sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, model(**batch).logits)

    full = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "full", include_frozen_encoders=True)
    assert any(key.startswith("image_encoder.") for key in load_file(str(full / "model.safetensors")))
    assert torch.equal(load(full).model(**batch).logits, model(**batch).logits)


def test_frozen_minilm_is_not_stored_but_reloaded(tmp_path: Path) -> None:
    """The embedded default's layout: a frozen package text encoder is rebuilt from the package."""
    config = tiny_config().model_copy(update={"text_encoder": "minilm", "freeze_text_encoder": True})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLMLF(config).eval()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "minilm")
    stored = load_file(str(path / "model.safetensors"))
    assert not any(key.startswith("text_encoder.") for key in stored)
    assert not (path / "text_encoder").exists()
    assert (path / "model.safetensors").stat().st_size < 2_000_000  # fusion + tiny CNN only
    loaded = load(path)
    assert loaded.model.text_encoder.frozen
    batch = sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, model(**batch).logits)


def test_resnet50_weights_file_not_needed_after_saving(tmp_path: Path) -> None:
    from safetensors.torch import save_file
    from torchvision.models import resnet50

    weights = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in resnet50(weights=None).state_dict().items()}, str(weights))
    config = tiny_config().model_copy(update={"image_encoder": "resnet50", "image_weights": str(weights)})
    model = CLMLF(config).eval()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "resnet")
    weights.unlink()  # the serving machine does not have the original file
    loaded = load(path)
    torch.testing.assert_close(loaded.model.image_encoder.body[0].weight, model.image_encoder.body[0].weight)


def test_extra_metadata_is_kept(tmp_path: Path) -> None:
    model = build_tiny_model()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "x", extra={"dev_f1": 0.71})
    assert json.loads((path / "config.json").read_text())["extra"] == {"dev_f1": 0.71}


def test_load_never_unpickles(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load (pickle) used while loading a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    assert load(tiny_dir).model is not None


def test_clmlf_load_is_exported_lazily() -> None:
    # In a fresh interpreter from the repo root (as users and `python -m pytest` import the package).
    code = (
        "import sys, clmlf; light = 'torch' not in sys.modules; "
        "from clmlf.checkpoint import load; print(light, clmlf.load is load)"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert result.stdout.split() == ["True", "True"]


# ---------------------------------------------------------------- broken checkpoints


def copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def assert_one_line_error(path: Path, needle: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert needle in message, message
    assert "\n" not in message


def test_missing_directory(tmp_path: Path) -> None:
    assert_one_line_error(tmp_path / "nope", "checkpoint directory not found")


def test_missing_config(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "config.json").unlink()
    assert_one_line_error(path, "config.json: file missing")


def test_corrupt_config(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "config.json").write_text('{"format_version": 1, "model": ')
    assert_one_line_error(path, "config.json: not valid JSON")


def test_invalid_model_config(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["fusion_dim"] = 33
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "config.json: invalid model config")


def test_unknown_format_version(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = 99
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "unsupported format_version 99")


def test_missing_weights(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "model.safetensors").unlink()
    assert_one_line_error(path, "model.safetensors: file missing")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights(tmp_path: Path, tiny_dir: Path, damage: str) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00\x01not safetensors" * 10)
    assert_one_line_error(path, "model.safetensors: corrupt or unreadable")


def test_weights_that_do_not_fit_the_config(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["fusion_dim"] = 64
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "model.safetensors: tensor shapes do not match")
    meta["model"]["fusion_dim"] = 32
    meta["model"]["fusion_layers"] = 2
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "model.safetensors: tensors do not match the model")


def test_missing_tokenizer(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "tokenizer" / "tokenizer_config.json").unlink()
    assert_one_line_error(path, "tokenizer_config.json: file missing")


def test_missing_text_encoder_config(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "text_encoder" / "config.json").unlink()
    assert_one_line_error(path, "text_encoder/config.json: file missing")


def test_default_model_missing_says_pass_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    import clmlf.default_model as default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIRNAME", "no_such_default_model")
    with pytest.raises(default_model.DefaultModelMissing, match="--checkpoint"):
        default_model.default_checkpoint_dir()


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00binary"])
def test_corrupt_tokenizer_file_is_named(tmp_path: Path, tiny_dir: Path, content: bytes) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "tokenizer" / "tokenizer.json").write_bytes(content)
    assert_one_line_error(path, "tokenizer.json: not valid JSON")


def test_missing_tokenizer_vocabulary(tmp_path: Path, tiny_dir: Path) -> None:
    """Without tokenizer.json, transformers would build a 5-token tokenizer that maps every word to [UNK]."""
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "tokenizer" / "tokenizer.json").unlink()
    assert_one_line_error(path, "tokenizer.json: file missing")


def test_unknown_text_encoder_architecture(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    (path / "text_encoder" / "config.json").write_text('{"model_type": "no-such-architecture"}')
    assert_one_line_error(path, "text_encoder/config.json: not a usable text encoder config")


def test_tokenizer_larger_than_the_embedding_table(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    hf_config = json.loads((path / "text_encoder" / "config.json").read_text())
    hf_config["vocab_size"] = 100
    (path / "text_encoder" / "config.json").write_text(json.dumps(hf_config))
    assert_one_line_error(path, "does not fit the text encoder's 100 embeddings")


@pytest.mark.parametrize("groups", [None, 5, "fusion", ["text_encoder"], ["fusion", "vision"], [["fusion"]]])
def test_malformed_stored_groups(tmp_path: Path, tiny_dir: Path, groups: object) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["stored_groups"] = groups
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "config.json: stored_groups must be a list")


def test_max_text_len_beyond_the_stored_encoders_positions(tmp_path: Path, tiny_dir: Path) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["model"]["max_text_len"] = 4000  # the stored tiny BERT has 512 positions
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, "config.json: max_text_len 4000 is more than the text encoder's 512 positions")
