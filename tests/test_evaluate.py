"""Metrics and ``clmlf evaluate``: JSON schema of the last line, readable report, bad inputs."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from training_testlib import make_hfm, make_mvsa

from clmlf.cli import main
from clmlf.evaluation.metrics import classification_metrics, format_report

torch.set_num_threads(1)

LABELS = ("positive", "neutral", "negative")

EVALUATE_SCHEMA = {
    "type": "object",
    "required": ["accuracy", "f1_weighted", "f1_macro", "n", "per_class", "confusion"],
    "additionalProperties": False,  # exactly these six keys (CONTRACT)
    "properties": {
        "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
        "f1_weighted": {"type": "number", "minimum": 0, "maximum": 1},
        "f1_macro": {"type": "number", "minimum": 0, "maximum": 1},
        "n": {"type": "integer", "minimum": 0},
        "per_class": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["precision", "recall", "f1", "support"],
                "properties": {"support": {"type": "integer"}},
            },
        },
        "confusion": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
    },
}


def test_metrics_against_hand_computed_values():
    gold = [0, 0, 0, 1, 2, 2]
    pred = [0, 0, 1, 1, 2, 0]
    m = classification_metrics(gold, pred, LABELS)
    # positive: P 2/3, R 2/3, F1 2/3; neutral: P 1/2, R 1, F1 2/3; negative: P 1, R 1/2, F1 2/3
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["neutral"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["f1_macro"] == pytest.approx(2 / 3) and m["f1_weighted"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]
    jsonschema.validate(m, EVALUATE_SCHEMA)


def test_metrics_weighting_differs_from_macro_and_absent_classes_are_zero():
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0], LABELS)
    assert m["per_class"]["negative"]["support"] == 0 and m["per_class"]["neutral"]["f1"] == 0
    assert m["f1_weighted"] == pytest.approx(0.75 * (2 * 0.75 / 1.75))
    assert m["f1_macro"] == pytest.approx((2 * 0.75 / 1.75) / 3)
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0], [0, 1], LABELS)
    assert classification_metrics([], [], LABELS)["n"] == 0


def test_report_is_readable():
    report = format_report(classification_metrics([0, 1, 2], [0, 1, 1], LABELS), LABELS, "title line")
    lines = report.splitlines()
    assert lines[0] == "title line" and "accuracy=0.6667" in lines[1]
    assert any(line.startswith("negative") for line in lines) and "confusion" in report


@pytest.fixture
def data(tmp_path):
    make_mvsa(tmp_path / "data", n_train=6, n_dev=9, with_images=3)
    make_hfm(tmp_path / "data")
    return tmp_path / "data"


def _evaluate(checkpoint, data, *extra):
    return main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data), "--dataset", "mvsa-single",
                 "--no-progress", *extra])


def test_evaluate_json_last_line_matches_the_schema(tiny_checkpoint, data, capsys):
    assert _evaluate(tiny_checkpoint, data, "--split", "dev", "--json") == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    jsonschema.validate(result, EVALUATE_SCHEMA)
    assert result["n"] == 9 and set(result["per_class"]) == set(LABELS)
    assert sum(map(sum, result["confusion"])) == 9


def test_evaluate_text_report_and_attached_photos(tiny_checkpoint, data, capsys):
    assert _evaluate(tiny_checkpoint, data, "--split", "test") == 0
    out = capsys.readouterr().out
    assert "on mvsa-single/test" in out and "weighted F1=" in out and "confusion" in out
    assert _evaluate(tiny_checkpoint, data, "--attach-photos", "--json") == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 9


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--dataset", "hfm"], "hfm has 2 classes but the checkpoint has 3"),
        (["--split", "nope"], "invalid choice"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_evaluate_bad_inputs_exit_2(tiny_checkpoint, data, capsys, extra, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data-root", str(data), "--dataset", "mvsa-single",
              *extra])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err.strip().splitlines()[-1]


def test_evaluate_missing_checkpoint_and_data_exit_2(tmp_path, data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _evaluate(tmp_path / "nothing", data)
    assert exit_info.value.code == 2 and "checkpoint directory not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data-root", str(tmp_path / "empty"), "--dataset", "mvsa-multiple", "--checkpoint",
              str(tmp_path)])
    assert exit_info.value.code == 2


def test_evaluate_reports_posts_without_a_usable_image_once(tiny_checkpoint, data, capsys):
    (data / "MVSA-single" / "dataset_image" / "1001.jpg").write_bytes(b"not a jpeg")  # dev ids start at 1000
    assert _evaluate(tiny_checkpoint, data, "--split", "dev", "--json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1])["n"] == 9
    summary = [line for line in captured.err.splitlines() if "mvsa-single/dev: 9 samples" in line]
    assert len(summary) == 1 and "2 with an image (6 missing, 1 unreadable -> text only)" in summary[0]


def test_evaluate_without_checkpoint_scores_the_embedded_default_model(data, capsys, monkeypatch):
    monkeypatch.delenv("CLMLF_CHECKPOINT", raising=False)
    assert main(["evaluate", "--data-root", str(data), "--dataset", "mvsa-single", "--split", "dev", "--no-progress",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("default@") and "on mvsa-single/dev" in out and "n=9" in out


def test_dataset_predictions_run_by_token_count_and_come_back_in_dataset_order() -> None:
    from tiny_models import build_tiny_model

    from clmlf.data.batches import BatchCollator, PostDataset
    from clmlf.data.datasets import Sample
    from clmlf.evaluation.predictions import by_token_count, predict_dataset
    from clmlf.model.preprocess import Preprocessor

    model = build_tiny_model(trained_with_images=False)
    pre = Preprocessor(model.config, model.text_encoder.tokenizer)
    texts = ["http://t.co/Xy7Qa1zP #deal", "ok", "a rather long sentence of plain words here", "#tbt", "meh", "yes!"]
    samples = [Sample(str(i), text, i % 3, text, None) for i, text in enumerate(texts)]
    dataset, collator = PostDataset(samples, pre, use_images=False), BatchCollator(pre)
    lengths = [len(t) for t in pre.encode(texts)]
    order = by_token_count(dataset, collator)
    assert sorted(order) == list(range(len(texts)))
    assert [lengths[i] for i in order] == sorted(lengths)
    logits, _, labels = predict_dataset(model, dataset, collator, 2, torch.device("cpu"))
    assert labels.tolist() == [i % 3 for i in range(len(texts))]  # dataset order
    for i, text in enumerate(texts):
        alone, _, _ = predict_dataset(model, PostDataset([samples[i]], pre, use_images=False), collator, 1,
                                      torch.device("cpu"))
        assert torch.allclose(logits[i], alone[0], atol=1e-5), text
    assert by_token_count(list(range(3)), collator) == [0, 1, 2]  # nothing to sort by: dataset order
