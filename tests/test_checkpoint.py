"""Checkpoint directories: round trip, what is stored, determinism, and one-line errors for broken files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import build_tiny_checkpoint, build_tiny_model, tiny_config

from clmlf.model.checkpoint import CheckpointError, load, weights_digest
from clmlf.model.checkpoint_save import save_checkpoint
from clmlf.model.model import CLMLF

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
    assert meta["format_version"] == 2 and meta["labels"] == ["positive", "neutral", "negative"]
    assert meta["encoders"]["text"] == {"name": "tiny-random-bert", "stored": "full", "model_type": "bert",
                                        "dtypes": ["float32"]}
    assert meta["encoders"]["image"] == {"name": "tiny-cnn", "stored": "full", "dtypes": ["float32"]}
    assert meta["fusion"] == {"dtypes": ["float32"]}
    assert meta["model"]["trained_with_images"] is True


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
    assert meta["encoders"]["image"]["stored"] == "none" and "keys" not in meta["encoders"]["image"]
    assert len(meta["encoders"]["image"]["base_sha256"]) == 64
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
        "from clmlf.model.checkpoint import load; print(light, clmlf.load is load)"
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
    import clmlf.model.default_model as default_model

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
    path = as_format_1(copy_checkpoint(tiny_dir, tmp_path / "c"))
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


# ---------------------------------------------------------------- format 1 (older checkpoints)


def as_format_1(path: Path, *, drop_trained_with_images: bool = True) -> Path:
    """Rewrite a checkpoint's config.json as the format 1 writer wrote it (encoders stored whole or not at all)."""
    meta = json.loads((path / "config.json").read_text())
    stored = {group: meta["encoders"][name]["stored"] for group, name in (("text_encoder", "text"),
                                                                          ("image_encoder", "image"))}
    assert "partial" not in stored.values(), "format 1 cannot describe a partial encoder"
    meta["format_version"] = 1
    for group, name in (("text_encoder", "text"), ("image_encoder", "image")):
        entry = meta["encoders"][name]
        meta["encoders"][name] = {"name": entry["name"], "stored": stored[group] == "full",
                                  **({"model_type": entry["model_type"]} if "model_type" in entry else {})}
    meta["stored_groups"] = ["fusion"] + [group for group, mode in stored.items() if mode == "full"]
    del meta["fusion"]
    if drop_trained_with_images:
        del meta["model"]["trained_with_images"]  # format 1 predates it
    (path / "config.json").write_text(json.dumps(meta, indent=2))
    return path


def test_format_1_checkpoints_still_load(tmp_path: Path, tiny_dir: Path) -> None:
    path = as_format_1(copy_checkpoint(tiny_dir, tmp_path / "v1"))
    loaded = load(path)
    assert loaded.config.trained_with_images is True  # format 1 models were trained with photos
    batch = sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, build_tiny_model(seed=0)(**batch).logits)


def test_format_1_with_a_package_encoder_left_out_still_loads(tmp_path: Path) -> None:
    """The embedded default's format 1 layout: fusion stored, frozen MiniLM rebuilt from its package."""
    config = tiny_config().model_copy(update={"text_encoder": "minilm", "freeze_text_encoder": True})
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = CLMLF(config).eval()
    path = as_format_1(save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "v1-minilm"))
    assert json.loads((path / "config.json").read_text())["stored_groups"] == ["fusion", "image_encoder"]
    loaded = load(path)
    batch = sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, model(**batch).logits)


@pytest.mark.parametrize("version", [0, 3, 99, "2", True, None, 2.5])
def test_format_version_check(tmp_path: Path, tiny_dir: Path, version: object) -> None:
    path = copy_checkpoint(tiny_dir, tmp_path / "c")
    meta = json.loads((path / "config.json").read_text())
    meta["format_version"] = version
    (path / "config.json").write_text(json.dumps(meta))
    assert_one_line_error(path, f"config.json: unsupported format_version {version!r} (this code reads 1 or 2)")


# ---------------------------------------------------------------- format 2: partial package encoders

TOP_LAYER = "text_encoder.backbone.encoder.layer.5."


def fine_tuned_minilm_model(seed: int = 0) -> CLMLF:
    """The real package MiniLM (not frozen) with only its top layer changed, plus a tiny fusion."""
    config = tiny_config().model_copy(update={"text_encoder": "minilm", "freeze_text_encoder": False})
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLMLF(config).eval()
        with torch.no_grad():
            for key, param in model.named_parameters():
                if key.startswith(TOP_LAYER):
                    param.add_(torch.randn_like(param) * 0.01)
    return model


def rounded_copy(model: CLMLF, keys: set[str]) -> CLMLF:
    """``model`` with the tensors named in ``keys`` rounded to float16 (what a float16 checkpoint holds)."""
    import copy

    twin = copy.deepcopy(model)
    state = twin.state_dict()
    with torch.no_grad():
        for key in keys:
            if state[key].is_floating_point():
                state[key].copy_(state[key].half().float())
    return twin


@pytest.fixture(scope="module")
def partial_model() -> CLMLF:
    return fine_tuned_minilm_model()


@pytest.fixture(scope="module")
def partial_dir(tmp_path_factory: pytest.TempPathFactory, partial_model: CLMLF) -> Path:
    out = tmp_path_factory.mktemp("partial") / "minilm-top"
    return save_checkpoint(partial_model, partial_model.text_encoder.tokenizer, out)


def minilm_sample_batch(loaded) -> dict[str, torch.Tensor]:
    size = loaded.config.image_size
    gen = torch.Generator().manual_seed(1)
    return loaded.preprocessor.collate(
        ["what a great acme phone, love it", "awful globex support line, again", "ok"],
        [torch.randn(3, size, size, generator=gen), None, None],
    )


def test_partial_encoder_stores_only_the_changed_tensors_in_float16(partial_model: CLMLF, partial_dir: Path) -> None:
    meta = json.loads((partial_dir / "config.json").read_text())
    text = meta["encoders"]["text"]
    top = sorted(k for k in partial_model.state_dict() if k.startswith(TOP_LAYER))
    assert top and text["stored"] == "partial" and sorted(text["keys"]) == top
    assert text["dtypes"] == ["float16"] and len(text["base_sha256"]) == 64
    assert not (partial_dir / "text_encoder").exists()  # the architecture comes from the package
    stored = load_file(str(partial_dir / "model.safetensors"))
    text_keys = sorted(k for k in stored if k.startswith("text_encoder."))
    assert text_keys == top
    state = partial_model.state_dict()
    for key in top:
        assert stored[key].dtype == torch.float16
        assert torch.equal(stored[key], state[key].half())
    assert all(stored[k].dtype == torch.float32 for k in stored
               if not k.startswith("text_encoder.") and stored[k].is_floating_point())


def test_partial_round_trip_gives_the_logits_of_the_float16_rounded_model(
    partial_model: CLMLF, partial_dir: Path
) -> None:
    loaded = load(partial_dir)
    assert not loaded.model.text_encoder.frozen and loaded.model.text_encoder.builtin_weights
    batch = minilm_sample_batch(loaded)
    top = {k for k in partial_model.state_dict() if k.startswith(TOP_LAYER)}
    expected = rounded_copy(partial_model, top)(**batch).logits
    got = loaded.model(**batch).logits
    assert torch.equal(got, expected)
    # and within float16 rounding of the in-memory model itself
    torch.testing.assert_close(got, partial_model(**batch).logits, atol=1e-3, rtol=1e-3)
    assert loaded.model.text_encoder.backbone.encoder.layer[5].attention.self.query.weight.dtype == torch.float32


def test_partial_checkpoint_size_is_what_its_tensors_explain(partial_model: CLMLF, partial_dir: Path) -> None:
    import struct

    weights = partial_dir / "model.safetensors"
    raw = weights.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    header.pop("__metadata__", None)
    stored = load_file(str(weights))
    payload = sum(t.numel() * t.element_size() for t in stored.values())
    assert len(raw) == 8 + header_len + payload
    assert set(header) == set(stored)
    state = partial_model.state_dict()
    top_bytes = sum(state[k].numel() * 2 for k in state if k.startswith(TOP_LAYER))
    text_bytes = sum(t.numel() * t.element_size() for k, t in stored.items() if k.startswith("text_encoder."))
    assert text_bytes == top_bytes  # one MiniLM layer in float16: 1.8 M parameters, 3.5 MB
    full_minilm = sum(v.numel() * 4 for k, v in state.items() if k.startswith("text_encoder."))
    assert text_bytes < full_minilm / 20


def test_fusion_can_be_stored_in_float16(tmp_path: Path, partial_model: CLMLF) -> None:
    path = save_checkpoint(partial_model, partial_model.text_encoder.tokenizer, tmp_path / "half",
                           fusion_dtype="float16")
    meta = json.loads((path / "config.json").read_text())
    assert meta["fusion"] == {"dtypes": ["float16"]}
    stored = load_file(str(path / "model.safetensors"))
    fusion_keys = {k for k in stored if k.split(".", 1)[0] not in ("text_encoder", "image_encoder")}
    floating = {k for k in fusion_keys if stored[k].is_floating_point()}
    assert floating and all(stored[k].dtype == torch.float16 for k in floating)
    loaded = load(path)
    batch = minilm_sample_batch(loaded)
    top = {k for k in partial_model.state_dict() if k.startswith(TOP_LAYER)}
    expected = rounded_copy(partial_model, top | fusion_keys)(**batch).logits
    assert torch.equal(loaded.model(**batch).logits, expected)


def test_encoder_dtype_float32_keeps_the_partial_tensors_exact(tmp_path: Path, partial_model: CLMLF) -> None:
    path = save_checkpoint(partial_model, partial_model.text_encoder.tokenizer, tmp_path / "f32",
                           encoder_dtype="float32")
    assert json.loads((path / "config.json").read_text())["encoders"]["text"]["dtypes"] == ["float32"]
    loaded = load(path)
    batch = minilm_sample_batch(loaded)
    assert torch.equal(loaded.model(**batch).logits, partial_model(**batch).logits)


def test_unchanged_trainable_package_encoder_stores_nothing(tmp_path: Path) -> None:
    config = tiny_config().model_copy(update={"text_encoder": "minilm", "freeze_text_encoder": False})
    model = CLMLF(config).eval()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "pristine")
    assert json.loads((path / "config.json").read_text())["encoders"]["text"]["stored"] == "none"
    assert not any(k.startswith("text_encoder.") for k in load_file(str(path / "model.safetensors")))


def test_a_weight_float16_cannot_hold_is_refused_on_save(tmp_path: Path) -> None:
    model = fine_tuned_minilm_model(seed=1)
    with torch.no_grad():
        model.text_encoder.backbone.encoder.layer[5].output.dense.bias[0] = 1e6
    with pytest.raises(CheckpointError, match=r"layer\.5\.output\.dense\.bias does not fit in float16") as info:
        save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "big")
    assert "\n" not in str(info.value)


def edit_meta(path: Path, change) -> Path:
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))
    return path


def _set(where: str, value: object):
    def change(meta: dict) -> None:
        *parents, last = where.split(".")
        node = meta
        for part in parents:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return change


_DELETE = object()


@pytest.mark.parametrize(
    ("where", "value", "needle"),
    [
        ("encoders.text.stored", "half", "encoders.text.stored must be one of none, partial, full"),
        ("encoders.text.stored", True, "encoders.text.stored must be one of"),  # format 1 spelling in a v2 file
        ("encoders.text.keys", "text_encoder.backbone", "encoders.text.keys must be a list of distinct"),
        ("encoders.text.keys", _DELETE, "encoders.text.keys must be a list of distinct"),
        ("encoders.text.keys", ["text_encoder.a", "text_encoder.a"], "encoders.text.keys must be a list of distinct"),
        ("encoders.text.keys", ["classifier.1.weight"], "encoders.text.keys must start with 'text_encoder.'"),
        ("encoders.text.dtypes", ["float8"], "encoders.text.dtypes must be a list of"),
        ("encoders.text.base_sha256", _DELETE, "encoders.text.base_sha256 must be the 64-hex digest"),
        ("encoders.image.keys", ["image_encoder.x"], "encoders.image.keys is only allowed with stored 'partial'"),
        ("encoders.image", "full", "encoders.image must be an object"),
        ("encoders", [], "encoders must be an object"),
        ("fusion", _DELETE, "fusion must be an object with a dtypes list"),
        ("fusion.dtypes", "float32", "fusion.dtypes must be a list of"),
    ],
)
def test_malformed_partial_description(tmp_path: Path, partial_dir: Path, where: str, value: object,
                                       needle: str) -> None:
    path = edit_meta(copy_checkpoint(partial_dir, tmp_path / "c"), _set(where, value))
    assert_one_line_error(path, f"config.json: {needle}")


def test_partial_keys_that_do_not_match_the_file(tmp_path: Path, partial_dir: Path) -> None:
    def drop_one(meta: dict) -> None:
        meta["encoders"]["text"]["keys"] = meta["encoders"]["text"]["keys"][1:]

    path = edit_meta(copy_checkpoint(partial_dir, tmp_path / "fewer"), drop_one)
    assert_one_line_error(path, "model.safetensors: tensors do not match the model in config.json (unexpected")

    def add_unknown(meta: dict) -> None:
        meta["encoders"]["text"]["keys"].append("text_encoder.backbone.encoder.layer.9.output.dense.bias")

    path = edit_meta(copy_checkpoint(partial_dir, tmp_path / "unknown"), add_unknown)
    assert_one_line_error(path, "config.json: partial encoder key 'text_encoder.backbone.encoder.layer.9")


def test_declared_dtypes_must_match_the_file(tmp_path: Path, partial_dir: Path) -> None:
    path = edit_meta(copy_checkpoint(partial_dir, tmp_path / "c"), _set("encoders.text.dtypes", ["bfloat16"]))
    assert_one_line_error(path, "config.json declares ['bfloat16'] for text_encoder")


def test_package_weights_other_than_the_checkpoints_base_are_refused(tmp_path: Path, partial_dir: Path) -> None:
    path = edit_meta(copy_checkpoint(partial_dir, tmp_path / "c"), _set("encoders.text.base_sha256", "0" * 64))
    assert_one_line_error(path, "the installed 'minilm' package weights differ from those this checkpoint")


def test_partial_needs_a_package_encoder(tmp_path: Path, tiny_dir: Path) -> None:
    def claim_partial(meta: dict) -> None:
        meta["encoders"]["text"].update(stored="partial", keys=[], base_sha256="0" * 64)

    path = edit_meta(copy_checkpoint(tiny_dir, tmp_path / "c"), claim_partial)
    assert_one_line_error(path, "encoders.text.stored 'partial' needs an encoder built from a package")
