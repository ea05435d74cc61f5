"""Memoised feature maps of a frozen image encoder, for photos that recur unchanged.

The label-free distractor photos of ``--distractor-rate`` come from a fixed pool
and are not augmented, so the frozen image encoder (eval mode, no gradients)
would compute the same feature map for each of them over and over. The cache
keys each pixel tensor by a BLAKE2b digest of its bytes and keeps its feature
map in float16 (rows it has not seen are computed in one batch). Like
:class:`clmlf.data.text_cache.TextStateCache` it is installed by overriding the
encoder instance's ``forward``; parameters and state dict are untouched.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from clmlf.data.frozen_memo import FrozenForwardMemo


class ImageFeatureCache(FrozenForwardMemo):
    """``forward(pixel_values) -> (feature_map, pooled)`` with a per-image memo (bounded by ``max_entries``)."""

    kind = "image encoder"

    def __init__(self, max_entries: int = 1024, dtype: torch.dtype = torch.float16):
        super().__init__(dtype)
        self.max_entries = max_entries

    @staticmethod
    def _digest(pixels: Tensor) -> bytes:
        return hashlib.blake2b(pixels.detach().cpu().contiguous().numpy().tobytes(), digest_size=16).digest()

    @torch.no_grad()
    def _forward(self, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
        assert self._encoder is not None
        keys = [self._digest(row) for row in pixel_values]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        computed: dict[bytes, Tensor] = {}
        # One image at a time: a feature map must not depend on which other images missed with it
        # (batched kernels can differ in the last bit, which would break exact resume).
        for i in missing:
            if keys[i] not in computed:
                feature_map, _ = type(self._encoder).forward(self._encoder, pixel_values[i : i + 1])
                value = feature_map[0].to("cpu", self.dtype).clone()
                computed[keys[i]] = value
                if len(self._store) < self.max_entries:
                    self._store[keys[i]] = value
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        maps = torch.stack([(self._store.get(k) if k in self._store else computed[k]).float() for k in keys])
        maps = maps.to(pixel_values.device)
        return maps, maps.mean(dim=(2, 3))
