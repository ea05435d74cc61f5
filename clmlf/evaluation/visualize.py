"""Figures: attention heat maps (paper Figure 5), t-SNE clusters of R (Figure 6), training curves.

The plotting functions take plain arrays and write a PNG; the ``clmlf visualize``
command computes those arrays from a checkpoint. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_COLOURS = ("#2e7d32", "#9e9e9e", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def attention_grid(weights: np.ndarray) -> np.ndarray:
    """Weights over the patch tokens (row-major) -> a square grid, renormalised to sum to 1."""
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    side = int(round(np.sqrt(weights.size)))
    if side * side != weights.size:
        raise ValueError(f"{weights.size} patch weights do not form a square grid")
    total = weights.sum()
    return (weights / total if total > 0 else weights).reshape(side, side)


def plot_attention(
    image,
    grids: Sequence[np.ndarray],
    tokens: Sequence[str],
    out: str | Path,
    title: str = "",
) -> Path:
    """One panel per chosen text token: its attention to the image patches as a heat map over ``image``."""
    plt = _pyplot()
    picture = np.asarray(image.convert("RGB"))
    n = len(grids)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1, 3.3 * rows + 0.4), squeeze=False,
                             layout="constrained")
    height, width = picture.shape[:2]
    low = float(min(np.min(g) for g in grids))
    high = float(max(np.max(g) for g in grids))  # one colour scale for every panel
    for ax in axes.flat:
        ax.axis("off")
    for ax, grid, token in zip(axes.flat, grids, tokens, strict=False):
        ax.imshow(picture)
        overlay = ax.imshow(grid, cmap="jet", alpha=0.45, extent=(0, width, height, 0), interpolation="bilinear",
                            vmin=low, vmax=high)
        ax.set_title(f"'{token}'", fontsize=11)
    fig.colorbar(overlay, ax=axes.ravel().tolist(), shrink=0.8, label="share of the token's attention to patches")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def plot_clusters(
    points: np.ndarray,
    gold: Sequence[int],
    label_names: Sequence[str],
    out: str | Path,
    title: str = "",
) -> Path:
    """2-D points (t-SNE of R) coloured by gold label."""
    plt = _pyplot()
    points = np.asarray(points)
    gold_a = np.asarray(gold)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for index, name in enumerate(label_names):
        mask = gold_a == index
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=9, alpha=0.7, color=_COLOURS[index % len(_COLOURS)],
                       label=f"{name} ({int(mask.sum())})", edgecolors="none")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(title="gold label", markerscale=2, frameon=False)
    ax.set_title(title or "t-SNE of the fused representation R", fontsize=10)
    return _save(fig, out)


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn, PCA init) of ``features`` [N, d] -> [N, 2]."""
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    if features.shape[0] < 3:
        raise ValueError("t-SNE needs at least 3 samples")
    perplexity = float(min(30, max(2, (features.shape[0] - 1) // 3)))
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity).fit_transform(features)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of a run's ``metrics.jsonl`` (one per epoch)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (is this a clmlf train --out directory?)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}: line {number} is not JSON") from None
        if not isinstance(record, dict) or "epoch" not in record:
            raise ValueError(f"{path}: line {number} has no 'epoch'")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: no epochs recorded yet")
    return records


def plot_curves(records: Sequence[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Training losses (left) and dev metrics (right) per epoch; the best epoch is marked."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, name in (("train_loss", "total"), ("train_ce", "cross-entropy"), ("train_lbcl", "LBCL"),
                      ("train_dbcl", "DBCL")):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            left.plot(epochs, values, marker="o", ms=3, label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (mean per sample)")
    left.set_yscale("log")
    left.legend(frameon=False)
    left.grid(alpha=0.3)
    chosen_on = records[-1].get("selection", "dev")  # the split that picks best/ (a held-out slice or dev)
    for key, name in (("dev_accuracy", f"{chosen_on} accuracy"), ("dev_f1_weighted", f"{chosen_on} weighted F1"),
                      ("dev_f1_macro", f"{chosen_on} macro F1"), ("train_accuracy", "train accuracy")):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            right.plot(epochs, values, marker="o", ms=3, label=name, linestyle="--" if key.startswith("train") else "-")
    reported = [name for name in records[-1].get("evaluations", {}) if name != chosen_on]
    for name in reported:  # splits that are only reported (never chosen on): weighted F1, thin dotted
        values = [r.get("evaluations", {}).get(name, {}).get("f1_weighted") for r in records]
        right.plot(epochs, values, marker=".", ms=3, lw=1, linestyle=":", label=f"{name} weighted F1")
    right.set_xticks(epochs)
    left.set_xticks(epochs)
    best = [r["epoch"] for r in records if r.get("best")]
    if best:
        right.axvline(best[-1], color="k", alpha=0.3, linestyle=":", label=f"best epoch ({best[-1]})")
    right.set_xlabel("epoch")
    right.set_ylabel("score")
    right.legend(frameon=False, fontsize=8)
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out)
