"""A logit ensemble of trained runs, measured on their shared held-out slice (and reported on dev).

    .venv/bin/python scripts/logit_ensemble.py clmlf/model/default_model_files runs/a/best runs/b/best \
        --data-root /work/shared/data/clmlf-reference --threads 1 --json runs/ensemble.json

Each checkpoint predicts the held-out slice of the merged train splits (rebuilt as `clmlf soup`
rebuilds it: the checkpoints must share seed, fraction, preset and encoders) and both dev splits,
in fp32; the per-source parts of the slice are read off its predictions. The ensembles average the members' logits:
"uniform" is every checkpoint, "greedy" adds members best-first while the held-out selection
metric does not drop (`clmlf soup`'s rule, applied to outputs instead of weights, so members may
differ in shape).
Posts/s of each member on the held-out slice are measured with the threads given: an ensemble of
k members costs the sum of their forward passes (k times one model's CPU), and k times the disk
and memory, which is why docs/results.md weighs it against the 30 MB limit of the embedded model.
Logits are cached beside each checkpoint's name in --cache (rerunning with one more member costs
only that member's passes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch


def _member_logits(path: Path, splits: dict, cache: Path, batch_size: int) -> tuple[dict, float]:
    """{split: logits [N, C]} for one checkpoint, and its posts/s on the held-out slice."""
    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.data.train_data import HOLDOUT
    from clmlf.evaluation.predictions import predict_dataset
    from clmlf.model.checkpoint import load

    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:12]
    cached = cache / f"{digest}-v2.pt"
    if cached.is_file():
        saved = torch.load(cached)
        return saved["logits"], saved["posts_per_s"]
    loaded = load(path, torch.device("cpu"))
    collate = BatchCollator(loaded.preprocessor)
    out, posts_per_s = {}, 0.0
    for split, samples in splits.items():
        data = PostDataset(samples, loaded.preprocessor, use_images=False)
        start = time.perf_counter()
        out[split], _, _ = predict_dataset(loaded.model, data, collate, batch_size, torch.device("cpu"))
        if split == HOLDOUT:
            posts_per_s = len(samples) / (time.perf_counter() - start)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"logits": out, "posts_per_s": posts_per_s, "path": str(path)}, cached)
    return out, posts_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="checkpoint or run directories (2 or more)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path("runs/ensemble-logits"))
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("an ensemble needs at least 2 checkpoints")

    from clmlf.commands.soup import selection_data, shared_training
    from clmlf.data.train_data import HOLDOUT
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.training.soup import greedy_soup

    torch.set_num_threads(args.threads)
    try:
        paths, shared = shared_training(args.checkpoints)
        cfg, data = selection_data(shared, args.data_root)
    except ValueError as exc:
        raise SystemExit(f"logit_ensemble: error: {exc}") from None
    reports = data.reports
    # The per-source parts are subsets of the held-out slice: predicted once, read off by post id.
    predicted = {name: samples for name, samples in reports.items() if not name.startswith(f"{HOLDOUT}/")}
    row_of = {sample.id: row for row, sample in enumerate(reports[HOLDOUT])}
    rows_of = {name: torch.tensor([row_of[s.id] for s in samples]) for name, samples in reports.items()
               if name.startswith(f"{HOLDOUT}/")}
    gold = {name: [sample.label for sample in samples] for name, samples in reports.items()}

    names, logits, speeds = [str(path) for path in paths], [], []
    for path in paths:
        out, speed = _member_logits(path, predicted, args.cache, args.batch_size)
        out |= {name: out[HOLDOUT][rows] for name, rows in rows_of.items()}
        logits.append(out)
        speeds.append(speed)
        print(f"{path}: {speed:.1f} posts/s on the held-out slice ({args.threads} thread(s))", flush=True)

    def score(members: list[int], names_: list[str]) -> dict:
        out = {}
        for report in names_:
            mean = torch.stack([logits[i][report] for i in members]).mean(0)
            m = classification_metrics(gold[report], mean.argmax(-1).tolist(), data.label_names)
            out[report] = {k: m[k] for k in ("accuracy", "f1_weighted", "f1_macro")} | {
                "recall": [m["per_class"][label]["recall"] for label in data.label_names]}
        return out

    metric = cfg.selection_metric
    rows = {names[i]: score([i], list(reports)) for i in range(len(paths))}
    chosen, _ = greedy_soup([rows[name][HOLDOUT][metric] for name in names],
                            lambda members: score(members, [HOLDOUT])[HOLDOUT][metric])
    rows[f"greedy ensemble ({len(chosen)})"] = score(chosen, list(reports))
    rows[f"uniform ensemble ({len(paths)})"] = score(list(range(len(paths))), list(reports))

    print(" | ".join(["model", *reports]))
    for name, row in rows.items():
        cells = [f"{row[r]['accuracy']:.4f} / {row[r]['f1_weighted']:.4f} / {row[r]['f1_macro']:.4f}" for r in reports]
        print(" | ".join([name, *cells]))
    print(f"greedy members ({metric} on {HOLDOUT}):", ", ".join(names[i] for i in chosen))
    print("posts/s: " + ", ".join(f"{n} {s:.1f}" for n, s in zip(names, speeds, strict=True)))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "greedy_members": [names[i] for i in chosen],
                                         "posts_per_s": dict(zip(names, speeds, strict=True)),
                                         "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
