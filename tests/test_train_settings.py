"""``clmlf train`` on the settings layer: flag > environment > preset > default, one-line errors naming the flag."""

from __future__ import annotations

import os

import pytest

from clmlf.cli import build_parser, main
from clmlf.process_settings import settings_from_args
from clmlf.training.config import TrainConfig

FLAG_ONLY = {"--preset", "--out", "--log-level", "-h"}
SHARED_VARIABLES = {"--data-root": "CLMLF_DATA_ROOT", "--device": "CLMLF_DEVICE"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CLMLF_TRAIN_") or name in ("CLMLF_DATA_ROOT", "CLMLF_DEVICE"):
            monkeypatch.delenv(name)


def _train_parser():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return parser, subparsers.choices["train"]


def _config(*flags: str) -> TrainConfig:
    parser, _ = _train_parser()
    args = parser.parse_args(["train", "--preset", "mvsa-single", "--out", "runs/x", *flags])
    return settings_from_args(parser, TrainConfig, args)


def test_every_flag_has_the_variable_its_name_says():
    _, train = _train_parser()
    fields = TrainConfig.model_fields
    seen = set()
    for action in train._actions:
        flag = action.option_strings[0] if action.option_strings else None
        if flag is None or flag in FLAG_ONLY:  # -h: --help
            continue
        assert action.dest in fields, f"{flag} sets {action.dest}, not a TrainConfig field"
        expected = SHARED_VARIABLES.get(flag) or "CLMLF_TRAIN_" + flag.removeprefix("--").removeprefix(
            "no-").upper().replace("-", "_")
        assert fields[action.dest].alias == expected, flag
        seen.add(action.dest)
    # No variable without a flag: a field with an alias is settable from the command line too.
    assert {name for name, field in fields.items() if field.alias} == seen
    assert fields["preset"].alias is None and fields["out"].alias is None


def test_environment_sets_a_field(monkeypatch, tmp_path):
    monkeypatch.setenv("CLMLF_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("CLMLF_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("CLMLF_TRAIN_TEXT_CACHE", "false")
    monkeypatch.setenv("CLMLF_TRAIN_IMAGES", "0")
    monkeypatch.setenv("CLMLF_TRAIN_OVERSAMPLE", "MVSA-single=2, MVSA-multiple=3")
    monkeypatch.setenv("CLMLF_DEVICE", "cpu")
    config = _config()
    assert config.data_root == tmp_path and config.epochs == 3 and config.device == "cpu"
    assert config.cache_text is False and config.use_images is False
    assert config.oversample == {"MVSA-single": 2, "MVSA-multiple": 3}


def test_flag_beats_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CLMLF_TRAIN_EPOCHS", "3")
    monkeypatch.setenv("CLMLF_TRAIN_PROGRESS", "true")
    monkeypatch.setenv("CLMLF_TRAIN_OVERSAMPLE", "MVSA-single=2")
    monkeypatch.setenv("CLMLF_DEVICE", "cuda")
    monkeypatch.setenv("CLMLF_DATA_ROOT", "/from/env")
    config = _config("--epochs", "5", "--no-progress", "--oversample", "MVSA-single=4", "--device", "cpu",
                     "--data-root", str(tmp_path))
    assert (config.epochs, config.progress, config.device, config.data_root) == (5, False, "cpu", tmp_path)
    assert config.oversample == {"MVSA-single": 4}


def test_environment_beats_the_preset_which_fills_the_rest(monkeypatch, tmp_path):
    monkeypatch.setenv("CLMLF_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("CLMLF_TRAIN_BATCH_SIZE", "4")
    monkeypatch.setenv("CLMLF_TRAIN_LBCL", "true")
    default = _config()
    assert (default.batch_size, default.lbcl, default.temperature, default.stage1_epochs) == (4, True, 0.07, 20)
    # Nothing given: the preset's values, and the field defaults where the preset has none.
    monkeypatch.delenv("CLMLF_TRAIN_BATCH_SIZE")
    monkeypatch.delenv("CLMLF_TRAIN_LBCL")
    plain = _config()
    assert (plain.batch_size, plain.lbcl, plain.seed, plain.workers, plain.cache_text) == (32, True, 0, 0, True)
    assert _config("--no-lbcl").lbcl is False


def test_pooling_comes_from_the_preset_the_environment_or_the_flag_and_reaches_the_model(monkeypatch, tmp_path):
    from clmlf.training.presets import get_preset
    from clmlf.training.trainer import build_model_config

    monkeypatch.setenv("CLMLF_DATA_ROOT", str(tmp_path))
    assert _config().pooling == get_preset("mvsa-single").pooling == "attention"
    monkeypatch.setenv("CLMLF_TRAIN_POOLING", "text")
    assert _config().pooling == "text"
    cfg = _config("--pooling", "cls")
    assert cfg.pooling == "cls" and build_model_config(cfg, ("a", "b", "c")).pooling == "cls"


def test_image_size_comes_from_the_preset_or_the_flag_and_sets_the_model_input(monkeypatch, tmp_path):
    from clmlf.training.presets import get_preset
    from clmlf.training.trainer import build_model_config

    monkeypatch.setenv("CLMLF_DATA_ROOT", str(tmp_path))
    assert _config().image_size == get_preset("mvsa-single").image_size == 224
    parser, _ = _train_parser()
    probe = settings_from_args(parser, TrainConfig, parser.parse_args(["train", "--preset", "probe", "--out", "r"]))
    assert probe.image_size == get_preset("probe").image_size > 224
    model = build_model_config(probe, ("a", "b", "c"))
    assert model.image_size == probe.image_size and model.resize >= model.image_size
    cfg = _config("--image-size", "256")
    assert cfg.image_size == 256 and build_model_config(cfg, ("a", "b", "c")).image_size == 256


@pytest.mark.parametrize(
    ("variable", "value", "flag"),
    [
        ("CLMLF_TRAIN_EPOCHS", "abc", "--epochs"),
        ("CLMLF_TRAIN_EPOCHS", "0", "--epochs"),
        ("CLMLF_TRAIN_LBCL_FORM", "bogus", "--lbcl-form"),
        ("CLMLF_TRAIN_OVERSAMPLE", "MVSA-single", "--oversample"),
        ("CLMLF_TRAIN_TEXT_CACHE", "maybe", "--no-text-cache"),
        ("CLMLF_TRAIN_WORKERS", "-1", "--workers"),
        ("CLMLF_DEVICE", "tpu", "--device"),
    ],
)
def test_bad_environment_value_exits_2_with_one_line_naming_the_flag(monkeypatch, capsys, tmp_path, variable,
                                                                    value, flag):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "mvsa-single", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"clmlf: error: {flag}: "), err
    assert not (tmp_path / "o").exists()


def test_bad_flag_value_names_the_flag(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "mvsa-single", "--data-root", str(tmp_path), "--out", str(tmp_path / "o"),
              "--holdout-fraction", "1.5"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("clmlf: error: --holdout-fraction: ")


def test_data_root_is_required_from_the_flag_or_the_environment(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--preset", "mvsa-single", "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "clmlf: error: --data-root is required (or set CLMLF_DATA_ROOT)\n"
