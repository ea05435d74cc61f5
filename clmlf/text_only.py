"""Text-only forward pass: the CLMLF output for a batch in which no post has an image, without image tokens.

When ``image_present`` is all False, :class:`clmlf.model.CLMLF` still appends the
50 (zeroed, fully masked) image tokens to the fusion input. Masked keys receive
no attention and masked positions are left out of the pooling, so they cannot
change the logits or R: running the fusion transformer over the text tokens
alone gives the same result with roughly half the work for tweet-length texts.
Training and dev evaluation take this path for image-less batches;
``tests/test_train_text_only.py`` checks it against ``CLMLF.forward``.
"""

from __future__ import annotations

from torch import Tensor

from clmlf.model import CLMLF, ModelOutput, masked_mean


def forward_text_only(
    model: CLMLF, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
) -> ModelOutput:
    """Logits and R of ``model`` for image-less posts (same values as ``model(..., image_present=False)``)."""
    keep = attention_mask.to(bool)
    text = model.text_proj(model.text_encoder(input_ids, attention_mask, token_type_ids))
    tokens, _ = model.fusion_transformer(text, keep)
    if model.pooling is not None:
        fused = model.pooling(tokens, keep)
    elif model.config.pooling == "mean":
        fused = masked_mean(tokens, keep)
    else:
        fused = tokens[:, 0]
    return ModelOutput(logits=model.classifier(fused), fused=fused, num_text_tokens=input_ids.shape[1])


def forward_batch(model: CLMLF, view: dict[str, Tensor]) -> ModelOutput:
    """``model(**view)``, through :func:`forward_text_only` when no post of the batch has an image."""
    present = view.get("image_present")
    if present is not None and not bool(present.any()):
        return forward_text_only(model, view["input_ids"], view["attention_mask"], view.get("token_type_ids"))
    return model(**view)
