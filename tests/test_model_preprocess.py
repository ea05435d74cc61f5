"""Preprocessor: tokenisation (padding, truncation, aspect form), image pipeline, collation."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_models import tiny_config

from clmlf.fetch.decode import ImageDecodeError
from clmlf.model.config import ModelConfig
from clmlf.model.preprocess import Preprocessor


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from clmlf.model.encoders import minilm_dir

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


@pytest.fixture(scope="module")
def pre(tokenizer) -> Preprocessor:
    return Preprocessor(ModelConfig(max_text_len=12), tokenizer)


def jpeg_bytes(size: tuple[int, int], color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def test_dynamic_padding_to_longest(pre: Preprocessor) -> None:
    batch = pre.tokenize(["hi", "acme makes good phones"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape == batch["token_type_ids"].shape
    assert mask[1].all() and mask[0].sum() == 3  # [CLS] hi [SEP]
    assert ids.shape[1] == int(mask[1].sum())
    assert (ids[0, 3:] == pre.tokenizer.pad_token_id).all()


def test_truncates_to_max_text_len(pre: Preprocessor) -> None:
    batch = pre.tokenize(["word " * 100])
    assert batch["input_ids"].shape[1] == 12
    assert batch["input_ids"][0, -1].item() == pre.tokenizer.sep_token_id


def test_aspect_form(tokenizer) -> None:
    pre = Preprocessor(ModelConfig(aspect=True), tokenizer)
    batch = pre.tokenize(["the screen is great but battery bad"], aspects=["battery"])
    ids = batch["input_ids"][0].tolist()
    sep = pre.tokenizer.sep_token_id
    assert ids[0] == pre.tokenizer.cls_token_id and ids.count(sep) == 2 and ids[-1] == sep
    first_sep = ids.index(sep)
    types = batch["token_type_ids"][0].tolist()
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}
    assert pre.tokenizer.decode(ids[first_sep + 1 : -1]) == "battery"


def test_non_aspect_config_ignores_aspects(pre: Preprocessor) -> None:
    plain = pre.tokenize(["battery is bad"])
    with_aspect = pre.tokenize(["battery is bad"], aspects=["battery"])
    assert torch.equal(plain["input_ids"], with_aspect["input_ids"])


def test_aspect_config_with_missing_aspects(tokenizer) -> None:
    pre = Preprocessor(ModelConfig(aspect=True), tokenizer)
    ids = pre.tokenize(["good"], aspects=None)["input_ids"][0].tolist()
    assert ids.count(pre.tokenizer.sep_token_id) == 2
    with pytest.raises(ValueError):
        pre.tokenize(["a", "b"], aspects=["x"])


def test_image_tensor_normalises_and_crops(pre: Preprocessor) -> None:
    image = Image.new("RGB", (400, 300), (255, 0, 128))
    tensor = pre.image_tensor(image)
    assert tensor.shape == (3, 224, 224) and tensor.dtype == torch.float32
    expected = [(255 / 255 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(tensor[channel], torch.full((224, 224), value), atol=1e-5, rtol=0)


def test_resize_then_center_crop_geometry(pre: Preprocessor) -> None:
    # Left half black, right half white, 512x256: shorter side -> 256 (no change), crop the central 224.
    image = Image.new("RGB", (512, 256), (0, 0, 0))
    image.paste((255, 255, 255), (256, 0, 512, 256))
    cropped = pre.resize_and_crop(image)
    assert cropped.size == (224, 224)
    assert cropped.getpixel((0, 100)) == (0, 0, 0) and cropped.getpixel((223, 100)) == (255, 255, 255)
    assert cropped.getpixel((111, 100)) == (0, 0, 0) and cropped.getpixel((112, 100)) == (255, 255, 255)


def test_image_from_bytes(pre: Preprocessor) -> None:
    tensor = pre.image_from_bytes(jpeg_bytes((640, 480), (10, 200, 30)))
    assert tensor.shape == (3, 224, 224)
    assert tensor[1].mean() > 0.5 > tensor[0].mean()  # green dominates


@pytest.mark.parametrize("data", [b"", b"definitely not an image", jpeg_bytes((64, 64), (1, 2, 3))[:40]])
def test_bad_image_bytes_raise_decode_error(pre: Preprocessor, data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        pre.image_from_bytes(data)


def test_collate_marks_missing_images(tokenizer) -> None:
    pre = Preprocessor(tiny_config(), tokenizer)
    image = torch.ones(3, 64, 64)
    batch = pre.collate(["a", "b", "c"], [None, image, None])
    assert batch["image_present"].tolist() == [False, True, False]
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert torch.equal(batch["pixel_values"][1], image)
    assert not batch["pixel_values"][0].any() and not batch["pixel_values"][2].any()
    assert pre.blank_pixels(2).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError):
        pre.collate(["a"], [None, None])


def test_extreme_aspect_ratio_is_resized_in_bounded_memory(pre: Preprocessor, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 8 x 100,000 PNG is a few KB; resizing all of it would allocate 256 x 3,200,000 pixels (2.5 GB)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 100_000), 90).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 200_000
    real_resize = Image.Image.resize

    def bounded_resize(self: Image.Image, size: tuple[int, int], *args, **kwargs) -> Image.Image:
        assert size[0] * size[1] <= 4 * 256 * 256, f"resize to {size} would allocate a huge intermediate"
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded_resize)
    tensor = pre.image_from_bytes(buffer.getvalue())
    assert tensor.shape == (3, 224, 224)
    torch.testing.assert_close(tensor[0], torch.full((224, 224), (90 / 255 - 0.485) / 0.229), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- encode once, pad per batch

SOCIAL_TEXT = st.lists(
    st.one_of(
        st.text(min_size=0, max_size=12),
        st.sampled_from(["http://t.co/Xy7Qa1", "#NoFilter", "@acme_support", "😀😀", "RT", "!!!", "naïve café"]),
    ),
    min_size=0,
    max_size=30,
).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(SOCIAL_TEXT, min_size=1, max_size=6))
def test_padding_encoded_texts_equals_the_tokenizers_own_padding(tokenizer, texts) -> None:
    """Property: :meth:`pad` of :meth:`encode` is what the tokenizer's padded call returns, for any texts."""
    pre = Preprocessor(ModelConfig(max_text_len=16), tokenizer)
    expected = tokenizer(texts, truncation=True, max_length=16, padding="longest", return_tensors="pt",
                         return_token_type_ids=True)
    encoded = pre.encode(texts)
    assert [len(t) for t in encoded] == expected["attention_mask"].sum(dim=1).tolist()
    batch = pre.pad(encoded)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], expected[key]), key


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(SOCIAL_TEXT, min_size=1, max_size=4), aspects=st.lists(SOCIAL_TEXT, min_size=4, max_size=4))
def test_aspect_pairs_keep_their_segments_when_padded_later(tokenizer, texts, aspects) -> None:
    pre = Preprocessor(ModelConfig(max_text_len=16, aspect=True), tokenizer)
    aspects = [a or None for a in aspects[: len(texts)]]
    expected = tokenizer(texts, [a or "" for a in aspects], truncation="longest_first", max_length=16,
                         padding="longest", return_tensors="pt", return_token_type_ids=True)
    batch = pre.pad(pre.encode(texts, aspects))
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[key], expected[key]), key


def test_left_padding_tokenizer_is_padded_on_the_left(tokenizer) -> None:
    import copy

    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    pre = Preprocessor(ModelConfig(max_text_len=16), left)
    texts = ["hi", "acme makes good phones"]
    expected = left(texts, truncation=True, max_length=16, padding="longest", return_tensors="pt")
    batch = pre.pad(pre.encode(texts))
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.equal(batch["attention_mask"], expected["attention_mask"])


def test_collate_pads_given_tokens_instead_of_tokenizing_the_texts(pre: Preprocessor) -> None:
    tokens = pre.encode(["acme makes good phones"])
    batch = pre.collate(["this text is not read"], [None], tokens=tokens)
    assert torch.equal(batch["input_ids"], pre.tokenize(["acme makes good phones"])["input_ids"])
    with pytest.raises(ValueError, match="1 token lists for 2 texts"):
        pre.collate(["a", "b"], [None, None], tokens=tokens)
    with pytest.raises(ValueError, match="nothing to pad"):
        pre.pad([])
