"""Memoised token states of a frozen text encoder (training speed-up on CPU).

While the text encoder is frozen (stage 1 of the recipe, or a frozen-encoder
run) its output for a given token sequence never changes, so every epoch after
the first can look it up instead of running the encoder again. The cache stores
each distinct sequence's last hidden state (real tokens only) in float16 and
returns float32; values are always read back through the float16 copy, so a run
with the cache is deterministic and resumable on its own terms.

:class:`TextStateCache` is installed on a :class:`clmlf.encoders.TextEncoder`
instance by overriding its ``forward`` (the module, its parameters and its
state dict stay untouched, so checkpoints are unaffected) and removed with
:meth:`TextStateCache.uninstall` before the encoder is trained.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TextStateCache:
    """``forward(input_ids, attention_mask, token_type_ids)`` with a per-sequence memo."""

    def __init__(self, dtype: torch.dtype = torch.float16):
        self.dtype = dtype
        self._store: dict[tuple, Tensor] = {}
        self._encoder: nn.Module | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

    def install(self, encoder: nn.Module) -> None:
        """Route ``encoder``'s calls through the cache (the encoder must be frozen: eval mode, no grads)."""
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError("only a frozen text encoder can be cached")
        self._encoder = encoder
        encoder.forward = self._forward  # instance attribute shadows the class method

    def uninstall(self) -> None:
        if self._encoder is not None and "forward" in self._encoder.__dict__:
            del self._encoder.__dict__["forward"]
        self._encoder = None
        self._store.clear()

    @staticmethod
    def _key(ids: list[int], types: list[int] | None) -> tuple:
        return (tuple(ids), tuple(types) if types is not None else None)

    @torch.no_grad()
    def _forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        assert self._encoder is not None
        encoder_cls = type(self._encoder)
        lengths = attention_mask.sum(dim=1).tolist()
        ids = input_ids.tolist()
        types = token_type_ids.tolist() if token_type_ids is not None else None
        keys = [self._key(ids[i][: lengths[i]], types[i][: lengths[i]] if types else None) for i in range(len(ids))]
        missing = [i for i, key in enumerate(keys) if key not in self._store]
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            states = encoder_cls.forward(
                self._encoder,
                input_ids[rows],
                attention_mask[rows],
                token_type_ids[rows] if token_type_ids is not None else None,
            )
            for j, i in enumerate(missing):
                self._store[keys[i]] = states[j, : lengths[i]].to("cpu", self.dtype).clone()
            self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        hidden = self._store[keys[0]].shape[-1]
        out = torch.zeros(len(keys), input_ids.shape[1], hidden, dtype=torch.float32)
        for i, key in enumerate(keys):
            out[i, : lengths[i]] = self._store[key].float()
        return out.to(input_ids.device)
