"""Turning posts into model inputs: tokens, normalised pixels, and batches of both.

The image path is split into steps so training can insert its augmentations
(random flip, RandAugment) between decoding and the tensor::

    img = decode_image(data, resize)            # clmlf.fetch.decode: safe decode, EXIF, draft mode
    img = pre.resize_and_crop(img)              # shorter side -> resize, center crop image_size
    ...training augmentations on the PIL image...
    tensor = pre.to_tensor(img)                 # [3, S, S] float32, ImageNet-normalised

:meth:`Preprocessor.image_tensor` does resize + crop + tensor in one call and
:meth:`Preprocessor.image_from_bytes` adds the decode in front.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clmlf.fetch.decode import DEFAULT_MAX_PIXELS, decode_image, decoded_pixels, resize_and_center_crop
from clmlf.model.config import ModelConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True, slots=True)
class TextTokens:
    """One text as the model reads it: token ids with the special tokens, before padding.

    ``type_ids``: the segment of each token (an aspect-based input's second segment), None when all are 0.
    Its length is what a batch of it costs: batches are grouped and padded by it.
    """

    ids: list[int]
    type_ids: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ids)


class Preprocessor:
    """Tokenizer + image transform of one model configuration."""

    def __init__(self, config: ModelConfig, tokenizer: PreTrainedTokenizerBase):
        self.config = config
        self.tokenizer = tokenizer
        self._mean = torch.tensor(config.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(config.std, dtype=torch.float32).view(3, 1, 1)
        # A fast tokenizer's backend keeps its truncation/padding settings and rewrites them only when a call
        # asks for others. Every call here asks for the same, so setting them now, before the stream's threads
        # encode (consumer loop) and pad (model worker) with this preprocessor, leaves nothing to race on.
        self.encode([""])

    # ------------------------------------------------------------------ text

    def encode(self, texts: Sequence[str], aspects: Sequence[str | None] | None = None) -> list[TextTokens]:
        """Each text's token ids, unpadded (special tokens included, at most ``max_text_len``).

        For an aspect-based config the input is ``[CLS] sentence [SEP] aspect [SEP]`` (a missing
        aspect becomes the empty string); other configs ignore ``aspects``, as their model was trained
        without them. One tokenizer call for all texts; :meth:`pad` turns any of them into a batch.
        """
        texts = list(texts)
        use_aspects = self.config.aspect
        second = None
        if use_aspects:
            aspects = list(aspects) if aspects is not None else [None] * len(texts)
            if len(aspects) != len(texts):
                raise ValueError(f"{len(aspects)} aspects for {len(texts)} texts")
            second = [a or "" for a in aspects]
        if not texts:
            return []
        encoded = self.tokenizer(
            texts,
            second,
            truncation="longest_first" if use_aspects else True,
            max_length=self.config.max_text_len,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=use_aspects,
        )
        type_ids = encoded["token_type_ids"] if use_aspects else [None] * len(texts)
        return [TextTokens(list(ids), None if t is None or not any(t) else list(t))
                for ids, t in zip(encoded["input_ids"], type_ids, strict=True)]

    def token_counts(self, texts: Sequence[str], aspects: Sequence[str | None] | None = None) -> list[int]:
        """What each text costs in a batch: its :meth:`encode` length (the key batches are sorted by)."""
        return [len(tokens) for tokens in self.encode(texts, aspects)]

    def pad(self, tokens: Sequence[TextTokens]) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` [B, L], padded to the longest of ``tokens``
        on the tokenizer's padding side with its pad id (exactly what the tokenizer's own padding gives)."""
        if not tokens:
            raise ValueError("nothing to pad: no texts")
        length = max(len(t) for t in tokens)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(tokens), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(tokens), length), dtype=torch.long)
        token_type_ids = torch.zeros((len(tokens), length), dtype=torch.long)
        for row, item in enumerate(tokens):
            n = len(item)
            span = slice(length - n, length) if left else slice(0, n)
            input_ids[row, span] = torch.tensor(item.ids, dtype=torch.long)
            attention_mask[row, span] = 1
            if item.type_ids is not None:
                token_type_ids[row, span] = torch.tensor(item.type_ids, dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def tokenize(self, texts: Sequence[str], aspects: Sequence[str | None] | None = None) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` [B, L], padded to the longest in the batch
        (:meth:`encode`, then :meth:`pad`)."""
        return self.pad(self.encode(texts, aspects))

    # ------------------------------------------------------------------ images

    def resize_and_crop(self, image: Image.Image) -> Image.Image:
        """Shorter side to ``config.resize``, then the central ``config.image_size`` square (bounded memory)."""
        return resize_and_center_crop(image.convert("RGB"), self.config.resize, self.config.image_size)

    def to_tensor(self, image: Image.Image) -> Tensor:
        """RGB PIL image -> float32 [3, H, W] in [0, 1], then normalised with the config's mean/std."""
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        return (tensor - self._mean) / self._std

    def image_tensor(self, image: Image.Image) -> Tensor:
        """The evaluation image pipeline: resize 256, center crop 224, ToTensor, normalise."""
        return self.to_tensor(self.resize_and_crop(image))

    def decode(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Untrusted bytes -> RGB PIL image (raises ``clmlf.fetch.decode.ImageDecodeError``); images
        declaring more than ``max_pixels`` are refused before decoding."""
        return decode_image(data, self.config.resize, max_pixels=max_pixels)

    def decoded_pixels(self, data: bytes) -> int:
        """Pixels :meth:`decode` will allocate for ``data`` (from the header; 0 if unreadable)."""
        return decoded_pixels(data, self.config.resize)

    def image_from_bytes(self, data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tensor:
        return self.image_tensor(self.decode(data, max_pixels))

    def blank_pixels(self, n: int) -> Tensor:
        size = self.config.image_size
        return torch.zeros(n, 3, size, size, dtype=torch.float32)

    # ------------------------------------------------------------------ batches

    def collate(
        self,
        texts: Sequence[str],
        images: Sequence[Tensor | None],
        aspects: Sequence[str | None] | None = None,
        tokens: Sequence[TextTokens] | None = None,
    ) -> dict[str, Tensor]:
        """One model batch: token tensors + ``pixel_values`` (zeros where no image) + ``image_present``.

        ``tokens``: the texts already encoded (:meth:`encode`, e.g. off the model thread); they are
        only padded here, and ``texts`` / ``aspects`` are not tokenized again.

        A batch without any image gets a read-only zero view (one image's worth of memory, expanded):
        the model skips the image path for it, so nothing should pay for a [B, 3, H, W] block of zeros.
        """
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images for {len(texts)} texts")
        if tokens is not None and len(tokens) != len(texts):
            raise ValueError(f"{len(tokens)} token lists for {len(texts)} texts")
        batch = self.pad(tokens) if tokens is not None else self.tokenize(texts, aspects)
        present = torch.tensor([image is not None for image in images], dtype=torch.bool)
        if bool(present.any()):
            pixels = self.blank_pixels(len(texts))
            for row, image in enumerate(images):
                if image is not None:
                    pixels[row] = image
        else:
            size = self.config.image_size
            pixels = self.blank_pixels(1).expand(len(texts), 3, size, size)
        batch["pixel_values"] = pixels
        batch["image_present"] = present
        return batch
