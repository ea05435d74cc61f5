"""Batch inference: posts (text, optional aspect, optional image tensor) -> label + scores.

    predictor = Predictor.from_checkpoint("runs/mvsa", device="auto")
    predictions = predictor.predict([InferenceItem("great phone!", image=tensor), ...])

The number format comes from a :class:`~clmlf.serving.precision.PrecisionPlan` resolved once
when the predictor is built (``precision="auto"``: bf16 autocast on CUDA and on CPUs
with native bf16, else float32; see :mod:`clmlf.serving.precision`). On CPU denormal floats
are flushed to zero (process-wide ``torch.set_flush_denormal``).

Texts are encoded once (an item may bring its :class:`~clmlf.model.preprocess.TextTokens`,
encoded off the model thread), items are sorted by token count, and each batch is padded
to its longest text only; predictions come back in the caller's order. Sorting by token
count, not characters, matters on social-media text: URLs, hashtags and emoji make the two
disagree, and on MVSA dev texts character order padded batches of 64 to 1.4-2.1x the real
tokens against 1.03-1.21x (docs/performance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from clmlf.model.checkpoint import LoadedModel, load
from clmlf.model.preprocess import TextTokens
from clmlf.serving.precision import CpuFeatures, PrecisionPlan, probe_cpu, resolve_precision

DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class InferenceItem:
    text: str
    aspect: str | None = None
    image: Tensor | None = None  # [3, S, S] from Preprocessor.image_tensor / image_from_bytes
    tokens: TextTokens | None = None  # the text encoded beforehand (Preprocessor.encode); None: encoded here


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class Predictor:
    """Owns one loaded model on one device; not thread-safe (one worker thread should own it)."""

    def __init__(self, loaded: LoadedModel, device: str = "auto", batch_size: int = 32,
                 precision: str | PrecisionPlan = "auto", cpu: CpuFeatures | Callable[[], CpuFeatures] = probe_cpu):
        """``precision``: a mode name resolved here (see :mod:`clmlf.serving.precision`), or a ready plan."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.device = resolve_device(device)
        self.precision: PrecisionPlan = (precision if isinstance(precision, PrecisionPlan)
                                         else resolve_precision(precision, self.device, cpu))
        if self.device.type == "cpu":
            # Process-wide: EfficientNet activations underflow into denormals, which x86 CPUs
            # compute very slowly; flushing them to zero is ~25% faster and changes no label.
            torch.set_flush_denormal(True)
        self.loaded = loaded
        self.model = self.precision.prepare(loaded.model.to(self.device).eval())
        self.preprocessor = loaded.preprocessor
        self.batch_size = batch_size
        self.labels: tuple[str, ...] = tuple(loaded.config.labels)
        self.model_name = loaded.name

    @classmethod
    def from_checkpoint(cls, path: str | Path | None, device: str = "auto", batch_size: int | None = 32,
                        precision: str | PrecisionPlan = "auto") -> Predictor:
        """Load ``path``; ``None`` loads the embedded default model (clmlf/model/default_model_files).

        ``batch_size`` None: chosen from the model (``clmlf.model.config.auto_batch_size``).
        """
        from clmlf.model.config import auto_batch_size

        if path is None:
            from clmlf.model.default_model import default_checkpoint_dir

            path = default_checkpoint_dir()
        loaded = load(path, device="cpu")
        return cls(loaded, device=device, batch_size=batch_size or auto_batch_size(loaded.config),
                   precision=precision)

    @property
    def uses_bf16(self) -> bool:
        return self.precision.mode == "bf16"

    def encode(self, items: Sequence[InferenceItem]) -> list[TextTokens]:
        """Every item's tokens: its own when it brings them, the rest encoded in one tokenizer call."""
        missing = [i for i, item in enumerate(items) if item.tokens is None]
        encoded = iter(self.preprocessor.encode([items[i].text for i in missing],
                                                [items[i].aspect for i in missing]) if missing else [])
        return [item.tokens if item.tokens is not None else next(encoded) for item in items]

    def predict(self, items: Sequence[InferenceItem], batch_size: int | None = None,
                on_batch: Callable[[int], object] | None = None) -> list[Prediction]:
        """Label every item; the result list is in the order of ``items``. ``on_batch(n)`` is called
        after each batch with its size (a progress bar's ``update``)."""
        size = batch_size or self.batch_size
        tokens = self.encode(items)
        order = sorted(range(len(items)), key=lambda i: len(tokens[i]))
        results: list[Prediction | None] = [None] * len(items)
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            probabilities = self.probabilities([replace(items[i], tokens=tokens[i]) for i in chunk]).tolist()
            for row, index in enumerate(chunk):
                scores = dict(zip(self.labels, probabilities[row], strict=True))
                best = max(range(len(self.labels)), key=probabilities[row].__getitem__)
                results[index] = Prediction(label=self.labels[best], scores=scores)
            if on_batch is not None:
                on_batch(len(chunk))
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def probabilities(self, items: Sequence[InferenceItem]) -> Tensor:
        """Softmax scores [len(items), n_labels] (float32, CPU) for one batch."""
        aspects = [item.aspect for item in items]
        batch = self.preprocessor.collate(
            [item.text for item in items],
            [item.image for item in items],
            aspects if any(a is not None for a in aspects) else None,
            tokens=self.encode(items),
        )
        if not bool(batch["image_present"].any()):
            # No image in this batch (always so for a text-only model): the image path is skipped, so no
            # pixels are moved or re-laid-out (3-9 % of a text-only forward's time on CPU, bench/pixel_skip.py).
            del batch["pixel_values"]
        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        batch["pixel_values"] = self.precision.pixels(batch["pixel_values"]) if "pixel_values" in batch else None
        with self.precision.autocast():
            output = self.model(**batch)
        return output.logits.float().softmax(dim=-1).cpu()
