"""LBCL / DBCL against hand-computed values (naive loops), stability and order invariance."""

from __future__ import annotations

import math

import pytest
import torch

from clmlf.model.losses import dbcl_loss, lbcl_loss, logit_adjusted_cross_entropy


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


def naive_normalized_lbcl(z: list[list[float]], labels: list[int], tau: float) -> float:
    """The normalized form by hand: cosine / tau, anchor excluded, mean over each anchor's positives,
    every class present among the anchors weighted equally."""
    n = len(z)
    unit = [[v / math.sqrt(sum(x * x for x in row)) for v in row] for row in z]
    per_class: dict[int, list[float]] = {}
    for i in range(n):
        others = [j for j in range(n) if j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        sims = {j: sum(a * b for a, b in zip(unit[i], unit[j], strict=True)) / tau for j in others}
        log_norm = math.log(sum(math.exp(v) for v in sims.values()))
        per_class.setdefault(labels[i], []).append(-sum(sims[j] - log_norm for j in positives) / len(positives))
    return sum(sum(v) / len(v) for v in per_class.values()) / len(per_class)


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
@pytest.mark.parametrize("labels", [LABELS, [0, 0, 0, 1], [1, 1, 2, 2], [0, 0, 0, 0]])
def test_normalized_lbcl_matches_naive_loop(tau: float, labels: list[int]) -> None:
    got = lbcl_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(labels), tau, "normalized")
    assert got.item() == pytest.approx(naive_normalized_lbcl(Z, labels, tau), rel=1e-9)


def test_normalized_lbcl_weights_classes_equally_not_by_pair_count() -> None:
    # Class 0 has 4 members (12 ordered pairs), class 1 two (2 pairs): the balanced loss averages per class,
    # so scaling class 0's anchors' losses cannot drown class 1 the way n_c^2 pair weighting does.
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    labels = [0, 0, 0, 0, 1, 1]
    got = lbcl_loss(z, torch.tensor(labels), 0.1, "normalized").item()
    assert got == pytest.approx(naive_normalized_lbcl(z.tolist(), labels, 0.1), rel=1e-9)


def test_normalized_lbcl_without_any_positive_pair_is_zero_with_a_gradient() -> None:
    z = torch.tensor(Z, requires_grad=True)
    loss = lbcl_loss(z, torch.tensor([0, 1, 2, 3]), 0.1, "normalized")
    loss.backward()
    assert loss.item() == 0.0 and z.grad is not None and torch.all(z.grad == 0)
    one = lbcl_loss(torch.tensor([[1.0, 2.0]]), torch.tensor([0]), 0.1, "normalized")
    assert one.item() == 0.0


def test_normalized_forms_are_scale_invariant_and_bounded() -> None:
    z, z_aug, labels = torch.tensor(Z), torch.tensor(Z_AUG), torch.tensor(LABELS)
    for scale in (1e-3, 1e3):
        assert lbcl_loss(z * scale, labels, 0.1, "normalized").item() == pytest.approx(
            lbcl_loss(z, labels, 0.1, "normalized").item(), rel=1e-5)
        assert dbcl_loss(z * scale, z_aug, 0.1, "normalized").item() == pytest.approx(
            dbcl_loss(z, z_aug, 0.1, "normalized").item(), rel=1e-5)
    # Cosine logits lie in [-1/tau, 1/tau], so the loss cannot exceed log(B) + 2/tau.
    assert dbcl_loss(z * 1e3, -z_aug * 1e3, 0.1, "normalized").item() <= math.log(4) + 2 / 0.1


def test_normalized_dbcl_matches_naive_loop_on_unit_vectors() -> None:
    unit = lambda rows: [[v / math.sqrt(sum(x * x for x in r)) for v in r] for r in rows]  # noqa: E731
    got = dbcl_loss(torch.tensor(Z, dtype=torch.float64), torch.tensor(Z_AUG, dtype=torch.float64), 0.2, "normalized")
    assert got.item() == pytest.approx(naive_dbcl(unit(Z), unit(Z_AUG), 0.2), rel=1e-9)


def test_logit_adjusted_cross_entropy_shifts_by_the_log_prior() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
    labels = torch.tensor([1, 2])
    prior = torch.tensor([0.6, 0.1, 0.3])
    expected = sum(
        -(row[y] + math.log(prior[y])) + math.log(sum(math.exp(v + math.log(p)) for v, p in zip(row, prior, strict=True)))
        for row, y in zip(logits.tolist(), labels.tolist(), strict=True)
    ) / 2
    got = logit_adjusted_cross_entropy(logits, labels, prior.log(), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert logit_adjusted_cross_entropy(logits, labels, prior.log(), 0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item())
    assert logit_adjusted_cross_entropy(logits, labels, None).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item())


def test_unknown_forms_raise() -> None:
    with pytest.raises(ValueError, match="normalized"):
        lbcl_loss(torch.tensor(Z), torch.tensor(LABELS), 0.1, "cosine")
    with pytest.raises(ValueError, match="normalized"):
        dbcl_loss(torch.tensor(Z), torch.tensor(Z_AUG), 0.1, "paper")
