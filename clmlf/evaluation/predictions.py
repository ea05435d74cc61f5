"""Predictions of a model over a dataset, in dataset order (evaluate, visualize and the trainer's reports)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset,
    collator,
    batch_size: int,
    device: torch.device,
    *,
    amp: bool = False,
    rank: int = 0,
    world: int = 1,
    progress: bool = False,
    desc: str = "eval",
) -> tuple[Tensor, Tensor, Tensor]:
    """(logits [N, C], fused R [N, d], labels [N]) in dataset order.

    With ``world`` > 1 (DDP) each ``rank`` predicts its share and the shares are gathered.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    order = list(range(len(dataset)))[rank :: world]
    loader = DataLoader(torch.utils.data.Subset(dataset, order), batch_size=batch_size, collate_fn=collator,
                        generator=torch.Generator())
    logits, fused, labels, indices = [], [], [], []
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch"):
        inputs = {k: v.to(device) for k, v in batch["original"].items()}
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(**inputs)
        logits.append(out.logits.float().cpu())
        fused.append(out.fused.float().cpu())
        labels.append(batch["labels"])
        indices.append(batch["indices"])
    model.train(was_training)
    result = [torch.cat(x) if x else torch.zeros(0) for x in (logits, fused, labels, indices)]
    if world > 1:
        import torch.distributed as dist

        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, result)
        result = [torch.cat([g[i] for g in gathered]) for i in range(4)]
    order_back = torch.argsort(result[3])
    return result[0][order_back], result[1][order_back], result[2][order_back].long()
