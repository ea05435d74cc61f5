"""Markdown table of runs: the best-on-dev epoch of each ``clmlf train --out`` directory.

    .venv/bin/python scripts/summarize_runs.py runs/ablation/*-s0 [--group-seeds]

With ``--group-seeds`` runs named ``<variant>-s<seed>`` are grouped per variant
(mean and spread = max - min over seeds).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def best_epoch(run: Path) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((run / "train_config.json").read_text())
    best = max(records, key=lambda r: r["dev_" + config.get("selection_metric", "f1_weighted")])
    return {"run": run.name, "epochs": len(records), **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--group-seeds", action="store_true")
    args = parser.parse_args()
    rows = [best_epoch(run) for run in args.runs if (run / "metrics.jsonl").is_file()]
    if not args.group_seeds:
        print("| run | epochs run | best epoch | dev accuracy | dev weighted F1 | dev macro F1 |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['epochs']} | {r['epoch']} | {r['dev_accuracy']:.4f} | "
                  f"{r['dev_f1_weighted']:.4f} | {r['dev_f1_macro']:.4f} |")
        return
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"-s\d+$", "", r["run"]), []).append(r)
    print("| variant | seeds | dev accuracy (mean, spread) | dev weighted F1 (mean, spread) | dev macro F1 (mean) |")
    print("|---|---|---|---|---|")
    for name, rs in groups.items():
        def stat(key: str, runs: list[dict] = rs) -> str:
            values = [r[key] for r in runs]
            return f"{statistics.mean(values):.4f} ({max(values) - min(values):.4f})"

        print(f"| {name} | {len(rs)} | {stat('dev_accuracy')} | {stat('dev_f1_weighted')} | "
              f"{statistics.mean(r['dev_f1_macro'] for r in rs):.4f} |")


if __name__ == "__main__":
    main()
