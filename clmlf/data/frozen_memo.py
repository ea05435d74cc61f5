"""The install mechanism shared by the frozen-encoder caches (text states, image feature maps).

A cache is installed on one encoder instance by shadowing its ``forward`` with the
cache's ``_forward`` (an instance attribute wins over the class method); the
module, its parameters and its state dict stay untouched, so checkpoints are
unaffected. Only a frozen encoder (no parameter requiring grad) can be cached.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FrozenForwardMemo:
    """Base of :class:`clmlf.data.text_cache.TextStateCache` and :class:`clmlf.data.image_cache.ImageFeatureCache`."""

    kind = "encoder"  # named in the error for an encoder that is not frozen

    def __init__(self, dtype: torch.dtype = torch.float16):
        self.dtype = dtype
        self._store: dict[Any, torch.Tensor] = {}
        self._encoder: nn.Module | None = None
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    @property
    def installed(self) -> bool:
        return self._encoder is not None

    def install(self, encoder: nn.Module) -> None:
        """Route ``encoder``'s calls through the cache (the encoder must be frozen: eval mode, no grads)."""
        if any(p.requires_grad for p in encoder.parameters()):
            raise ValueError(f"only a frozen {self.kind} can be cached")
        self._encoder = encoder
        encoder.forward = self._forward  # instance attribute shadows the class method

    def uninstall(self) -> None:
        if self._encoder is not None and "forward" in self._encoder.__dict__:
            del self._encoder.__dict__["forward"]
        self._encoder = None
        self._store.clear()

    def _forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError
