"""Encoder registry: the real embedded encoders (MiniLM, EfficientNet-Lite0), ResNet-50, HF local dirs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from clmlf.model.config import ModelConfig
from clmlf.model.encoders import (
    EncoderError,
    create_image_encoder,
    create_text_encoder,
    efficientnet_lite0_weights_file,
    list_encoders,
    load_state_dict_by_position,
    minilm_dir,
)

torch.set_num_threads(1)


def test_registry_lists_builtin_names() -> None:
    names = list_encoders()
    assert {"minilm", "tiny-random-bert"} <= set(names["text"])
    assert {"efficientnet_lite0", "resnet50", "tiny-cnn"} <= set(names["image"])


def test_minilm_loads_package_weights() -> None:
    encoder = create_text_encoder(ModelConfig(text_encoder="minilm"))
    assert encoder.hidden_size == 384 and encoder.builtin_weights
    shipped = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in shipped if k.endswith("embeddings.word_embeddings.weight"))
    assert torch.equal(encoder.backbone.embeddings.word_embeddings.weight, shipped[key])
    batch = encoder.tokenizer(["acme rocks", "globex"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(batch["input_ids"], batch["attention_mask"])
    assert hidden.shape == (2, batch["input_ids"].shape[1], 384)
    assert batch["input_ids"][0, 0].item() == encoder.tokenizer.cls_token_id


def test_efficientnet_lite0_loads_every_tensor_and_gives_1280x7x7() -> None:
    encoder = create_image_encoder(ModelConfig(image_encoder="efficientnet_lite0"))
    assert encoder.out_channels == 1280 and encoder.builtin_weights and encoder.frozen
    shipped = torch.load(efficientnet_lite0_weights_file(), map_location="cpu", weights_only=True)
    loaded = encoder.net.state_dict()
    assert len(loaded) == len(shipped)
    for (key, ours), (name, theirs) in zip(loaded.items(), shipped.items(), strict=True):
        # Same kind of tensor at each position: equal shapes alone would let a BatchNorm's
        # weight/bias/running_mean/running_var ([C] each) land in each other's place.
        assert key.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1], (key, name)
        assert ours.shape == theirs.shape, name
        assert torch.equal(ours, theirs), name
    variances = [t for k, t in loaded.items() if k.endswith("running_var")]
    assert variances and all((v >= 0).all() for v in variances)  # dead channels have exactly 0
    with torch.no_grad():
        feature_map, pooled = encoder(torch.randn(2, 3, 224, 224))
    assert feature_map.shape == (2, 1280, 7, 7) and pooled.shape == (2, 1280)
    torch.testing.assert_close(pooled, feature_map.mean(dim=(2, 3)))
    encoder.train()
    assert not encoder.training and not any(m.training for m in encoder.modules())


def test_resnet50_random_and_from_weights_file(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    with torch.random.fork_rng():
        torch.manual_seed(0)
        source = resnet50(weights=None)
    weights = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    encoder = create_image_encoder(ModelConfig(image_encoder="resnet50", image_weights=str(weights)))
    assert encoder.out_channels == 2048 and not encoder.builtin_weights
    torch.testing.assert_close(encoder.body[0].weight, source.conv1.weight)
    pth = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), pth)
    from_pth = create_image_encoder(ModelConfig(image_encoder="resnet50", image_weights=str(pth)))
    torch.testing.assert_close(from_pth.body[0].weight, source.conv1.weight)
    with torch.no_grad():
        feature_map, pooled = encoder(torch.randn(1, 3, 224, 224))
    assert feature_map.shape == (1, 2048, 7, 7) and pooled.shape == (1, 2048)


def test_resnet50_bad_weights_files(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="not found"):
        create_image_encoder(ModelConfig(image_encoder="resnet50", image_weights=str(tmp_path / "none.pth")))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(EncoderError, match="wrong.safetensors"):
        create_image_encoder(ModelConfig(image_encoder="resnet50", image_weights=str(wrong)))


def test_hf_text_encoder_from_local_directory(tmp_path: Path) -> None:
    """Any non-registered name is a local dir / HF cache entry (how BERT-base is used)."""
    tiny = create_text_encoder(ModelConfig(text_encoder="tiny-random-bert"))
    tiny.backbone.save_pretrained(tmp_path / "bert")
    tiny.tokenizer.save_pretrained(tmp_path / "bert")
    encoder = create_text_encoder(ModelConfig(text_encoder=str(tmp_path / "bert"), freeze_text_encoder=True))
    assert encoder.hidden_size == 32 and not encoder.builtin_weights and encoder.frozen
    torch.testing.assert_close(
        encoder.backbone.embeddings.word_embeddings.weight, tiny.backbone.embeddings.word_embeddings.weight
    )


def test_unknown_encoders_raise_one_line(tmp_path: Path) -> None:
    with pytest.raises(EncoderError, match="unknown image encoder 'vit-huge'"):
        create_image_encoder(ModelConfig(image_encoder="vit-huge"))
    with pytest.raises(EncoderError) as info:
        create_text_encoder(ModelConfig(text_encoder=str(tmp_path / "no-such-model")))
    assert "\n" not in str(info.value)


def test_position_mapping_checks_shapes() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    good = {"a": torch.ones(3, 2), "b": torch.ones(3), "c": torch.ones(1, 3), "d": torch.ones(1)}
    assert load_state_dict_by_position(net, good, "good.pth") == 4
    assert torch.equal(net[0].weight, torch.ones(3, 2))
    with pytest.raises(EncoderError, match="does not fit"):
        load_state_dict_by_position(net, {**good, "c": torch.ones(3, 1)}, "bad.pth")
    with pytest.raises(EncoderError, match="tensors in the file"):
        load_state_dict_by_position(net, {"a": torch.ones(3, 2)}, "short.pth")
