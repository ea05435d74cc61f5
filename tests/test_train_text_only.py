"""The text-only fast path gives the model's own logits and R for image-less batches."""

from __future__ import annotations

import torch

from clmlf.preprocess import Preprocessor
from clmlf.text_only import forward_batch, forward_text_only
from clmlf.tiny import build_tiny_model, tiny_config

torch.set_num_threads(1)


def _batch(present: list[bool]):
    model = build_tiny_model(seed=3)
    pre = Preprocessor(tiny_config(), model.text_encoder.tokenizer)
    pixels = torch.randn(len(present), 3, 64, 64, generator=torch.Generator().manual_seed(0))
    texts = ["so happy today", "the bus is late again and again", "sad"][: len(present)]
    batch = pre.collate(texts, [p if keep else None for p, keep in zip(pixels, present, strict=True)])
    return model, batch


def test_text_only_path_equals_the_model_forward():
    model, batch = _batch([False, False, False])
    with torch.no_grad():
        full = model(**batch)
        fast = forward_text_only(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(full.logits, fast.logits, atol=1e-5) and torch.allclose(full.fused, fast.fused, atol=1e-5)


def test_forward_batch_uses_the_full_model_when_an_image_is_present():
    model, batch = _batch([True, False, False])
    with torch.no_grad():
        assert torch.equal(forward_batch(model, batch).logits, model(**batch).logits)
        text_only = forward_text_only(model, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert not torch.allclose(text_only.logits[0], model(**batch).logits[0])  # the image matters for row 0
