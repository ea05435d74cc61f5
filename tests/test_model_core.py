"""CLMLF model: config validation, shapes, masks, missing-image identity, attention weights, frozen encoders."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from tiny_models import build_tiny_model, tiny_config

from clmlf.model.config import ModelConfig
from clmlf.model.encoders import TinyCNN
from clmlf.model.model import CLMLF

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> CLMLF:
    return build_tiny_model(seed=3)


def make_batch(model: CLMLF, texts: list[str], with_image: list[bool], seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    images = [torch.randn(3, size, size, generator=gen) if flag else None for flag in with_image]
    return model_preprocessor(model).collate(texts, images)


def model_preprocessor(model: CLMLF):
    from clmlf.model.preprocess import Preprocessor

    return Preprocessor(model.config, model.text_encoder.tokenizer)


# ---------------------------------------------------------------- config


def test_config_json_round_trip() -> None:
    config = tiny_config(labels=("neg", "pos"))
    again = ModelConfig.from_json(config.to_json())
    assert again == config
    assert again.labels == ("neg", "pos") and again.num_labels == 2


@pytest.mark.parametrize(("dim", "heads"), [(32, 1), (64, 1), (128, 2), (768, 12)])
def test_heads_are_d_over_64_at_least_one(dim: int, heads: int) -> None:
    assert ModelConfig(fusion_dim=dim).num_heads == heads


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fusion_dim": 194},  # 3 heads do not divide 194
        {"fusion_dim": 33},  # odd: d/2 is not an integer
        {"labels": ("only",)},
        {"labels": ("a", "a")},
        {"labels": ("a", " ")},
        {"image_size": 256, "resize": 224},
        {"pooling": "max"},
        {"dropout": 1.0},
        {"std": (0.2, 0.0, 0.2)},
        {"unknown_field": 1},
    ],
)
def test_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        ModelConfig(**kwargs)


# ---------------------------------------------------------------- forward


def test_output_shapes_and_attention_weights(model: CLMLF) -> None:
    batch = make_batch(model, ["short", "a somewhat longer post about acme"], [True, False])
    out = model(**batch, return_attentions=True)
    num_text = batch["input_ids"].shape[1]
    length = num_text + 50  # 49 patches + 1 global token
    assert out.logits.shape == (2, 3)
    assert out.fused.shape == (2, 32)
    assert out.num_text_tokens == num_text
    assert len(out.attentions) == model.config.fusion_layers
    for weights in out.attentions:
        assert weights.shape == (2, model.config.num_heads, length, length)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, model.config.num_heads, length))
    last = out.attentions[-1]
    # Padding keys of row 0 and all image keys of row 1 get exactly zero weight.
    padding = ~batch["attention_mask"][0].bool()
    assert padding.any()
    assert (last[0][..., :num_text][..., padding] == 0).all()
    assert (last[1][..., num_text:] == 0).all()
    assert (last[0][..., num_text:] > 0).all()


def test_attentions_absent_unless_requested_and_same_logits(model: CLMLF) -> None:
    batch = make_batch(model, ["one", "two words"], [True, True])
    plain = model(**batch)
    assert plain.attentions is None
    torch.testing.assert_close(plain.logits, model(**batch, return_attentions=True).logits, atol=1e-5, rtol=1e-5)


def test_missing_image_ignores_pixels_exactly(model: CLMLF) -> None:
    texts = ["the acme phone is great", "meh", "terrible service from globex"]
    batch = make_batch(model, texts, [False, False, False])
    text_only = model(batch["input_ids"], batch["attention_mask"], None, batch["image_present"])
    for garbage in (
        torch.randn_like(batch["pixel_values"]) * 1e6,
        torch.full_like(batch["pixel_values"], float("nan")),
        torch.full_like(batch["pixel_values"], float("inf")),
    ):
        out = model(batch["input_ids"], batch["attention_mask"], garbage, batch["image_present"])
        assert torch.equal(out.logits, text_only.logits)
        assert torch.equal(out.fused, text_only.fused)


def test_mixed_batch_absent_rows_ignore_pixels(model: CLMLF) -> None:
    batch = make_batch(model, ["with picture", "without picture"], [True, False], seed=1)
    reference = model(**batch)
    poisoned = dict(batch)
    poisoned["pixel_values"] = batch["pixel_values"].clone()
    poisoned["pixel_values"][1] = float("nan")
    out = model(**poisoned)
    assert torch.equal(out.logits, reference.logits)
    assert torch.isfinite(out.logits).all()


def test_text_only_batch_matches_the_same_post_in_a_mixed_batch(model: CLMLF) -> None:
    """A batch without images fuses text tokens alone; that must equal masking 50 image slots."""
    mixed = make_batch(model, ["text only post about globex", "has a picture"], [False, True], seed=6)
    alone = model_preprocessor(model).collate(["text only post about globex"], [None])
    out_alone = model(**alone, return_attentions=True)
    assert out_alone.attentions[0].shape[-1] == alone["input_ids"].shape[1]  # no image slots at all
    torch.testing.assert_close(model(**mixed).logits[0], out_alone.logits[0], atol=1e-5, rtol=1e-5)


def test_image_changes_prediction_when_present(model: CLMLF) -> None:
    batch = make_batch(model, ["same text", "same text"], [True, True], seed=2)
    out = model(**batch)
    assert not torch.allclose(out.logits[0], out.logits[1])


def test_padding_does_not_change_a_post(model: CLMLF) -> None:
    alone = make_batch(model, ["hi acme"], [True], seed=4)
    padded = make_batch(model, ["hi acme", "a much much longer text that forces padding on the first row"], [True, True], seed=4)
    padded["pixel_values"][0] = alone["pixel_values"][0]
    torch.testing.assert_close(model(**alone).logits[0], model(**padded).logits[0], atol=1e-5, rtol=1e-5)


def test_no_image_in_batch_skips_image_encoder() -> None:
    class CountingCNN(TinyCNN):
        calls = 0

        def features(self, pixel_values):
            CountingCNN.calls += 1
            return super().features(pixel_values)

    model = CLMLF(tiny_config(), image_encoder=CountingCNN()).eval()
    model(**make_batch(model, ["a", "b"], [False, False]))
    assert CountingCNN.calls == 0
    model(**make_batch(model, ["a", "b"], [True, False]))
    assert CountingCNN.calls == 1


def test_patches_are_permuted_before_flatten() -> None:
    """Patch token k = projection of the feature vector at grid position (k // w, k % w), not a raw reshape."""
    config = tiny_config().model_copy(update={"image_layers": 0})
    model = CLMLF(config).eval()
    pixels = torch.randn(2, 3, 64, 64)
    feature_map, pooled = model.image_encoder(pixels)
    tokens = model.encode_image(pixels)
    width = feature_map.shape[3]
    torch.testing.assert_close(tokens[:, 0], model.global_proj(pooled))
    for k in (0, 5, 23, 48):
        expected = model.patch_proj(feature_map[:, :, k // width, k % width])
        torch.testing.assert_close(tokens[:, 1 + k], expected)


@pytest.mark.parametrize("pooling", ["mean", "cls", "text"])
def test_other_poolings_run(pooling: str) -> None:
    model = CLMLF(tiny_config().model_copy(update={"pooling": pooling})).eval()
    out = model(**make_batch(model, ["x", "y z"], [True, False]))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()


def test_text_pooling_is_the_mean_of_the_unpadded_text_tokens_only() -> None:
    model = CLMLF(tiny_config().model_copy(update={"pooling": "text"})).eval()
    batch = make_batch(model, ["one two three four", "x"], [True, True])
    captured = []
    hook = model.fusion_transformer.register_forward_hook(lambda m, inputs, output: captured.append(output[0]))
    with torch.no_grad():
        out = model(**batch)
    hook.remove()
    fused_tokens, mask = captured[0], batch["attention_mask"].bool()
    num_text = mask.shape[1]
    for row in range(2):
        expected = fused_tokens[row, :num_text][mask[row]].mean(dim=0)  # image tokens and padding left out
        torch.testing.assert_close(out.fused[row], expected)
    assert fused_tokens.shape[1] > num_text  # the image tokens were fused, just not pooled


def test_projection_heads_keep_width(model: CLMLF) -> None:
    fused = torch.randn(4, 32)
    assert model.proj_original(fused).shape == (4, 32)
    assert model.proj_augmented(fused).shape == (4, 32)
    assert not torch.allclose(model.proj_original(fused), model.proj_augmented(fused))


# ---------------------------------------------------------------- training behaviour


def test_frozen_image_encoder_stays_in_eval_mode_and_gets_no_gradients() -> None:
    model = build_tiny_model(seed=5)
    model.train()
    assert model.training and model.fusion_transformer.training
    assert not model.image_encoder.training
    assert all(not m.training for m in model.image_encoder.modules())
    assert all(not p.requires_grad for p in model.image_encoder.parameters())
    bn = next(m for m in model.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats_before = bn.running_mean.clone()
    batch = make_batch(model, ["good", "bad news"], [True, True])
    out = model(**batch)
    out.logits.sum().backward()
    assert torch.equal(bn.running_mean, stats_before)
    assert model.patch_proj[0].weight.grad is not None
    assert model.text_encoder.backbone.embeddings.word_embeddings.weight.grad is not None
    groups = model.trainable_parameter_groups()
    assert groups["image_encoder"] == [] and groups["text_encoder"] and groups["fusion"]


def test_frozen_text_encoder() -> None:
    model = CLMLF(tiny_config().model_copy(update={"freeze_text_encoder": True}))
    model.train()
    assert not model.text_encoder.training
    assert all(not p.requires_grad for p in model.text_encoder.parameters())


def test_unfreeze_makes_an_encoder_trainable_again() -> None:
    model = CLMLF(tiny_config().model_copy(update={"freeze_text_encoder": True}))
    model.text_encoder.unfreeze()
    model.train()
    assert model.text_encoder.training
    assert all(p.requires_grad for p in model.text_encoder.parameters())
    model.eval()
    assert not model.text_encoder.training


def test_token_type_ids_are_used(model: CLMLF) -> None:
    batch = make_batch(model, ["acme battery life"], [False])
    other = dict(batch)
    other["token_type_ids"] = torch.ones_like(batch["token_type_ids"])
    assert not torch.allclose(model(**batch).logits, model(**other).logits)


def test_max_text_len_beyond_the_text_encoders_positions_is_refused() -> None:
    """MiniLM has 512 positions: a longer max_text_len would only fail on the first long post, mid-run."""
    from clmlf.model.encoders import EncoderError

    config = tiny_config().model_copy(update={"text_encoder": "minilm", "max_text_len": 513})
    with pytest.raises(EncoderError, match="max_text_len 513 is more than the text encoder's 512 positions"):
        CLMLF(config)
    assert CLMLF(config.model_copy(update={"max_text_len": 512})).config.max_text_len == 512
