"""CLMLF's two contrastive objectives (REFERENCE.md section 2), on raw (un-normalised) dot products.

* :func:`lbcl_loss` (label based): positives of anchor i are all j with the same
  label, j = i included. ``form="reference"`` is the published code
  (``log_softmax(z z^T) / tau``, the default: it produced the published numbers),
  ``form="paper"`` is Algorithm 1 (``log_softmax(z z^T / tau)``).
* :func:`dbcl_loss` (data based): each sample's positive is its own augmented view.

Both compute in at least float32 with ``log_softmax`` (max-subtracted), so they
stay finite for one-sample batches, single-label batches and large vectors, and
both are invariant to the order of the batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LbclForm = Literal["reference", "paper"]


def _as_float(z: Tensor, name: str) -> Tensor:
    if z.dim() != 2:
        raise ValueError(f"{name} must be [batch, dim], got shape {tuple(z.shape)}")
    return z if z.dtype == torch.float64 else z.float()


def lbcl_loss(z: Tensor, labels: Tensor, temperature: float = 0.07, form: LbclForm = "reference") -> Tensor:
    """Label-based contrastive loss of projected representations ``z`` [B, D] with integer ``labels`` [B]."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = _as_float(z, "z")
    labels = labels.reshape(-1)
    if labels.shape[0] != z.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {z.shape[0]} vectors")
    similarity = z @ z.T
    if form == "reference":
        log_prob = F.log_softmax(similarity, dim=1) / temperature
    elif form == "paper":
        log_prob = F.log_softmax(similarity / temperature, dim=1)
    else:
        raise ValueError(f"form must be 'reference' or 'paper', got {form!r}")
    positive = labels[:, None] == labels[None, :]  # [B, B], diagonal included, so never empty
    return -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum() / positive.sum()


def dbcl_loss(z: Tensor, z_aug: Tensor, temperature: float = 0.07) -> Tensor:
    """Data-based contrastive loss: cross-entropy of ``z z_aug^T / tau`` against ``arange(B)``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, z_aug = _as_float(z, "z"), _as_float(z_aug, "z_aug")
    if z.shape != z_aug.shape:
        raise ValueError(f"z {tuple(z.shape)} and z_aug {tuple(z_aug.shape)} must have the same shape")
    dtype = torch.promote_types(z.dtype, z_aug.dtype)
    logits = (z.to(dtype) @ z_aug.to(dtype).T) / temperature
    targets = torch.arange(z.shape[0], device=z.device)
    return F.cross_entropy(logits, targets)
