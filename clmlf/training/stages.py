"""What trains when: the text encoder's freeze / unfreeze per stage, the optimizer groups and the learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from clmlf.training.config import TrainConfig


def freeze_text(model: nn.Module) -> None:
    model.text_encoder.freeze()


def unfreeze_text(model: nn.Module, top_layers: int | None = None) -> None:
    """Make the text encoder trainable: all of it, or (``top_layers``) only its top N transformer layers.

    With ``top_layers`` the embeddings (and the layers below the top N) keep their package weights,
    so a checkpoint stores only the trained layers (:mod:`clmlf.model.checkpoint_save`); N equal to
    the layer count trains every transformer layer and still leaves the embeddings (23 MB of word
    vectors in float16 for MiniLM) as shipped.
    """
    encoder = model.text_encoder
    encoder.frozen = False
    layers = _text_layers(encoder) if top_layers is not None else None
    if layers is not None:
        for param in encoder.parameters():
            param.requires_grad_(False)
        for layer in layers[max(0, len(layers) - top_layers):]:
            for param in layer.parameters():
                param.requires_grad_(True)
        return
    for param in encoder.parameters():
        param.requires_grad_(True)


def _text_layers(encoder: nn.Module) -> nn.ModuleList | None:
    """The transformer layers of a BERT-style backbone (``encoder.layer``), None when it has none."""
    layers = getattr(getattr(encoder.backbone, "encoder", None), "layer", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def stage_learning_rate_factor(cfg: TrainConfig, global_step: int, steps_per_epoch: int) -> float:
    """``lr_schedule="linear"``: the factor on both learning rates at this optimizer step.

    Stage 1 is constant (1.0). Stage 2 warms up linearly over ``warmup_fraction`` of
    its steps, then decays linearly to 0 at its last step. A pure function of the
    step, so a resumed run follows the same schedule with no scheduler state.
    """
    stage1_steps = cfg.stage1_epochs * steps_per_epoch
    if cfg.lr_schedule != "linear" or global_step < stage1_steps:
        return 1.0
    total = max(1, (cfg.epochs - cfg.stage1_epochs) * steps_per_epoch)
    step = global_step - stage1_steps + 1
    warmup = max(1, round(cfg.warmup_fraction * total)) if cfg.warmup_fraction else 0
    if step <= warmup:
        return step / warmup
    return max(0.0, (total - step + 1) / max(1, total - warmup))


def set_learning_rates(optimizer: torch.optim.Optimizer, cfg: TrainConfig, global_step: int, steps_per_epoch: int,
                        text_trainable: bool) -> None:
    factor = stage_learning_rate_factor(cfg, global_step, steps_per_epoch)
    optimizer.param_groups[0]["lr"] = cfg.lr * factor
    if len(optimizer.param_groups) > 1:
        optimizer.param_groups[1]["lr"] = cfg.text_lr * factor if text_trainable else 0.0


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (0.9, 0.999, eps 1e-8): fusion + heads at ``lr``; the text encoder in its own group, lr 0 until stage 2."""
    text_params = list(model.text_encoder.parameters())
    text_ids = {id(p) for p in text_params}
    fusion_params = [p for n, p in model.named_parameters()
                     if id(p) not in text_ids and not n.startswith("image_encoder.")]
    groups = [{"params": fusion_params, "lr": cfg.lr, "name": "fusion"}]
    if not cfg.text_frozen_throughout:
        groups.append({"params": text_params, "lr": 0.0, "name": "text_encoder"})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)
