"""Post-hoc logit adjustment, chosen on held-out data and folded into the classifier.

A model trained with plain cross-entropy on skewed labels under-predicts its rare
classes (MVSA: neutral is 10-26% of posts). Predicting with
``logits - tau * log(train prior)`` (Menon et al. 2021, post-hoc form) moves
decisions towards them. The shift is one constant per class, so it folds exactly
into the bias of the classifier's last layer: the checkpoint stays an ordinary
CLMLF model and serving needs nothing new.

:func:`choose_prior_shift` tries a grid of tau on held-out predictions and keeps
the one with the best selection metric, preferring the smaller tau on ties and
never one that costs accuracy beyond ``max_accuracy_drop``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clmlf.evaluation.metrics import classification_metrics

TAUS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class PriorShift:
    tau: float
    metrics: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)


def log_prior(label_counts: Sequence[int]) -> Tensor:
    counts = torch.tensor(list(label_counts), dtype=torch.float32).clamp_min(1.0)
    return (counts / counts.sum()).log()


def shifted_predictions(logits: Tensor, prior: Tensor, tau: float) -> list[int]:
    return (logits.float() - tau * prior).argmax(-1).tolist()


def choose_prior_shift(
    logits: Tensor,
    gold: Sequence[int],
    prior: Tensor,
    label_names: Sequence[str],
    metric: str,
    *,
    taus: Sequence[float] = TAUS,
    max_accuracy_drop: float = 0.005,
) -> PriorShift:
    """The tau of ``taus`` with the best ``metric`` on ``(logits, gold)``; tau 0 unless another beats it."""
    gold = list(gold)
    table = []
    for tau in taus:
        metrics = classification_metrics(gold, shifted_predictions(logits, prior, tau), label_names)
        table.append({"tau": tau, "metrics": metrics})
    base = next(row for row in table if row["tau"] == 0.0) if 0.0 in taus else table[0]
    floor = base["metrics"]["accuracy"] - max_accuracy_drop
    allowed = [base] + [row for row in table if row is not base and row["metrics"]["accuracy"] >= floor]
    best = max(allowed, key=lambda row: (row["metrics"][metric], -row["tau"]))
    summary = [{"tau": row["tau"], **{k: row["metrics"][k] for k in ("accuracy", "f1_weighted", "f1_macro")}}
               for row in table]
    return PriorShift(tau=best["tau"], metrics=best["metrics"], table=summary)


def fold_prior_shift(classifier: nn.Sequential, prior: Tensor, tau: float) -> None:
    """Subtract ``tau * prior`` from the bias of the classifier's last Linear (in place)."""
    last = classifier[-1]
    if not isinstance(last, nn.Linear) or last.bias is None:
        raise TypeError("the classifier must end in a Linear layer with a bias")
    with torch.no_grad():
        last.bias -= (tau * prior).to(last.bias.device, last.bias.dtype)
