"""clmlf soup: weight averaging against hand-computed values, the greedy rule, and the command on tiny runs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from training_testlib import TINY_MODEL_ARGS, make_mvsa

from clmlf.cli import main
from clmlf.model.checkpoint import load
from clmlf.training.soup import SoupError, average_states, check_shared_training, greedy_soup

torch.set_num_threads(1)


def test_average_states_against_hand_computed_values():
    a = {"w": torch.tensor([1.0, 2.0]), "frozen": torch.tensor([0.1, 0.7]), "ids": torch.tensor([0, 1, 2])}
    b = {"w": torch.tensor([3.0, 6.0]), "frozen": torch.tensor([0.1, 0.7]), "ids": torch.tensor([0, 1, 2])}
    c = {"w": torch.tensor([2.0, -2.0]), "frozen": torch.tensor([0.1, 0.7]), "ids": torch.tensor([0, 1, 2])}
    out = average_states([a, b, c])
    assert torch.equal(out["w"], torch.tensor([2.0, 2.0]))
    # Equal everywhere: copied, not recomputed, so (x + x + x) / 3 rounding cannot make it "changed".
    assert torch.equal(out["frozen"], a["frozen"]) and out["frozen"].data_ptr() != a["frozen"].data_ptr()
    assert torch.equal(out["ids"], a["ids"])
    half = average_states([{"h": torch.tensor([1.0], dtype=torch.float16)}, {"h": torch.tensor([2.0], dtype=torch.float16)}])
    assert half["h"].dtype == torch.float16 and half["h"].item() == 1.5


@pytest.mark.parametrize("states, needle", [
    ([{"w": torch.ones(2)}, {"v": torch.ones(2)}], "other tensors"),
    ([{"w": torch.ones(2)}, {"w": torch.ones(3)}], "differs in shape"),
    ([{"ids": torch.tensor([0, 1])}, {"ids": torch.tensor([0, 2])}], "non-floating"),
    ([], "no ingredients"),
])
def test_average_states_refuses_what_cannot_be_averaged(states, needle):
    with pytest.raises(SoupError, match=needle):
        average_states(states)


def test_greedy_soup_starts_from_the_best_and_keeps_only_what_does_not_hurt():
    scores = [0.60, 0.70, 0.65, 0.50]
    soup_scores = {(1, 2): 0.72, (1, 2, 0): 0.71, (1, 2, 3): 0.72}
    chosen, table = greedy_soup(scores, lambda members: soup_scores[tuple(members)])
    assert chosen == [1, 2, 3]  # 0 lowered the score (dropped); 3 kept it equal (kept)
    assert [(row["members"], row["kept"]) for row in table] == [
        ([1], True), ([1, 2], True), ([1, 2, 0], False), ([1, 2, 3], True)]
    assert greedy_soup([0.5], lambda m: 1 / 0) == ([0], [{"members": [0], "score": 0.5, "kept": True}])


def test_shared_training_settings_are_checked():
    base = {"preset": "default", "seed": 0, "holdout_fraction": 0.1, "text_encoder": "minilm",
            "image_encoder": "efficientnet_lite0", "limit_train": None, "order_seed": 1}
    assert check_shared_training([base, {**base, "order_seed": 2, "text_lr": 1e-5}], ["a", "b"])["order_seed"] == 1
    with pytest.raises(SoupError, match="b: seed is 3 but 0 in a"):
        check_shared_training([base, {**base, "seed": 3}], ["a", "b"])
    with pytest.raises(SoupError, match="nothing to select on"):
        check_shared_training([{**base, "holdout_fraction": 0.0}, base], ["a", "b"])
    with pytest.raises(SoupError, match="b: its config.json records no train_config"):
        check_shared_training([base, None], ["a", "b"])


def _train(data, out, *extra: str) -> int:
    return main(["train", "--preset", "mvsa-single", "--data-root", str(data), "--out", str(out), *TINY_MODEL_ARGS,
                 "--batch-size", "8", "--lr", "1e-3", "--epochs", "2", "--stage1-epochs", "1", "--no-dbcl",
                 "--no-lbcl", "--holdout-fraction", "0.25", "--no-images", *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    data = make_mvsa(root / "data", n_train=48, n_dev=9, with_images=0)
    for name, extra in (("o1", ["--order-seed", "1"]), ("o2", ["--order-seed", "2"]), ("o0", ["--order-seed", "0"]),
                        ("plain", []), ("s3", ["--seed", "3"])):
        assert _train(data, root / name, *extra) == 0
    return root, data


def _evaluations(run):
    return json.loads((run / "last" / "config.json").read_text())["extra"]["evaluations"]


def test_order_seed_changes_the_run_but_not_the_held_out_slice(runs):
    root, _ = runs
    a, b = load_file(str(root / "o1" / "last" / "model.safetensors")), load_file(str(root / "o2" / "last" / "model.safetensors"))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert _evaluations(root / "o1")["holdout"]["n"] == _evaluations(root / "o2")["holdout"]["n"] > 0
    # --order-seed equal to --seed is the plain run, bit for bit.
    same, plain = (load_file(str(root / n / "last" / "model.safetensors")) for n in ("o0", "plain"))
    assert all(torch.equal(same[k], plain[k]) for k in same)


def test_uniform_soup_is_the_mean_and_scores_as_evaluate_does(runs, capsys):
    root, data = runs
    out = root / "uniform"
    capsys.readouterr()
    assert main(["soup", str(root / "o1" / "last"), str(root / "o2" / "last"), "--out", str(out), "--uniform",
                 "--json", "--no-progress", "--threads", "1", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["members"]) == 2
    assert {"holdout", "mvsa-single/dev"} <= result["evaluations"].keys()
    soup, a, b = (load(p).model.state_dict() for p in (out, root / "o1" / "last", root / "o2" / "last"))
    for key in soup:
        if soup[key].is_floating_point():
            assert torch.allclose(soup[key], (a[key] + b[key]) / 2, atol=1e-6), key
    meta = json.loads((out / "config.json").read_text())
    assert meta["extra"]["soup"]["members"] == [str(root / "o1" / "last"), str(root / "o2" / "last")]
    assert main(["evaluate", "--checkpoint", str(out), "--data-root", str(data), "--dataset", "mvsa-single",
                 "--split", "dev", "--json", "--no-progress"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(result["evaluations"]["mvsa-single/dev"]["accuracy"])


def test_greedy_soup_never_scores_below_its_best_ingredient(runs, capsys):
    root, _ = runs
    capsys.readouterr()
    assert main(["soup", str(root / "o1"), str(root / "o2"), str(root / "plain"), "--out", str(root / "greedy"),
                 "--json", "--no-progress", "--threads", "1", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    metric = result["metric"]
    assert result["evaluations"]["holdout"][metric] >= max(result["ingredient_scores"].values()) - 1e-9
    assert result["table"][0]["kept"] and len(result["table"]) == 3
    # The recorded recipe is that of the member the soup started from (the best on the held-out slice).
    meta = json.loads((root / "greedy" / "config.json").read_text())["extra"]
    lead = json.loads((root / result["members"][0] / "config.json").read_text())["extra"]["train_config"]
    assert meta["train_config"] == lead


def test_runs_of_another_seed_are_refused_in_one_line(runs, capsys):
    root, _ = runs
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["soup", str(root / "o1"), str(root / "s3"), "--out", str(root / "bad"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed is 3 but 0" in err[0] and "--order-seed" in err[0]
    assert not (root / "bad").exists()
