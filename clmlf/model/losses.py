"""CLMLF's two contrastive objectives (REFERENCE.md section 2), on raw (un-normalised) dot products.

* :func:`lbcl_loss` (label based): positives of anchor i are all j with the same
  label, j = i included. ``form="reference"`` is the published code
  (``log_softmax(z z^T) / tau``, the default: it produced the published numbers),
  ``form="paper"`` is Algorithm 1 (``log_softmax(z z^T / tau)``).
* :func:`dbcl_loss` (data based): each sample's positive is its own augmented view.

The published forms work on raw dot products at tau 0.07: at initialisation
they are 10-50x the cross-entropy, so the shared layers follow their gradients.
``form="normalized"`` (both losses) fixes what was measured: vectors are
L2-normalised (cosine similarity / tau). For LBCL it is the supervised-contrastive
form with two more changes: the anchor itself is neither a positive nor in the
denominator, each anchor averages over its own positives, and anchors are
weighted so that every class present in the batch counts equally (a rare class,
neutral, is not drowned by the n_c^2 pairs of a frequent one). Anchors whose
class has no other member in the batch contribute nothing.

Both compute in at least float32 with ``log_softmax`` (max-subtracted), so they
stay finite for one-sample batches, single-label batches and large vectors, and
both are invariant to the order of the batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LbclForm = Literal["reference", "paper", "normalized"]
DbclForm = Literal["reference", "normalized"]


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
    if form == "normalized":
        return _balanced_supcon(F.normalize(z, dim=1), labels, temperature)
    similarity = z @ z.T
    if form == "reference":
        log_prob = F.log_softmax(similarity, dim=1) / temperature
    elif form == "paper":
        log_prob = F.log_softmax(similarity / temperature, dim=1)
    else:
        raise ValueError(f"form must be 'reference', 'paper' or 'normalized', got {form!r}")
    positive = labels[:, None] == labels[None, :]  # [B, B], diagonal included, so never empty
    return -torch.where(positive, log_prob, torch.zeros_like(log_prob)).sum() / positive.sum()


def _balanced_supcon(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Class-balanced supervised contrastive loss of unit vectors ``z`` (see the module docstring)."""
    batch = z.shape[0]
    self_pair = torch.eye(batch, dtype=torch.bool, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(self_pair, float("-inf"))
    log_prob = F.log_softmax(logits, dim=1).masked_fill(self_pair, 0.0)
    positive = (labels[:, None] == labels[None, :]) & ~self_pair
    count = positive.sum(dim=1)
    anchors = count > 0
    if not bool(anchors.any()):
        return z.sum() * 0.0  # no anchor has a positive: zero, but still part of the graph
    per_anchor = -(log_prob * positive).sum(dim=1)[anchors] / count[anchors]
    anchor_labels = labels[anchors]
    classes, inverse, class_sizes = torch.unique(anchor_labels, return_inverse=True, return_counts=True)
    weights = 1.0 / (class_sizes[inverse].to(per_anchor.dtype) * classes.numel())
    return (weights * per_anchor).sum()


def dbcl_loss(z: Tensor, z_aug: Tensor, temperature: float = 0.07, form: DbclForm = "reference") -> Tensor:
    """Data-based contrastive loss: cross-entropy of ``z z_aug^T / tau`` against ``arange(B)``.

    ``form="normalized"`` L2-normalises both sides first (cosine similarity / tau).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z, z_aug = _as_float(z, "z"), _as_float(z_aug, "z_aug")
    if z.shape != z_aug.shape:
        raise ValueError(f"z {tuple(z.shape)} and z_aug {tuple(z_aug.shape)} must have the same shape")
    if form == "normalized":
        z, z_aug = F.normalize(z, dim=1), F.normalize(z_aug, dim=1)
    elif form != "reference":
        raise ValueError(f"form must be 'reference' or 'normalized', got {form!r}")
    dtype = torch.promote_types(z.dtype, z_aug.dtype)
    logits = (z.to(dtype) @ z_aug.to(dtype).T) / temperature
    targets = torch.arange(z.shape[0], device=z.device)
    return F.cross_entropy(logits, targets)


def logit_adjusted_cross_entropy(logits: Tensor, labels: Tensor, log_prior: Tensor | None, scale: float = 1.0) -> Tensor:
    """Cross-entropy of ``logits + scale * log_prior`` (logit adjustment, Menon et al. 2021).

    Training against prior-shifted logits makes the raw logits, used unchanged at
    inference, estimate a class-balanced posterior: rare classes (neutral) are
    predicted more often. ``log_prior`` None (or ``scale`` 0) is plain cross-entropy.
    """
    logits = logits.float()
    if log_prior is not None and scale:
        logits = logits + scale * log_prior.to(logits.device, logits.dtype)
    return F.cross_entropy(logits, labels)
