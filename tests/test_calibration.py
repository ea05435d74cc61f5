"""Post-hoc logit adjustment: the chosen tau, folding it into the classifier, the guard on accuracy."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clmlf.evaluation.calibration import choose_prior_shift, fold_prior_shift, log_prior, shifted_predictions

LABELS = ("positive", "neutral", "negative")


def _skewed(n: int = 300, seed: int = 0) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    """Logits of a model that under-predicts the rare middle class by a constant margin."""
    g = torch.Generator().manual_seed(seed)
    gold = torch.tensor([0] * (n // 2) + [1] * (n // 5) + [2] * (n - n // 2 - n // 5))
    logits = torch.randn(n, 3, generator=g) * 0.5
    logits[torch.arange(n), gold] += 1.0
    logits[:, 1] -= 1.2  # the model's bias against neutral
    prior = log_prior([n // 2, n // 5, n - n // 2 - n // 5])
    return logits, gold.tolist(), prior


def test_a_shift_is_chosen_when_it_improves_the_metric_and_recovers_the_rare_class():
    logits, gold, prior = _skewed()
    shift = choose_prior_shift(logits, gold, prior, LABELS, "f1_macro")
    assert shift.tau > 0 and [row["tau"] for row in shift.table] == [0.0, 0.25, 0.5, 0.75, 1.0]
    plain = next(row for row in shift.table if row["tau"] == 0.0)
    assert shift.metrics["f1_macro"] > plain["f1_macro"]
    assert shift.metrics["per_class"]["neutral"]["recall"] > 0.3


def test_no_shift_when_the_model_is_already_balanced():
    g = torch.Generator().manual_seed(1)
    gold = torch.randint(0, 3, (200,), generator=g)
    logits = torch.randn(200, 3, generator=g) * 0.1
    logits[torch.arange(200), gold] += 5.0  # always right: every tau ties, the smallest wins
    shift = choose_prior_shift(logits, gold.tolist(), log_prior([100, 20, 80]), LABELS, "f1_weighted")
    assert shift.tau == 0.0 and shift.metrics["accuracy"] == 1.0


def test_a_shift_that_costs_accuracy_is_refused():
    logits, gold, prior = _skewed()
    free = choose_prior_shift(logits, gold, prior, LABELS, "f1_macro", max_accuracy_drop=1.0)
    guarded = choose_prior_shift(logits, gold, prior, LABELS, "f1_macro", max_accuracy_drop=-1.0)
    assert guarded.tau == 0.0  # no tau reaches tau 0's accuracy + 1: only tau 0 itself is left
    assert free.metrics["f1_macro"] >= guarded.metrics["f1_macro"]


def test_folding_into_the_bias_gives_exactly_the_shifted_predictions():
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Linear(8, 4), nn.GELU(), nn.Linear(4, 3))
    x = torch.randn(64, 8)
    prior = log_prior([60, 10, 30])
    before = classifier(x).detach()
    fold_prior_shift(classifier, prior, 0.75)
    after = classifier(x).detach()
    torch.testing.assert_close(after, before - 0.75 * prior)
    assert after.argmax(-1).tolist() == shifted_predictions(before, prior, 0.75)
    with pytest.raises(TypeError):
        fold_prior_shift(nn.Sequential(nn.Linear(3, 3, bias=False)), prior, 0.5)
