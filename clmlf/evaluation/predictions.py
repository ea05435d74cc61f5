"""Predictions of a model over a dataset, in dataset order (evaluate, visualize and the trainer's reports)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


def by_token_count(dataset, collator) -> list[int]:
    """The dataset's indices sorted by the token count of their text (dataset order when the dataset has no
    ``samples`` with texts or the collator no preprocessor: nothing to sort by)."""
    samples = getattr(dataset, "samples", None)
    pre = getattr(collator, "pre", None)
    if samples is None or pre is None or len(samples) != len(dataset):
        return list(range(len(dataset)))
    aspects = [getattr(sample, "aspect", None) for sample in samples]
    lengths = pre.token_counts([sample.text for sample in samples], aspects)
    return sorted(range(len(dataset)), key=lengths.__getitem__)


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

    The samples run in order of their token count (each batch padded to its longest: far less padding
    than dataset order on social-media text, docs/performance.md) and come back in dataset order.
    With ``world`` > 1 (DDP) each ``rank`` predicts its share and the shares are gathered.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    order = by_token_count(dataset, collator)[rank :: world]
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
