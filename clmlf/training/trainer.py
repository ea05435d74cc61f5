"""The CLMLF training recipe: two stages, L = CE + w_l * LBCL + w_d * DBCL, model selection on dev.

    config = TrainConfig(preset="mvsa-single", data_root="data", out="runs/mvsa")
    result = train(config)          # writes runs/mvsa/{best,last,resume,metrics.jsonl,train_config.json}

* Stage 1 (``stage1_epochs``): the text encoder is frozen (the release's learning
  rate 0): eval mode, no gradients, and its token states are memoised
  (:mod:`clmlf.data.text_cache`) so only the first epoch pays for it. Stage 2 unfreezes
  it at ``text_lr``. The image encoder is always frozen and in eval mode.
* Each epoch: dev accuracy / weighted F1 / macro F1, one JSON line in
  ``metrics.jsonl``, ``last/`` saved, ``best/`` when the selection metric improved.
* ``resume/`` (rewritten atomically after every epoch, every ``save_every``
  optimizer steps and when ``max_steps`` stops the run) holds the trainable
  tensors and the optimizer state (safetensors) plus epoch, data position, loss
  sums and RNG states (JSON / safetensors, no pickle). ``resume=True`` continues
  from it and reproduces the uninterrupted run exactly on CPU.
* Data parallel under ``torchrun`` (DDP; each rank takes every world-th sample of
  the epoch's permutation, dev predictions and loss sums are all-reduced).

Its parts: the loss (:mod:`~clmlf.training.objective`), what trains when
(:mod:`~clmlf.training.stages`), devices and DDP (:mod:`~clmlf.training.distributed`),
``resume/`` (:mod:`~clmlf.training.resume`), ``metrics.jsonl``
(:mod:`~clmlf.training.metrics_log`) and the prior shift of ``best/``
(:mod:`~clmlf.training.prior_shift`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clmlf.evaluation.predictions import predict_dataset
from clmlf.training.config import CONFIG_FILE, METRICS_FILE, TrainConfig
from clmlf.training.distributed import (
    DistInfo,
    all_reduce_sums,
    cpu_has_native_bf16,
    init_distributed,
    to_device,
    training_device,
    wrap_for_training,
)
from clmlf.training.metrics_log import evaluation_summary, write_metrics_line
from clmlf.training.objective import TrainingObjective
from clmlf.training.presets import get_preset
from clmlf.training.prior_shift import calibrate_best
from clmlf.training.resume import restore_resume, save_resume
from clmlf.training.stages import build_optimizer, freeze_text, set_learning_rates, unfreeze_text

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    out: Path
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]] = field(default_factory=list)


def build_model_config(cfg: TrainConfig, label_names: tuple[str, ...]):
    from clmlf.model.config import ModelConfig

    return ModelConfig(
        text_encoder=cfg.text_encoder,
        image_encoder=cfg.image_encoder,
        image_weights=cfg.image_weights,
        freeze_image_encoder=True,
        freeze_text_encoder=cfg.text_frozen_throughout,
        fusion_dim=cfg.fusion_dim,
        fusion_layers=cfg.fusion_layers,
        image_layers=cfg.image_layers,
        pooling=cfg.pooling,
        max_text_len=cfg.max_text_len,
        labels=label_names,
        aspect=cfg.aspect,
        trained_with_images=cfg.use_images,
        image_size=cfg.image_size,
        resize=max(cfg.image_size, round(cfg.image_size * 8 / 7)),
    )


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) one training run as configured; returns the best dev score and the history."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from clmlf.data.augment import identity_augment, train_image_augment
    from clmlf.data.batches import BatchCollator, EpochOrder, LengthBucketedOrder, PostDataset
    from clmlf.data.distractors import distractor_images
    from clmlf.data.train_data import training_data
    from clmlf.evaluation.calibration import log_prior
    from clmlf.evaluation.metrics import classification_metrics
    from clmlf.model.checkpoint_save import save_checkpoint
    from clmlf.model.encoders import hub_offline
    from clmlf.model.model import CLMLF
    from clmlf.model.preprocess import Preprocessor

    hub_offline()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = training_device(cfg.device)
    amp_possible = device.type == "cuda" or cpu_has_native_bf16()
    if cfg.amp and not amp_possible:
        raise ValueError("--amp (bfloat16 autocast) needs a CUDA device or a CPU with native bf16 (avx512_bf16/amx)")
    # Not given: the preset's choice where the hardware computes bf16 natively (fp32 elsewhere).
    amp = cfg.amp if cfg.amp is not None else get_preset(cfg.preset).amp and amp_possible
    dist_info = init_distributed(device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    data = training_data(cfg.data_root, cfg.datasets, holdout_fraction=cfg.holdout_fraction, seed=cfg.seed,
                         translation_view=cfg.translation_view, probe_images=cfg.use_images,
                         limit_train=cfg.limit_train, oversample=cfg.oversample)
    train_samples = data.train
    if dist_info.main:
        log.info("training on %d samples (%s), selecting on %s (%d posts), bf16 autocast %s", len(train_samples),
                 "+".join(cfg.datasets), data.selection[0], len(data.selection[1]), "on" if amp else "off")

    torch.manual_seed(cfg.seed)
    model_config = build_model_config(cfg, data.label_names)
    model = CLMLF(model_config).to(device)
    if cfg.data_seed != cfg.seed:
        torch.manual_seed(cfg.data_seed)  # same initialisation as --seed, own dropout stream
    tokenizer = model.text_encoder.tokenizer
    pre = Preprocessor(model_config, tokenizer)

    optimizer = build_optimizer(model, cfg)
    state: dict[str, Any] = {"epoch": 0, "position": 0, "global_step": 0, "best_score": -math.inf, "best_epoch": 0,
                             "sums": {}}
    if cfg.resume:
        state = restore_resume(out, model, optimizer, cfg)
        if dist_info.main:
            log.info("resuming %s at epoch %d, sample %d (step %d)", out, state["epoch"] + 1, state["position"],
                     state["global_step"])
    elif dist_info.main:
        (out / METRICS_FILE).unlink(missing_ok=True)
        (out / CONFIG_FILE).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")

    distractors = []
    if cfg.distractor_rate > 0:
        distractors = list(distractor_images(cfg.distractor_pool, pool="train", seed=cfg.data_seed, size=model_config.resize))
    train_set = PostDataset(
        train_samples, pre, augment=train_image_augment() if cfg.image_augment else identity_augment,
        with_augmented_view=cfg.dbcl,
        distractors=distractors, distractor_rate=cfg.distractor_rate, seed=cfg.data_seed, use_images=cfg.use_images,
        augment_copies=cfg.augment_copies,
    )
    eval_sets = {name: PostDataset(samples, pre, use_images=cfg.use_images) for name, samples in data.reports.items()}
    collate_train = BatchCollator(pre, with_augmented_view=cfg.dbcl)
    collate_eval = BatchCollator(pre)
    if cfg.length_bucketing:
        lengths = pre.token_counts([s.text for s in train_samples], [s.aspect for s in train_samples])
        order = LengthBucketedOrder(lengths, cfg.batch_size, seed=cfg.data_seed, rank=dist_info.rank,
                                    world=dist_info.world)
    else:
        order = EpochOrder(len(train_set), shuffle=True, seed=cfg.data_seed, rank=dist_info.rank, world=dist_info.world)

    objective = TrainingObjective(model, cfg, log_prior=log_prior(data.label_counts).to(device))
    step_fn: nn.Module | None = None

    if cfg.distractor_rate > 0 or cfg.cache_images:
        from clmlf.data.image_cache import ImageFeatureCache

        copies = max(1, cfg.augment_copies)
        recurring = len(train_samples) * copies + len(data.eval_samples()) if cfg.cache_images else 0
        ImageFeatureCache(max_entries=cfg.distractor_pool + recurring).install(model.image_encoder)
    cache = None
    if cfg.cache_text and state["epoch"] < cfg.stage1_epochs:
        cache = _prefilled_cache(cfg, model, pre, train_samples, data.eval_samples(), dist_info)
    history: list[dict[str, Any]] = []
    stop = False
    for epoch in range(state["epoch"], cfg.epochs):
        text_trainable = epoch >= cfg.stage1_epochs and not cfg.text_frozen_throughout
        if text_trainable:
            if cache is not None:
                cache.uninstall()
                cache = None
            unfreeze_text(model, cfg.text_train_layers)
            optimizer.param_groups[1]["lr"] = cfg.text_lr
        else:
            freeze_text(model)
            if cache is not None and not cache.installed:
                cache.install(model.text_encoder)
        if step_fn is None or text_trainable != getattr(step_fn, "_text_trainable", None):
            # (Re)wrap when the trainable set changes: DDP registers only parameters that need gradients.
            step_fn = wrap_for_training(objective, cfg, dist_info, device)
            step_fn._text_trainable = text_trainable
        train_set.set_epoch(epoch)
        order.set_epoch(epoch, start=state["position"])
        steps_per_epoch = math.ceil(math.ceil(len(order.indices()) / cfg.batch_size) / cfg.grad_accum)
        # Own generator: creating the iterator must not draw from the global RNG (exact resume).
        loader = DataLoader(train_set, batch_size=cfg.batch_size, sampler=order, collate_fn=collate_train,
                            num_workers=cfg.workers, drop_last=False,
                            generator=torch.Generator().manual_seed(cfg.data_seed + epoch))
        sums: dict[str, float] = dict(state.get("sums") or {})
        objective.train()
        micro = 0
        started = time.perf_counter()
        seen_this_run = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not (cfg.progress and dist_info.main), dynamic_ncols=True)
        for batch_index, batch in enumerate(bar):
            batch = to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                parts = step_fn(batch)
            (parts["loss"] / cfg.grad_accum).backward()
            micro += 1
            size = int(batch["labels"].shape[0])
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * (size if key != "correct" else 1)
            sums["n"] = sums.get("n", 0.0) + size
            sums["distractors"] = sums.get("distractors", 0.0) + batch["distractors"]
            state["position"] += size
            seen_this_run += size
            if micro % cfg.grad_accum == 0 or batch_index == len(loader) - 1:
                if cfg.lr_schedule == "linear":
                    set_learning_rates(optimizer, cfg, state["global_step"], steps_per_epoch, text_trainable)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["global_step"] += 1
                rate = seen_this_run / max(1e-9, time.perf_counter() - started)
                bar.set_postfix(loss=f"{sums['loss'] / sums['n']:.3f}", samples_s=f"{rate:.1f}")
                state["sums"] = sums
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    stop = True
                    break
                if cfg.save_every and state["global_step"] % cfg.save_every == 0 and dist_info.main:
                    save_resume(out, model, optimizer, state)
        bar.close()
        if stop and state["position"] < len(order.indices()):
            if dist_info.main:
                save_resume(out, model, optimizer, state)
                # A usable last/ where the run stopped (mid-epoch: no dev figures); --resume continues from resume/.
                stopped = {"epoch": epoch + 1, "sample": state["position"], "step": state["global_step"]}
                extra = {"train_config": cfg.model_dump(mode="json"), "epoch": epoch, "stopped_at": stopped}
                save_checkpoint(model, tokenizer, out / "last", extra=extra, name=f"{out.name}-last",
                                fusion_dtype=cfg.fusion_dtype)
                log.info("stopped at --max-steps %d (epoch %d, sample %d): %s holds this state; continue with "
                         "--resume", cfg.max_steps, epoch + 1, state["position"], out / "last")
            break
        elapsed = time.perf_counter() - started
        totals = all_reduce_sums(sums, dist_info)
        evaluations = {}
        for name, eval_set in eval_sets.items():
            logits, _, gold = predict_dataset(model, eval_set, collate_eval, cfg.eval_batch_size, device, amp=amp,
                                              rank=dist_info.rank, world=dist_info.world,
                                              progress=cfg.progress and dist_info.main,
                                              desc=f"eval [{name}]")
            evaluations[name] = classification_metrics(gold.tolist(), logits.argmax(-1).tolist(), data.label_names)
        dev = evaluations[data.selection[0]]
        n = max(1.0, totals["n"])
        record = {
            "epoch": epoch + 1,
            "step": state["global_step"],
            "stage": 2 if text_trainable else 1,
            "train_loss": totals["loss"] / n,
            "train_ce": totals["ce"] / n,
            **({"train_lbcl": totals["lbcl"] / n} if "lbcl" in totals else {}),
            **({"train_dbcl": totals["dbcl"] / n} if "dbcl" in totals else {}),
            "train_accuracy": totals["correct"] / n,
            "train_distractor_share": totals["distractors"] / n,
            "dev_accuracy": dev["accuracy"],
            "dev_f1_weighted": dev["f1_weighted"],
            "dev_f1_macro": dev["f1_macro"],
            "selection": data.selection[0],
            "evaluations": {name: evaluation_summary(metrics) for name, metrics in evaluations.items()},
            "samples_per_s": seen_this_run * dist_info.world / max(1e-9, elapsed),
            "epoch_seconds": elapsed,
        }
        score = dev[cfg.selection_metric]
        improved = score > state["best_score"]
        record["best"] = improved
        history.append(record)
        state.update(epoch=epoch + 1, position=0, sums={})
        if dist_info.main:
            write_metrics_line(out / METRICS_FILE, record)
            extra = {"train_config": cfg.model_dump(mode="json"), "epoch": epoch + 1, "dev": dev,
                     "selection": data.selection[0], "evaluations": evaluations}
            save_checkpoint(model, tokenizer, out / "last", extra=extra, name=f"{out.name}-last",
                            fusion_dtype=cfg.fusion_dtype)
            if improved:
                save_checkpoint(model, tokenizer, out / "best", extra=extra, name=out.name, fusion_dtype=cfg.fusion_dtype)
            for name, metrics in evaluations.items():
                log.info("epoch %d/%d: %s acc %.4f, weighted F1 %.4f, macro F1 %.4f, recall %s%s", epoch + 1,
                         cfg.epochs, name, metrics["accuracy"], metrics["f1_weighted"], metrics["f1_macro"],
                         "/".join(f"{r:.2f}" for r in evaluation_summary(metrics)["recall"].values()),
                         " (selects; best)" if improved and name == data.selection[0] else "")
            log.info("epoch %d/%d: train loss %.4f", epoch + 1, cfg.epochs, record["train_loss"])
        if improved:
            state.update(best_score=score, best_epoch=epoch + 1)
        if dist_info.main:
            save_resume(out, model, optimizer, state)
        if stop:
            break
    if cache is not None:
        cache.uninstall()
    if cfg.prior_shift and dist_info.main and (out / "best").is_dir():
        calibrate_best(out, cfg, data, eval_sets, device, amp)
    return TrainResult(out=out, best_epoch=state["best_epoch"], best_score=state["best_score"], history=history)


def _prefilled_cache(cfg: TrainConfig, model: nn.Module, pre, train_samples, dev_samples, dist_info: DistInfo):
    """A text-state cache holding every text the run will encode (read from / written to ``text_cache_file``)."""
    from clmlf.data.text_cache import TextStateCache

    cache = TextStateCache()
    if cfg.text_cache_file is not None and Path(cfg.text_cache_file).is_file():
        loaded = cache.load(cfg.text_cache_file, cfg.text_encoder)
        log.info("text cache: %d sequences read from %s", loaded, cfg.text_cache_file)
    samples = list(train_samples) + list(dev_samples)
    texts = [s.text for s in samples] + ([s.translation for s in train_samples] if cfg.dbcl else [])
    aspects = [s.aspect for s in samples] + ([s.aspect for s in train_samples] if cfg.dbcl else [])
    freeze_text(model)
    added = cache.prefill(model.text_encoder, pre.tokenize, texts, aspects if cfg.aspect else None,
                          progress=cfg.progress and dist_info.main)
    if added and cfg.text_cache_file is not None and dist_info.main:
        cache.save(cfg.text_cache_file, cfg.text_encoder)
    log.info("text cache: %d sequences, %.0f MB", len(cache), cache.nbytes / 2**20)
    return cache
