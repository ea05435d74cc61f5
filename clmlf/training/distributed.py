"""Where a training process computes: its device, native bf16 support, and data parallelism under torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each process drives one device, the
training step is wrapped in DDP, and loss sums are all-reduced across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from clmlf.training.config import TrainConfig


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def process_group_backend(device_type: str) -> str:
    """``gloo`` on CPU; on CUDA NCCL for the gradients plus gloo for the CPU tensors (loss sums, dev predictions)."""
    return "cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo"


def init_distributed(device: torch.device) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)  # one GPU per process; NCCL and DDP use the current device
    if not dist.is_initialized():
        dist.init_process_group(backend=process_group_backend(device.type))
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def training_device(name: str) -> torch.device:
    """``auto``/``cpu``/``cuda`` -> the device of this process (``cuda:LOCAL_RANK`` under torchrun)."""
    from clmlf.serving.inference import resolve_device

    device = resolve_device(name)
    if device.type == "cpu":
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast is faster, not slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def wrap_for_training(objective: nn.Module, cfg: TrainConfig, dist_info: DistInfo, device: torch.device) -> nn.Module:
    """DDP under torchrun, then torch.compile if asked."""
    wrapped = objective
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(
            objective,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Image-side layers get no gradient in a batch without photos; heads idle when a loss is off.
            find_unused_parameters=True,
        )
    return torch.compile(wrapped) if cfg.compile else wrapped


def to_device(batch: dict, device: torch.device) -> dict:
    if device.type == "cpu":
        return batch
    moved = dict(batch)
    for view in ("original", "augmented"):
        if batch[view] is not None:
            moved[view] = {k: v.to(device, non_blocking=True) for k, v in batch[view].items()}
    moved["labels"] = batch["labels"].to(device)
    return moved


def all_reduce_sums(sums: dict[str, float], dist_info: DistInfo) -> dict[str, float]:
    if dist_info.world <= 1:
        return dict(sums)
    import torch.distributed as dist

    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(values)
    return dict(zip(keys, values.tolist(), strict=True))
