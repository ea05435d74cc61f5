"""Post-hoc logit adjustment of a trained run, measured on its held-out slice (and reported on dev).

    .venv/bin/python scripts/prior_shift.py runs/default --data-root /work/shared/data/clmlf-reference

For each scale tau it predicts with ``logits - tau * log(train prior)`` (Menon et
al. 2021, post-hoc form: rare classes, neutral, get predicted more often) and
prints accuracy / weighted F1 / macro F1 / per-class recall on the run's held-out
slice (rebuilt from its train_config.json: same datasets, fraction and seed),
split by source dataset, and on each dev split. The shift is a constant per
class, so a chosen tau folds exactly into the classifier's last bias
(``--apply TAU --out DIR`` writes that checkpoint).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

TAUS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _logits(loaded, samples, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.evaluation.predictions import predict_dataset

    data = PostDataset(samples, loaded.preprocessor, use_images=False)
    logits, _, gold = predict_dataset(loaded.model, data, BatchCollator(loaded.preprocessor), batch_size,
                                      torch.device("cpu"))
    return logits, gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="clmlf train --out directory (its best/ is read)")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--apply", type=float, metavar="TAU", help="write best/ with this shift folded in")
    parser.add_argument("--out", type=Path, help="where --apply writes the checkpoint")
    args = parser.parse_args()

    from clmlf.data.train_data import HOLDOUT, training_data
    from clmlf.evaluation.calibration import fold_prior_shift, log_prior, shifted_predictions
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.model.checkpoint import load

    torch.set_num_threads(2)
    cfg = json.loads((args.run / "train_config.json").read_text())
    from clmlf.training.presets import get_preset

    preset = get_preset(cfg["preset"])
    fraction = cfg.get("holdout_fraction")
    fraction = preset.holdout_fraction if fraction is None else fraction
    data = training_data(args.data_root, preset.train_datasets, holdout_fraction=fraction, seed=cfg["seed"],
                         translation_view=False, probe_images=False)
    counts = torch.tensor(data.label_counts, dtype=torch.float32)
    prior = log_prior(data.label_counts)
    loaded = load(args.run / "best")
    sets = dict(data.reports)
    if HOLDOUT in sets:
        for name in preset.train_datasets:
            sets[f"{HOLDOUT}/{name}"] = [s for s in sets[HOLDOUT] if s.id.startswith(name + "/")]
    outputs = {name: _logits(loaded, samples) for name, samples in sets.items()}
    print(f"train prior {dict(zip(data.label_names, (counts / counts.sum()).tolist(), strict=True))}")
    print("| set | tau | acc | wF1 | mF1 | recall " + "/".join(data.label_names) + " |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (logits, gold) in outputs.items():
        for tau in TAUS:
            m = classification_metrics(gold.tolist(), shifted_predictions(logits, prior, tau), data.label_names)
            recall = "/".join(f"{m['per_class'][n]['recall']:.2f}" for n in data.label_names)
            print(f"| {name} | {tau} | {m['accuracy']:.4f} | {m['f1_weighted']:.4f} | {m['f1_macro']:.4f} | {recall} |")
    if args.apply is not None:
        from clmlf.model.checkpoint_save import save_checkpoint

        if args.out is None:
            parser.error("--apply needs --out")
        fold_prior_shift(loaded.model.classifier, prior, args.apply)
        meta = json.loads((args.run / "best" / "config.json").read_text())
        extra = {**meta.get("extra", {}), "prior_shift": {"tau": args.apply, "log_prior": prior.tolist()}}
        save_checkpoint(loaded.model, loaded.preprocessor.tokenizer, args.out, extra=extra, name=meta.get("name"))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
