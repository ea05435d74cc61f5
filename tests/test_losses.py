"""LBCL / DBCL against hand-computed values (naive loops), stability and order invariance."""

from __future__ import annotations

import math

import pytest
import torch

from clmlf.losses import dbcl_loss, lbcl_loss


def naive_lbcl(z: list[list[float]], labels: list[int], tau: float, form: str) -> float:
    """Direct transcription of REFERENCE.md section 2, one pair at a time."""
    n = len(z)
    dot = [[sum(a * b for a, b in zip(z[i], z[j], strict=True)) for j in range(n)] for i in range(n)]
    total, pairs = 0.0, 0
    for i in range(n):
        row = dot[i] if form == "reference" else [v / tau for v in dot[i]]
        log_norm = math.log(sum(math.exp(v) for v in row))
        for j in range(n):
            if labels[i] == labels[j]:
                log_prob = row[j] - log_norm
                total += log_prob / tau if form == "reference" else log_prob
                pairs += 1
    return -total / pairs


def naive_dbcl(z: list[list[float]], z_aug: list[list[float]], tau: float) -> float:
    n = len(z)
    total = 0.0
    for i in range(n):
        row = [sum(a * b for a, b in zip(z[i], z_aug[j], strict=True)) / tau for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
    return total / n


Z = [[0.3, -0.2, 0.5], [0.1, 0.4, -0.3], [-0.2, 0.2, 0.1], [0.05, -0.1, 0.25]]
Z_AUG = [[0.2, -0.1, 0.4], [0.0, 0.5, -0.2], [-0.3, 0.1, 0.2], [0.1, -0.2, 0.3]]
LABELS = [0, 1, 0, 2]


@pytest.mark.parametrize("form", ["reference", "paper"])
@pytest.mark.parametrize("tau", [0.07, 0.5])
def test_lbcl_matches_naive_loop(form: str, tau: float) -> None:
    expected = naive_lbcl(Z, LABELS, tau, form)
    got = lbcl_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(LABELS), tau, form=form)
    assert got.dim() == 0
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_lbcl_forms_differ_and_default_is_reference() -> None:
    z, labels = torch.tensor(Z), torch.tensor(LABELS)
    reference = lbcl_loss(z, labels)
    assert reference.item() == pytest.approx(naive_lbcl(Z, LABELS, 0.07, "reference"), rel=1e-5)
    assert not torch.isclose(reference, lbcl_loss(z, labels, form="paper"))


def test_dbcl_matches_naive_loop() -> None:
    for tau in (0.07, 1.0):
        got = dbcl_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(Z_AUG, dtype=torch.float64), tau)
        assert got.item() == pytest.approx(naive_dbcl(Z, Z_AUG, tau), rel=1e-9)


def test_float32_matches_float64() -> None:
    z32, z64 = torch.tensor(Z, dtype=torch.float32), torch.tensor(Z, dtype=torch.float64)
    labels = torch.tensor(LABELS)
    assert lbcl_loss(z32, labels).item() == pytest.approx(lbcl_loss(z64, labels).item(), rel=1e-5)
    assert dbcl_loss(z32, torch.tensor(Z_AUG)).item() == pytest.approx(
        dbcl_loss(z64, torch.tensor(Z_AUG, dtype=torch.float64)).item(), rel=1e-5
    )


def test_half_precision_input_is_computed_in_float32() -> None:
    z = torch.tensor(Z).to(torch.bfloat16)
    loss = lbcl_loss(z, torch.tensor(LABELS))
    assert loss.dtype == torch.float32
    assert dbcl_loss(z, z).dtype == torch.float32


def test_order_invariance() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    z_aug = torch.randn(9, 5, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (9,), generator=gen)
    perm = torch.randperm(9, generator=gen)
    for form in ("reference", "paper"):
        assert lbcl_loss(z[perm], labels[perm], form=form).item() == pytest.approx(
            lbcl_loss(z, labels, form=form).item(), rel=1e-12
        )
    assert dbcl_loss(z[perm], z_aug[perm]).item() == pytest.approx(dbcl_loss(z, z_aug).item(), rel=1e-12)


def test_single_sample_batch() -> None:
    z = torch.tensor([[0.7, -1.2, 3.0]])
    for form in ("reference", "paper"):
        # One sample: softmax over itself is 1, log 1 = 0.
        assert lbcl_loss(z, torch.tensor([2]), form=form).item() == pytest.approx(0.0, abs=1e-6)
    assert dbcl_loss(z, z).item() == pytest.approx(0.0, abs=1e-6)


def test_all_labels_equal_is_finite_and_matches_loop() -> None:
    labels = [1, 1, 1, 1]
    got = lbcl_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(labels))
    assert got.item() == pytest.approx(naive_lbcl(Z, labels, 0.07, "reference"), rel=1e-9)


def test_large_norm_vectors_stay_finite() -> None:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(6, 16, generator=gen) * 1e3  # dot products ~1e7: naive exp overflows
    z_aug = torch.randn(6, 16, generator=gen) * 1e3
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    for loss in (lbcl_loss(z, labels), lbcl_loss(z, labels, form="paper"), dbcl_loss(z, z_aug)):
        assert torch.isfinite(loss)


def test_gradients_flow_and_are_finite() -> None:
    z = torch.tensor(Z, requires_grad=True)
    z_aug = torch.tensor(Z_AUG, requires_grad=True)
    (lbcl_loss(z, torch.tensor(LABELS)) + dbcl_loss(z, z_aug)).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert torch.isfinite(z_aug.grad).all() and z_aug.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: lbcl_loss(torch.zeros(3, 2), torch.tensor([0, 1]), 0.07),
        lambda: lbcl_loss(torch.zeros(3), torch.tensor([0, 1, 2])),
        lambda: lbcl_loss(torch.zeros(2, 2), torch.tensor([0, 1]), temperature=0.0),
        lambda: lbcl_loss(torch.zeros(2, 2), torch.tensor([0, 1]), form="other"),
        lambda: dbcl_loss(torch.zeros(2, 3), torch.zeros(3, 3)),
        lambda: dbcl_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=-1.0),
    ],
)
def test_bad_inputs_raise_value_error(call) -> None:
    with pytest.raises(ValueError):
        call()
