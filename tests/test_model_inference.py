"""Predictor: order preserved, scores are probabilities, text-only items, devices, default model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clmlf.model.checkpoint import load
from clmlf.serving.inference import InferenceItem, Predictor, resolve_device

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint: Path) -> Predictor:
    # fp32 pinned: these tests compare scores to 1e-5, and "auto" would pick bf16 on a CPU that has it.
    return Predictor(load(tiny_checkpoint), device="cpu", batch_size=3, precision="fp32")


def items(n: int) -> list[InferenceItem]:
    gen = torch.Generator().manual_seed(0)
    texts = ["ok", "acme is the best brand ever made", "globex outage again", "meh", "a" * 50, "new phone day"]
    return [
        InferenceItem(texts[i % len(texts)] + f" {i}", image=torch.randn(3, 64, 64, generator=gen) if i % 2 else None)
        for i in range(n)
    ]


def test_predictions_are_in_input_order(predictor: Predictor) -> None:
    batch = items(7)
    together = predictor.predict(batch)
    one_by_one = [predictor.predict([item])[0] for item in batch]
    assert len(together) == 7
    for joint, alone in zip(together, one_by_one, strict=True):
        assert joint.label == alone.label
        for label in predictor.labels:
            assert joint.scores[label] == pytest.approx(alone.scores[label], abs=1e-5)


def test_scores_are_probabilities_and_label_is_argmax(predictor: Predictor) -> None:
    for prediction in predictor.predict(items(5)):
        assert set(prediction.scores) == {"positive", "neutral", "negative"}
        assert sum(prediction.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert prediction.label == max(prediction.scores, key=prediction.scores.get)


def test_empty_input(predictor: Predictor) -> None:
    assert predictor.predict([]) == []


def test_aspect_ignored_by_a_non_aspect_model(predictor: Predictor) -> None:
    with_aspect = predictor.predict([InferenceItem("screen good, battery bad", aspect="battery")])[0]
    without = predictor.predict([InferenceItem("screen good, battery bad")])[0]
    assert with_aspect.scores == without.scores


def test_aspect_model_uses_the_aspect(tmp_path: Path) -> None:
    from tiny_models import tiny_config

    from clmlf.model.checkpoint_save import save_checkpoint
    from clmlf.model.model import CLMLF

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = CLMLF(tiny_config().model_copy(update={"aspect": True})).eval()
    path = save_checkpoint(model, model.text_encoder.tokenizer, tmp_path / "aspect")
    aspect_predictor = Predictor(load(path), device="cpu")
    battery = aspect_predictor.predict([InferenceItem("screen good, battery bad", aspect="battery")])[0]
    screen = aspect_predictor.predict([InferenceItem("screen good, battery bad", aspect="screen")])[0]
    assert battery.scores != screen.scores


def test_model_name_has_weights_hash(predictor: Predictor, tiny_checkpoint: Path) -> None:
    from clmlf.model.checkpoint import weights_digest

    assert predictor.model_name == f"tiny-random@{weights_digest(tiny_checkpoint)}"
    assert predictor.device.type == "cpu" and not predictor.uses_bf16 and predictor.precision.mode == "fp32"


def test_device_resolution() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_bad_batch_size(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError):
        Predictor(load(tiny_checkpoint), device="cpu", batch_size=0)


def test_from_checkpoint_without_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import clmlf.model.default_model as default_model

    monkeypatch.setattr(default_model, "DEFAULT_MODEL_DIRNAME", "no_such_default_model")
    with pytest.raises(default_model.DefaultModelMissing, match="pass --checkpoint"):
        Predictor.from_checkpoint(None, device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_matches_cpu_labels(tiny_checkpoint: Path) -> None:
    cpu = Predictor(load(tiny_checkpoint), device="cpu")
    gpu = Predictor(load(tiny_checkpoint), device="cuda")
    assert gpu.uses_bf16
    for a, b in zip(cpu.predict(items(6)), gpu.predict(items(6)), strict=True):
        for label in cpu.labels:
            assert a.scores[label] == pytest.approx(b.scores[label], abs=0.05)


def test_a_batch_without_images_skips_the_pixels_and_scores_as_with_zero_pixels(predictor: Predictor) -> None:
    texts = ["acme is the best brand ever made", "globex outage again", "meh"]
    batch = predictor.preprocessor.collate(texts, [None, None, None])
    pixels = batch["pixel_values"]
    size = predictor.preprocessor.config.image_size
    assert pixels.shape == (3, 3, size, size) and pixels.stride(0) == 0 and not bool(pixels.any())
    assert not bool(batch["image_present"].any())
    with torch.inference_mode():
        reference = predictor.model(**{**batch, "pixel_values": torch.zeros(3, 3, size, size)}).logits.softmax(-1)
    got = predictor.probabilities([InferenceItem(text) for text in texts])
    assert torch.allclose(got, reference, atol=1e-6)
    # A batch with one image still gets a real, writable pixel block.
    mixed = predictor.preprocessor.collate(texts, [None, torch.ones(3, size, size), None])
    assert mixed["pixel_values"].stride(0) != 0 and mixed["image_present"].tolist() == [False, True, False]


def test_batch_size_left_unset_is_chosen_from_the_model(tiny_checkpoint: Path) -> None:
    from tiny_models import tiny_config

    from clmlf.model.config import AUTO_BATCH_SIZE, auto_batch_size

    assert auto_batch_size(tiny_config(trained_with_images=False)) == AUTO_BATCH_SIZE["text-only"] == 64
    assert auto_batch_size(tiny_config()) == AUTO_BATCH_SIZE["with images"] == 32
    assert auto_batch_size(None) == 32
    assert Predictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=None, precision="fp32").batch_size == 32
    assert Predictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=5, precision="fp32").batch_size == 5


def test_batches_are_grouped_by_token_count_not_characters(tiny_checkpoint: Path) -> None:
    """A URL is few characters and many tokens, a long plain word the reverse: batches follow the tokens,
    so each is padded to texts of about its own token count (real posts: docs/performance.md)."""

    class Recording(Predictor):
        def probabilities(self, batch):
            self.batches.append([len(t) for t in self.encode(batch)])
            return super().probabilities(batch)

    predictor = Recording(load(tiny_checkpoint), device="cpu", batch_size=2, precision="fp32")
    predictor.batches = []
    texts = ["http://t.co/Xy7Qa1zP", "supercalifragilistic", "ok", "http://t.co/a1b2c3d4/e5f6"]
    tokens = [len(t) for t in predictor.preprocessor.encode(texts)]
    assert sorted(range(4), key=lambda i: len(texts[i])) != sorted(range(4), key=tokens.__getitem__)
    together = predictor.predict([InferenceItem(t) for t in texts])
    assert predictor.batches == [sorted(tokens)[:2], sorted(tokens)[2:]]
    for text, joint in zip(texts, together, strict=True):
        alone = predictor.predict([InferenceItem(text)])[0]
        assert joint.label == alone.label
        assert joint.scores == pytest.approx(alone.scores, abs=1e-5)


def test_an_item_that_brings_its_tokens_is_not_encoded_again(predictor: Predictor) -> None:
    tokens = predictor.preprocessor.encode(["acme is the best brand ever made"])[0]
    given = predictor.predict([InferenceItem("ignored: the tokens are given", tokens=tokens)])[0]
    encoded = predictor.predict([InferenceItem("acme is the best brand ever made")])[0]
    assert given.scores == pytest.approx(encoded.scores, abs=1e-6)
    mixed = predictor.predict([InferenceItem("meh"), InferenceItem("x", tokens=tokens)])
    assert mixed[1].scores == pytest.approx(encoded.scores, abs=1e-5)
    assert mixed[0].scores == pytest.approx(predictor.predict([InferenceItem("meh")])[0].scores, abs=1e-5)
