"""Weight averaging ("model soup") of fine-tuned runs that share their initialisation, chosen on held-out data.

Runs of one recipe that differ only in ``--order-seed`` start from the same weights (same ``--seed``)
and stay in one basin, so the element-wise mean of their weights is a model of the same size and cost
as each of them. The greedy recipe (Wortsman et al., 2022): rank the runs by their score on the
held-out slice, then add each in turn to the average and keep it only if the held-out score does not
drop. The held-out slice is the one every run left out of training (same ``--seed``, fraction and
datasets, checked), so the choice never touches a dev split.

    from clmlf.training.soup import average_states, greedy_soup
    chosen, table = greedy_soup(scores, lambda members: score(average_states([states[i] for i in members])))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

# Training settings every ingredient must share: they fix the initialisation, the held-out slice and
# the network (the order seed, learning rates and epochs may differ).
SHARED_SETTINGS = ("preset", "seed", "holdout_fraction", "text_encoder", "image_encoder", "limit_train")


class SoupError(ValueError):
    """Ingredients that cannot be averaged (one line, for the command's error message)."""


def average_states(states: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """The element-wise mean of floating tensors that differ between ``states``.

    Tensors equal in every state are copied from the first unchanged (so frozen encoder weights stay
    bit-identical to the package weights and a partial checkpoint stays partial); non-floating tensors
    (buffers such as position ids) must be equal everywhere.
    """
    if not states:
        raise SoupError("no ingredients to average")
    first = states[0]
    keys = set(first)
    for index, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            diff = sorted(keys.symmetric_difference(state))
            raise SoupError(f"ingredient {index + 1} has other tensors than the first ({diff[0]!r:.80})")
    out: dict[str, Tensor] = {}
    for key, value in first.items():
        others = [state[key] for state in states[1:]]
        if any(other.shape != value.shape for other in others):
            raise SoupError(f"tensor {key!r:.80} differs in shape between ingredients")
        if all(torch.equal(value, other) for other in others):
            out[key] = value.clone()
        elif not value.is_floating_point():
            raise SoupError(f"non-floating tensor {key!r:.80} differs between ingredients")
        else:
            total = value.detach().to(torch.float64).clone()
            for other in others:
                total += other.detach().to(torch.float64)
            out[key] = (total / len(states)).to(value.dtype)
    return out


def check_shared_training(configs: Sequence[Mapping[str, Any] | None], names: Sequence[str]) -> dict[str, Any]:
    """The first ingredient's training settings, after checking every ingredient shares :data:`SHARED_SETTINGS`."""
    if any(config is None for config in configs):
        missing = names[[config is None for config in configs].index(True)]
        raise SoupError(f"{missing}: its config.json records no train_config (not written by clmlf train)")
    first = configs[0]
    assert first is not None
    if not first.get("holdout_fraction"):
        raise SoupError(f"{names[0]}: trained without a held-out slice (--holdout-fraction 0): nothing to select on")
    for name, config in zip(names[1:], configs[1:], strict=True):
        assert config is not None
        for key in SHARED_SETTINGS:
            if config.get(key) != first.get(key):
                raise SoupError(f"{name}: {key} is {config.get(key)!r} but {first.get(key)!r} in {names[0]}; "
                                "a soup needs runs of one initialisation and held-out slice (vary --order-seed)")
    return dict(first)


def greedy_soup(scores: Sequence[float], score_members: Callable[[list[int]], float]
                ) -> tuple[list[int], list[dict[str, Any]]]:
    """``(chosen ingredient indices, table)``: greedy soup over ingredients with held-out ``scores``.

    ``score_members(indices)`` scores the average of those ingredients. The best single ingredient
    starts the soup; each next-best joins when the soup's score does not drop. ``table`` has one row
    per step: ``{"members", "score", "kept"}``.
    """
    if not scores:
        raise SoupError("no ingredients to average")
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    chosen = [ranked[0]]
    best = scores[ranked[0]]
    table: list[dict[str, Any]] = [{"members": list(chosen), "score": best, "kept": True}]
    for candidate in ranked[1:]:
        trial = [*chosen, candidate]
        score = score_members(trial)
        kept = score >= best
        table.append({"members": trial, "score": score, "kept": kept})
        if kept:
            chosen, best = trial, score
    return chosen, table
