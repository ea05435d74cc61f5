"""After training: the post-hoc prior shift, chosen on the selection slice and folded into ``OUT/best``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from clmlf.evaluation.predictions import predict_dataset
from clmlf.training.config import TrainConfig

log = logging.getLogger(__name__)


def calibrate_best(out: Path, cfg: TrainConfig, data, eval_sets: dict, device: torch.device, amp: bool) -> None:
    """Choose the post-hoc prior shift on the held-out slice, fold it into ``best/`` and re-score every report."""
    from clmlf.data.batches import BatchCollator
    from clmlf.evaluation.calibration import choose_prior_shift, fold_prior_shift, log_prior
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.model.checkpoint import load
    from clmlf.model.checkpoint_save import save_checkpoint

    loaded = load(out / "best", device)
    collate = BatchCollator(loaded.preprocessor)
    prior = log_prior(data.label_counts)
    name, _ = data.selection
    logits, _, gold = predict_dataset(loaded.model, eval_sets[name], collate, cfg.eval_batch_size, device, amp=amp)
    shift = choose_prior_shift(logits, gold.tolist(), prior, data.label_names, cfg.selection_metric)
    log.info("prior shift on %s: tau %.2f (%s)", name, shift.tau,
             ", ".join(f"tau {row['tau']}: acc {row['accuracy']:.4f} {cfg.selection_metric} "
                       f"{row[cfg.selection_metric]:.4f}" for row in shift.table))
    fold_prior_shift(loaded.model.classifier, prior, shift.tau)
    evaluations = {}
    for report, eval_set in eval_sets.items():
        logits, _, gold = predict_dataset(loaded.model, eval_set, collate, cfg.eval_batch_size, device, amp=amp)
        evaluations[report] = classification_metrics(gold.tolist(), logits.argmax(-1).tolist(), data.label_names)
        log.info("after the prior shift: %s acc %.4f, weighted F1 %.4f, macro F1 %.4f", report,
                 evaluations[report]["accuracy"], evaluations[report]["f1_weighted"], evaluations[report]["f1_macro"])
    meta = json.loads((out / "best" / "config.json").read_text())
    extra = {**meta.get("extra", {}), "dev": evaluations[name], "evaluations": evaluations,
             "prior_shift": {"tau": shift.tau, "log_prior": prior.tolist(), "chosen_on": name, "grid": shift.table}}
    save_checkpoint(loaded.model, loaded.preprocessor.tokenizer, out / "best", extra=extra, name=meta.get("name"),
                    fusion_dtype=cfg.fusion_dtype)
    (out / "prior_shift.json").write_text(json.dumps(extra["prior_shift"], indent=2) + "\n")
