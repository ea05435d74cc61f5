"""A logit ensemble of trained runs, measured on their shared held-out slice (and reported on dev).

    .venv/bin/python scripts/logit_ensemble.py clmlf/model/default_model_files runs/a/best runs/b/best \
        --data-root /work/shared/data/clmlf-reference --threads 1 --json runs/ensemble.json

Each checkpoint predicts the held-out slice of the merged train splits (rebuilt from the first
checkpoint's train_config: same datasets, fraction and seed, checked against the others), its two
per-source parts and both dev splits, in fp32. The ensembles average the members' logits:
"uniform" is every checkpoint, "greedy" adds members best-first while held-out weighted F1 does
not drop (the soup rule, applied to outputs instead of weights, so members may differ in shape).
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

METRIC = "f1_weighted"


def _train_config(path: Path) -> dict:
    meta = json.loads((path / "config.json").read_text())
    cfg = meta.get("extra", {}).get("train_config")
    if cfg is None:
        raise SystemExit(f"{path}: config.json records no train_config (not written by clmlf train)")
    return cfg


def _member_logits(path: Path, reports: dict, cache: Path, batch_size: int) -> tuple[dict, float]:
    """{report: logits [N, C]} for one checkpoint, and its posts/s on the held-out slice."""
    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.evaluation.predictions import predict_dataset
    from clmlf.model.checkpoint import load

    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:12]
    cached = cache / f"{digest}.pt"
    if cached.is_file():
        saved = torch.load(cached)
        return saved["logits"], saved["posts_per_s"]
    loaded = load(path, torch.device("cpu"))
    collate = BatchCollator(loaded.preprocessor)
    out, posts_per_s = {}, 0.0
    for report, samples in reports.items():
        data = PostDataset(samples, loaded.preprocessor, use_images=False)
        start = time.perf_counter()
        logits, _, _ = predict_dataset(loaded.model, data, collate, batch_size, torch.device("cpu"))
        if report == "holdout":
            posts_per_s = len(samples) / (time.perf_counter() - start)
        out[report] = logits
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"logits": out, "posts_per_s": posts_per_s, "path": str(path)}, cached)
    return out, posts_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories (2 or more)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path("runs/ensemble-logits"))
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        parser.error("an ensemble needs at least 2 checkpoints")

    from clmlf.data.train_data import training_data
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.training.presets import get_preset

    torch.set_num_threads(args.threads)
    configs = [_train_config(path) for path in args.checkpoints]
    for path, cfg in zip(args.checkpoints[1:], configs[1:], strict=True):
        for key in ("seed", "holdout_fraction", "preset"):
            if cfg.get(key) != configs[0].get(key):
                raise SystemExit(f"{path}: {key} differs from {args.checkpoints[0]}: the held-out slices differ")
    first = configs[0]
    preset = get_preset(first["preset"])
    data = training_data(args.data_root, preset.train_datasets, holdout_fraction=first["holdout_fraction"],
                         seed=first["seed"], translation_view=False, probe_images=False)
    reports = dict(data.reports)
    reports["holdout"] = reports.pop(data.selection[0])
    gold = {report: [sample.label for sample in samples] for report, samples in reports.items()}

    members = {}
    for path in args.checkpoints:
        logits, speed = _member_logits(path, reports, args.cache, args.batch_size)
        members[str(path)] = (logits, speed)
        print(f"{path}: {speed:.1f} posts/s on the held-out slice ({args.threads} thread(s))", flush=True)

    def score(names: list[str]) -> dict:
        out = {}
        for report in reports:
            mean = torch.stack([members[n][0][report] for n in names]).mean(0)
            m = classification_metrics(gold[report], mean.argmax(-1).tolist(), data.label_names)
            out[report] = {k: m[k] for k in ("accuracy", "f1_weighted", "f1_macro")} | {
                "recall": [m["per_class"][label]["recall"] for label in data.label_names]}
        return out

    rows = {name: score([name]) for name in members}
    ranked = sorted(members, key=lambda n: rows[n]["holdout"][METRIC], reverse=True)
    chosen = [ranked[0]]
    best = rows[ranked[0]]["holdout"][METRIC]
    for name in ranked[1:]:
        trial = score([*chosen, name])["holdout"][METRIC]
        if trial >= best:
            chosen, best = [*chosen, name], trial
    rows[f"greedy ensemble ({len(chosen)})"] = score(chosen)
    rows[f"uniform ensemble ({len(members)})"] = score(list(members))
    speeds = {name: speed for name, (_, speed) in members.items()}

    header = " | ".join(["model", *reports])
    print(header)
    for name, row in rows.items():
        cells = [f"{row[r]['accuracy']:.4f} / {row[r]['f1_weighted']:.4f} / {row[r]['f1_macro']:.4f}" for r in reports]
        print(" | ".join([name, *cells]))
    print("greedy members:", ", ".join(chosen))
    print("posts/s: " + ", ".join(f"{n} {s:.1f}" for n, s in speeds.items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "greedy_members": chosen, "posts_per_s": speeds,
                                         "threads": args.threads}, indent=1))


if __name__ == "__main__":
    main()
