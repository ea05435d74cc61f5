"""Classification metrics (accuracy, weighted / macro F1, per class, confusion) and their report.

The dictionary returned by :func:`classification_metrics` is the public
``clmlf evaluate --json`` schema: ``{"accuracy", "f1_weighted", "f1_macro", "n",
"per_class": {label: {"precision", "recall", "f1", "support"}}, "confusion": [[...]]}``
with ``confusion[gold][predicted]`` in label-id order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

METRIC_KEYS = ("accuracy", "f1_weighted", "f1_macro", "n", "per_class", "confusion")


def classification_metrics(gold: Sequence[int], predicted: Sequence[int], label_names: Sequence[str]) -> dict[str, Any]:
    """Metrics over all ``len(label_names)`` classes (absent classes count as zero F1, no warning)."""
    gold_a = np.asarray(gold, dtype=np.int64)
    pred_a = np.asarray(predicted, dtype=np.int64)
    if gold_a.shape != pred_a.shape:
        raise ValueError(f"gold and predicted differ in length: {gold_a.shape[0]} vs {pred_a.shape[0]}")
    labels = list(range(len(label_names)))
    if gold_a.size == 0:
        empty = {name: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for name in label_names}
        return {"accuracy": 0.0, "f1_weighted": 0.0, "f1_macro": 0.0, "n": 0, "per_class": empty,
                "confusion": [[0] * len(labels) for _ in labels]}
    precision, recall, f1, support = precision_recall_fscore_support(
        gold_a, pred_a, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(gold_a, pred_a)),
        "f1_weighted": float(f1_score(gold_a, pred_a, labels=labels, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(gold_a, pred_a, labels=labels, average="macro", zero_division=0)),
        "n": int(gold_a.size),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion": confusion_matrix(gold_a, pred_a, labels=labels).astype(int).tolist(),
    }


def format_report(metrics: dict[str, Any], label_names: Sequence[str], title: str = "") -> str:
    """Readable multi-line report: headline numbers, per-class table, confusion matrix."""
    lines = []
    if title:
        lines.append(title)
    lines.append(
        f"n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  "
        f"weighted F1={metrics['f1_weighted']:.4f}  macro F1={metrics['f1_macro']:.4f}"
    )
    width = max(8, *(len(n) for n in label_names))
    lines.append("")
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for name in label_names:
        row = metrics["per_class"][name]
        lines.append(
            f"{name:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:6.4f}  {row['support']:7d}"
        )
    lines.append("")
    lines.append("confusion (rows = gold, columns = predicted)")
    lines.append(" " * width + "  " + "  ".join(f"{n[:8]:>8}" for n in label_names))
    for name, row in zip(label_names, metrics["confusion"], strict=True):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:8d}" for v in row))
    return "\n".join(lines)


def precision_agreement(reference: Any, other: Any, bar: float = 0.995) -> dict[str, Any]:
    """How far a precision mode's probabilities ``other`` [N, C] move from the fp32 ``reference`` [N, C].

    ``{"n", "label_agreement", "labels_changed", "max_probability_change", "mean_probability_change",
    "bar", "passes"}``: agreement = share of rows with the same argmax label; the probability changes are
    per row the largest absolute change over the classes (max / mean over rows); ``passes`` = agreement
    >= ``bar``. Empty input agrees fully.
    """
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(other, dtype=np.float64)
    if ref.size == 0 and got.size == 0:
        ref = got = np.zeros((0, 1))
    if ref.shape != got.shape or ref.ndim != 2:
        raise ValueError(f"probabilities must be two [N, C] arrays of one shape, got {ref.shape} and {got.shape}")
    n = int(ref.shape[0])
    if n == 0:
        return {"n": 0, "label_agreement": 1.0, "labels_changed": 0, "max_probability_change": 0.0,
                "mean_probability_change": 0.0, "bar": bar, "passes": True}
    same = ref.argmax(axis=1) == got.argmax(axis=1)
    change = np.abs(ref - got).max(axis=1)
    agreement = float(same.mean())
    return {"n": n, "label_agreement": agreement, "labels_changed": int(n - same.sum()),
            "max_probability_change": float(change.max()), "mean_probability_change": float(change.mean()),
            "bar": bar, "passes": agreement >= bar}
