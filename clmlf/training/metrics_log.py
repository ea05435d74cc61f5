"""``OUT/metrics.jsonl``: one JSON line per epoch (cut back to the resumed epoch on ``--resume``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_metrics_line(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def truncate_metrics(path: Path, epochs_done: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] <= epochs_done]
    path.write_text("".join(line + "\n" for line in kept))


def evaluation_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one evaluation (metrics.jsonl keeps these, checkpoints keep everything)."""
    return {
        "accuracy": metrics["accuracy"], "f1_weighted": metrics["f1_weighted"], "f1_macro": metrics["f1_macro"],
        "n": metrics["n"], "recall": {name: row["recall"] for name, row in metrics["per_class"].items()},
    }
