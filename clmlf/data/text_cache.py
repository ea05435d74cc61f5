"""Memoised token states of a frozen text encoder (training speed-up on CPU).

While the text encoder is frozen (stage 1 of the recipe, or a frozen-encoder
run) its output for a given token sequence never changes, so every epoch after
the first can look it up instead of running the encoder again. The cache stores
each distinct sequence's last hidden state (real tokens only) in float16 and
returns float32; values are always read back through the float16 copy, so a run
with the cache is deterministic and resumable on its own terms.

:class:`TextStateCache` is installed on a :class:`clmlf.model.encoders.TextEncoder`
instance by overriding its ``forward`` (the module, its parameters and its
state dict stay untouched, so checkpoints are unaffected) and removed with
:meth:`TextStateCache.uninstall` before the encoder is trained.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from clmlf.data.frozen_memo import FrozenForwardMemo


class TextStateCache(FrozenForwardMemo):
    """``forward(input_ids, attention_mask, token_type_ids)`` with a per-sequence memo."""

    kind = "text encoder"

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self._store.values())

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

    # ------------------------------------------------------------------ prefill and files

    def prefill(
        self,
        encoder: nn.Module,
        tokenize: Callable[[list[str], list[str | None] | None], dict[str, Tensor]],
        texts: Sequence[str],
        aspects: Sequence[str | None] | None = None,
        batch_size: int = 64,
        progress: bool = True,
    ) -> int:
        """Encode every not-yet-cached text once, in length-sorted batches (less padding); returns how many."""
        from tqdm import tqdm

        encoder_cls = type(encoder)
        pairs = list(zip(texts, aspects if aspects is not None else [None] * len(texts), strict=True))
        pairs = sorted(set(pairs), key=lambda p: (len(p[0]) + len(p[1] or ""), p))
        added = 0
        for start in tqdm(range(0, len(pairs), batch_size), desc="caching text states", unit="batch",
                          disable=not progress, leave=False):
            chunk = pairs[start : start + batch_size]
            use_aspects = any(a is not None for _, a in chunk)
            batch = tokenize([t for t, _ in chunk], [a for _, a in chunk] if use_aspects else None)
            device = next(encoder.parameters()).device
            batch = {k: v.to(device) for k, v in batch.items() if v is not None}
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            ids = batch["input_ids"].tolist()
            types = batch["token_type_ids"].tolist() if batch.get("token_type_ids") is not None else None
            keys = [self._key(ids[i][:n], types[i][:n] if types else None) for i, n in enumerate(lengths)]
            missing = [i for i, key in enumerate(keys) if key not in self._store]
            if not missing:
                continue
            rows = torch.tensor(missing, device=device)
            with torch.no_grad():
                states = encoder_cls.forward(
                    encoder,
                    batch["input_ids"][rows],
                    batch["attention_mask"][rows],
                    batch["token_type_ids"][rows] if batch.get("token_type_ids") is not None else None,
                )
            for j, i in enumerate(missing):
                if keys[i] not in self._store:
                    self._store[keys[i]] = states[j, : lengths[i]].to("cpu", self.dtype).clone()
                    added += 1
        return added

    @property
    def installed(self) -> bool:
        return self._encoder is not None

    def save(self, path: str | Path, encoder_name: str) -> None:
        """Write the cache as one safetensors file (token ids, token types, lengths, states)."""
        from safetensors.torch import save_file

        keys = list(self._store)
        lengths = torch.tensor([len(k[0]) for k in keys], dtype=torch.int64)
        tensors = {
            "lengths": lengths,
            "ids": torch.tensor([i for k in keys for i in k[0]], dtype=torch.int64),
            "types": torch.tensor([t for k in keys for t in (k[1] or [0] * len(k[0]))], dtype=torch.int8),
            "has_types": torch.tensor([k[1] is not None for k in keys], dtype=torch.bool),
            "states": torch.cat([self._store[k] for k in keys]) if keys else torch.zeros(0, 1, dtype=self.dtype),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # own name: runs sharing the file may save at once
        save_file(tensors, str(tmp), metadata={"encoder": encoder_name})
        tmp.replace(path)

    def load(self, path: str | Path, encoder_name: str) -> int:
        """Add the entries of a file written by :meth:`save` for the same encoder; returns how many were read."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            stored_for = (handle.metadata() or {}).get("encoder")
        if stored_for != encoder_name:
            raise ValueError(f"{path}: text cache was written for encoder {stored_for!r}, not {encoder_name!r}")
        tensors = load_file(str(path))
        ids, types, states = tensors["ids"].tolist(), tensors["types"].tolist(), tensors["states"]
        offset = 0
        for length, has_types in zip(tensors["lengths"].tolist(), tensors["has_types"].tolist(), strict=True):
            key = self._key(ids[offset : offset + length], types[offset : offset + length] if has_types else None)
            self._store[key] = states[offset : offset + length].clone()
            offset += length
        return len(tensors["lengths"])
