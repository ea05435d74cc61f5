"""The run's data: merged train splits, the held-out selection slice, back-translation views, length buckets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from training_testlib import TINY_MODEL_ARGS, make_mvsa

from clmlf.cli import main
from clmlf.data.batches import LengthBucketedOrder
from clmlf.data.datasets import DataFormatError, Sample
from clmlf.data.train_data import (
    HOLDOUT,
    holdout_split,
    in_holdout,
    oversampled,
    text_key,
    training_data,
    with_translation_views,
)

# The shared data sits beside the repository (../shared), in sessions and in CI alike.
REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clmlf-reference"


@pytest.fixture
def two_sets(tmp_path):
    make_mvsa(tmp_path, n_train=60, n_dev=9, folder="MVSA-single", seed=1)
    make_mvsa(tmp_path, n_train=90, n_dev=12, folder="MVSA-multiple", seed=2)
    return tmp_path


def test_merged_train_splits_keep_both_datasets_apart_by_id(two_sets):
    data = training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.0, seed=0,
                         translation_view=False)
    assert len(data.train) == 150 and len({s.id for s in data.train}) == 150  # ids overlap across sets
    assert {s.id.split("/")[0] for s in data.train} == {"mvsa-single", "mvsa-multiple"}
    assert list(data.reports) == ["mvsa-single/dev", "mvsa-multiple/dev"] and data.selection[0] == "mvsa-single/dev"
    assert sum(data.label_counts) == 150


def test_holdout_is_disjoint_by_text_from_what_the_model_trains_on(two_sets):
    data = training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.2, seed=0,
                         translation_view=True)
    name, held = data.selection
    assert name == HOLDOUT and list(data.reports)[0] == HOLDOUT and held
    trained_texts = {text_key(s.text) for s in data.train} | {text_key(s.translation) for s in data.train}
    assert not {text_key(s.text) for s in held} & {text_key(s.text) for s in data.train}
    assert all(not s.id.endswith("#bt") for s in held)
    # back-translations of held-out posts are not trained on either
    assert not {s.id + "#bt" for s in held} & {s.id for s in data.train}
    assert len(trained_texts) > 0


def test_holdout_is_also_reported_per_source_dataset(two_sets):
    data = training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.3, seed=0,
                         translation_view=False)
    parts = [data.reports[f"{HOLDOUT}/{name}"] for name in ("mvsa-single", "mvsa-multiple")]
    assert sorted(s.id for p in parts for s in p) == sorted(s.id for s in data.reports[HOLDOUT])
    assert all(s.id.startswith("mvsa-single/") for s in parts[0])
    assert data.selection[0] == HOLDOUT  # selection still reads the whole slice


def test_oversample_repeats_one_set_after_the_holdout_draw(two_sets):
    plain = training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.2, seed=0,
                          translation_view=False)
    more = training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.2, seed=0,
                         translation_view=True, oversample={"mvsa-single": 3})
    n_single = sum(s.id.startswith("mvsa-single/") for s in plain.train)
    n_multi = len(plain.train) - n_single
    originals = [s for s in more.train if not s.id.endswith("#bt")]
    assert len(originals) == 3 * n_single + n_multi and len({s.id for s in more.train}) == len(more.train)
    assert [s.id for s in more.reports[HOLDOUT]] == [s.id for s in plain.reports[HOLDOUT]]
    # the training prior counts every repeat (logit adjustment sees what the model sees)
    assert sum(more.label_counts) == 3 * n_single + n_multi
    # copies keep text and label
    first = next(s for s in plain.train if s.id.startswith("mvsa-single/"))
    copies = [s for s in oversampled([first], {"mvsa-single": 3})]
    assert [c.id for c in copies] == [first.id, first.id + "#r1", first.id + "#r2"]
    assert {(c.text, c.label) for c in copies} == {(first.text, first.label)}


def test_oversample_of_a_dataset_outside_the_run_is_refused(two_sets):
    with pytest.raises(ValueError, match="--oversample names hfm"):
        training_data(two_sets, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.0, seed=0,
                      translation_view=False, oversample={"hfm": 2})
    with pytest.raises(ValueError, match="merged datasets"):
        training_data(two_sets, ("mvsa-single",), holdout_fraction=0.0, seed=0,
                      translation_view=False, oversample={"mvsa-single": 2})


def test_holdout_on_the_real_data_is_about_the_fraction_disjoint_and_stable():
    assert REAL_DATA.is_dir(), f"{REAL_DATA}: the shared reference data is missing"
    data = training_data(REAL_DATA, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.1, seed=0,
                         translation_view=True, probe_images=False)
    held = data.selection[1]
    assert 0.08 < len(held) / (len(held) + sum(data.label_counts)) < 0.12
    # MVSA-Multiple holds hundreds of duplicate texts: none straddles the boundary
    assert not {text_key(s.text) for s in held} & {text_key(s.text) for s in data.train}
    again = training_data(REAL_DATA, ("mvsa-single", "mvsa-multiple"), holdout_fraction=0.1, seed=0,
                          translation_view=True, probe_images=False)
    assert [s.id for s in again.selection[1]] == [s.id for s in held]
    assert {s.id.split("/")[0] for s in held} == {"mvsa-single", "mvsa-multiple"}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=30), st.floats(0.0, 0.99, allow_subnormal=False), st.integers(0, 5))
def test_holdout_split_is_a_partition_that_follows_the_text(texts, fraction, seed):
    samples = [Sample(str(i), t, 0, t) for i, t in enumerate(texts)]
    kept, held = holdout_split(samples, fraction, seed)
    assert sorted(s.id for s in kept + held) == sorted(s.id for s in samples)
    assert {text_key(s.text) for s in kept}.isdisjoint({text_key(s.text) for s in held})
    # the draw reads the text only through its key: padding whitespace never moves a post across
    assert all(in_holdout(f"  {s.text}\n", fraction, seed) == in_holdout(s.text, fraction, seed) for s in samples)


def test_translation_views_add_one_sample_per_differing_translation():
    samples = [Sample("a", "good day", 0, "nice day"), Sample("b", "same", 2, "same")]
    views = with_translation_views(samples)
    assert [(s.id, s.text, s.translation, s.label) for s in views] == [
        ("a", "good day", "nice day", 0), ("a#bt", "nice day", "good day", 0), ("b", "same", "same", 2)]


def test_datasets_with_other_labels_cannot_be_merged(tmp_path):
    from training_testlib import make_hfm

    make_mvsa(tmp_path)
    make_hfm(tmp_path)
    with pytest.raises(DataFormatError, match="same labels"):
        training_data(tmp_path, ("mvsa-single", "hfm"), holdout_fraction=0.0, seed=0, translation_view=False)


def test_length_buckets_cover_the_epoch_once_with_similar_lengths():
    lengths = [(i * 37) % 101 for i in range(1000)]
    order = LengthBucketedOrder(lengths, batch_size=16, seed=3, window=10)
    order.set_epoch(2)
    first = order.indices()
    assert sorted(first) == list(range(1000)) and first == order.indices()
    batches = [first[i:i + 16] for i in range(0, 1000, 16)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 20  # a random batch spans ~90 of 0..100
    order.set_epoch(3)
    assert order.indices() != first
    order.set_epoch(2, start=100)
    assert list(order) == first[100:]


def test_default_preset_two_datasets_holdout_translations_top_layers(two_sets, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "default", "--data-root", str(two_sets), "--out", str(out), *TINY_MODEL_ARGS,
            "--batch-size", "16", "--lr", "1e-3", "--epochs", "2", "--stage1-epochs", "1", "--holdout-fraction", "0.2",
            "--text-train-layers", "1", "--no-amp"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in records] == [1, 2]
    assert all(r["selection"] == HOLDOUT and set(r["evaluations"]) == {
        HOLDOUT, f"{HOLDOUT}/mvsa-single", f"{HOLDOUT}/mvsa-multiple", "mvsa-single/dev", "mvsa-multiple/dev"}
        for r in records)
    recall = records[-1]["evaluations"]["mvsa-single/dev"]["recall"]
    assert set(recall) == {"positive", "neutral", "negative"}
    meta = json.loads((out / "best" / "config.json").read_text())
    assert meta["extra"]["selection"] == HOLDOUT and "mvsa-multiple/dev" in meta["extra"]["evaluations"]
    shift = json.loads((out / "prior_shift.json").read_text())
    assert shift["chosen_on"] == HOLDOUT and shift["tau"] in [row["tau"] for row in shift["grid"]]
    assert meta["extra"]["prior_shift"]["tau"] == shift["tau"]
    assert meta["model"]["trained_with_images"] is False and meta["fusion"]["dtypes"] == ["float16"]


def test_text_train_layers_leaves_embeddings_and_lower_layers_as_initialised(two_sets, tmp_path):
    import torch

    from clmlf.model.checkpoint import load

    common = ["--preset", "mvsa-single", "--data-root", str(two_sets), *TINY_MODEL_ARGS, "--batch-size", "16",
              "--lr", "1e-3", "--text-lr", "1e-2", "--stage1-epochs", "1", "--no-lbcl", "--no-dbcl"]
    # stage 1 only: the text encoder keeps its initial weights (same seed, same initialisation)
    assert main(["train", *common, "--out", str(tmp_path / "init"), "--epochs", "1"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "top1"), "--epochs", "2", "--text-train-layers", "1"]) == 0
    initial = load(tmp_path / "init" / "last").model.text_encoder.backbone
    trained = load(tmp_path / "top1" / "last").model.text_encoder.backbone
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(),  # noqa: E731
                                                                strict=True))
    assert same(trained.embeddings, initial.embeddings) and same(trained.encoder.layer[0], initial.encoder.layer[0])
    assert not same(trained.encoder.layer[1], initial.encoder.layer[1])


@pytest.mark.parametrize("top", [1, 2, 3])
def test_text_train_layers_up_to_the_layer_count_never_trains_the_embeddings(top):
    from tiny_models import build_tiny_model

    from clmlf.training.stages import unfreeze_text

    model = build_tiny_model(seed=0)
    backbone = model.text_encoder.backbone
    layers = backbone.encoder.layer  # tiny-random-bert: 2 layers; 3 asks for more than exist
    unfreeze_text(model, top)
    trainable = [all(p.requires_grad for p in layer.parameters()) for layer in layers]
    assert trainable == [i >= len(layers) - top for i in range(len(layers))]
    assert not any(p.requires_grad for p in backbone.embeddings.parameters())
    unfreeze_text(model, None)  # no limit: the whole encoder, embeddings included
    assert all(p.requires_grad for p in backbone.parameters())


def test_linear_schedule_is_constant_in_stage_1_then_warms_up_and_decays_to_zero(tmp_path):
    from clmlf.training.config import TrainConfig
    from clmlf.training.stages import stage_learning_rate_factor

    cfg = TrainConfig(preset="mvsa-single", data_root=tmp_path, out=tmp_path, epochs=3, stage1_epochs=1,
                      lr_schedule="linear", warmup_fraction=0.1)
    per_epoch = 10  # stage 2 = steps 10..29, warm-up 2 steps
    factors = [stage_learning_rate_factor(cfg, step, per_epoch) for step in range(30)]
    assert factors[:10] == [1.0] * 10
    assert factors[10:12] == [0.5, 1.0] and factors[-1] == pytest.approx(1 / 18)
    assert all(a >= b for a, b in zip(factors[11:], factors[12:], strict=False))
    constant = TrainConfig(preset="mvsa-single", data_root=tmp_path, out=tmp_path, epochs=3, stage1_epochs=1)
    assert {stage_learning_rate_factor(constant, step, per_epoch) for step in range(30)} == {1.0}


def test_resume_with_the_linear_schedule_matches_the_straight_run(two_sets, tmp_path):
    common = ["train", "--preset", "mvsa-single", "--data-root", str(two_sets), *TINY_MODEL_ARGS, "--batch-size", "8",
              "--lr", "1e-3", "--epochs", "3", "--stage1-epochs", "1", "--lr-schedule", "linear", "--no-lbcl"]
    assert main([*common, "--out", str(tmp_path / "straight")]) == 0
    assert main([*common, "--out", str(tmp_path / "crashed"), "--max-steps", "11"]) == 0  # inside stage 2
    assert main([*common, "--out", str(tmp_path / "crashed"), "--resume"]) == 0
    read = lambda run: [{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "epoch_seconds")}  # noqa: E731
                        for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert read(tmp_path / "straight") == read(tmp_path / "crashed")
