"""Markdown table of runs: the best epoch of each ``clmlf train --out`` directory.

    .venv/bin/python scripts/summarize_runs.py runs/ablation/*-s0 [--group-seeds]
    .venv/bin/python scripts/summarize_runs.py runs/ablation-holdout/* --group-seeds --max-epochs 3 \\
        --report mvsa-single/dev

The best epoch is the one with the best selection metric on the split the run
selected on (its dev split, or its held-out slice with ``--holdout-fraction``),
among the first ``--max-epochs``. ``--report SPLIT`` prints another evaluated
split of that same epoch (e.g. dev, when selection was on a held-out slice).
With ``--group-seeds`` runs named ``<variant>-s<seed>`` are grouped per variant
(mean and spread = max - min over seeds).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def best_epoch(run: Path, max_epochs: int | None, report: str | None) -> dict:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = records[:max_epochs] if max_epochs else records
    config = json.loads((run / "train_config.json").read_text())
    metric = config.get("selection_metric") or "f1_weighted"
    best = max(records, key=lambda r: r["dev_" + metric])
    row = {"run": run.name, "epochs": len(records), "epoch": best["epoch"],
           "selected_on": best.get("selection", "dev"), "sel_accuracy": best["dev_accuracy"],
           "sel_f1_weighted": best["dev_f1_weighted"], "sel_f1_macro": best["dev_f1_macro"]}
    shown = best.get("evaluations", {}).get(report) if report else None
    if report and shown is None:
        raise SystemExit(f"{run}: epoch {best['epoch']} has no evaluation of {report!r}")
    source = shown or {"accuracy": best["dev_accuracy"], "f1_weighted": best["dev_f1_weighted"],
                       "f1_macro": best["dev_f1_macro"]}
    row.update(accuracy=source["accuracy"], f1_weighted=source["f1_weighted"], f1_macro=source["f1_macro"])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--group-seeds", action="store_true")
    parser.add_argument("--max-epochs", type=int, help="only the first N epochs of each run count")
    parser.add_argument("--report", metavar="SPLIT", help="show this evaluated split (default: the selection one)")
    args = parser.parse_args()
    rows = [best_epoch(run, args.max_epochs, args.report) for run in args.runs if (run / "metrics.jsonl").is_file()]
    shown = args.report or "dev"
    if not args.group_seeds:
        print(f"| run | epochs | best epoch (on) | {shown} accuracy | {shown} weighted F1 | {shown} macro F1 |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {r['epochs']} | {r['epoch']} ({r['selected_on']}) | {r['accuracy']:.4f} | "
                  f"{r['f1_weighted']:.4f} | {r['f1_macro']:.4f} |")
        return
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(re.sub(r"-s\d+$", "", r["run"]), []).append(r)
    print(f"| variant | seeds | selection weighted F1 (mean, spread) | {shown} accuracy (mean, spread) | "
          f"{shown} weighted F1 (mean, spread) | {shown} macro F1 (mean, spread) |")
    print("|---|---|---|---|---|---|")
    for name, rs in groups.items():
        def stat(key: str, runs: list[dict] = rs) -> str:
            values = [r[key] for r in runs]
            return f"{statistics.mean(values):.4f} ({max(values) - min(values):.4f})"

        print(f"| {name} | {len(rs)} | {stat('sel_f1_weighted')} | {stat('accuracy')} | {stat('f1_weighted')} | "
              f"{stat('f1_macro')} |")


if __name__ == "__main__":
    main()
