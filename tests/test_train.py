"""clmlf train: round trip with evaluate, exact resume, determinism, bad inputs (tiny models, fixture data)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from training_testlib import TINY_MODEL_ARGS, make_mvsa, make_tombert

from clmlf.cli import main
from clmlf.model.checkpoint import load
from clmlf.training.config import TrainConfig
from clmlf.training.presets import PRESETS, get_preset

torch.set_num_threads(1)

EPOCH_KEYS = {"epoch", "step", "stage", "train_loss", "train_ce", "train_accuracy", "dev_accuracy",
              "dev_f1_weighted", "dev_f1_macro", "samples_per_s", "best"}


def _train(tmp_path, out, *extra: str) -> int:
    return main(["train", "--preset", "mvsa-single", "--data-root", str(tmp_path / "data"), "--out", str(out),
                 *TINY_MODEL_ARGS, "--batch-size", "8", "--lr", "1e-3", *extra])


def _metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


@pytest.fixture
def data(tmp_path):
    make_mvsa(tmp_path / "data", n_train=24, n_dev=9, with_images=6)
    return tmp_path / "data"


def test_round_trip_train_then_evaluate(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert _train(tmp_path, out, "--epochs", "2", "--stage1-epochs", "1", "--distractor-rate", "0.5") == 0
    records = _metrics(out)
    assert [r["epoch"] for r in records] == [1, 2] and [r["stage"] for r in records] == [1, 2]
    assert all(EPOCH_KEYS <= r.keys() and "train_lbcl" in r and "train_dbcl" in r for r in records)
    assert records[-1]["step"] == 2 * 3  # 24 samples / batch 8, two epochs
    assert 0 < records[0]["train_distractor_share"] < 1
    best_epoch = max(records, key=lambda r: r["dev_f1_weighted"])["epoch"]
    for folder in ("best", "last"):
        loaded = load(out / folder)
        assert loaded.config.labels == ("positive", "neutral", "negative") and loaded.config.fusion_dim == 32
    assert json.loads((out / "best" / "config.json").read_text())["extra"]["epoch"] == best_epoch
    assert (out / "resume" / "state.json").is_file() and (out / "train_config.json").is_file()

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "best"), "--data-root", str(data), "--dataset", "mvsa-single",
                 "--split", "dev", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = next(r for r in records if r["epoch"] == best_epoch)
    assert result["n"] == 9
    assert result["accuracy"] == pytest.approx(best["dev_accuracy"])
    assert result["f1_weighted"] == pytest.approx(best["dev_f1_weighted"])


def test_resume_reproduces_the_uninterrupted_run(tmp_path, data):
    common = ("--epochs", "3", "--stage1-epochs", "1", "--distractor-rate", "0.5", "--seed", "5")
    assert _train(tmp_path, tmp_path / "straight", *common) == 0
    assert _train(tmp_path, tmp_path / "crashed", *common, "--max-steps", "4") == 0  # stops inside epoch 2
    assert [r["epoch"] for r in _metrics(tmp_path / "crashed")] == [1]
    assert json.loads((tmp_path / "crashed" / "resume" / "state.json").read_text())["position"] == 8
    assert _train(tmp_path, tmp_path / "crashed", *common, "--resume") == 0
    straight, resumed = _metrics(tmp_path / "straight"), _metrics(tmp_path / "crashed")
    timing = {"samples_per_s", "epoch_seconds"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in straight] == [
        {k: v for k, v in r.items() if k not in timing} for r in resumed
    ]
    a, b = _weights(tmp_path / "straight" / "last"), _weights(tmp_path / "crashed" / "last")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path, data):
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        assert _train(tmp_path, tmp_path / name, "--epochs", "1", "--seed", seed, "--no-dbcl") == 0
    a, b, c = (_weights(tmp_path / n / "last") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("samples_per_s", "epoch_seconds")} for r in rs]  # noqa: E731
    assert strip(_metrics(tmp_path / "a")) == strip(_metrics(tmp_path / "b"))
    assert "train_dbcl" not in _metrics(tmp_path / "a")[0]


def test_text_cache_gives_the_same_predictions_as_no_cache(tmp_path, data):
    assert _train(tmp_path, tmp_path / "cached", "--epochs", "1", "--no-dbcl", "--no-lbcl", "--text-cache-file",
                  str(tmp_path / "c.safetensors")) == 0
    assert (tmp_path / "c.safetensors").is_file()
    assert _train(tmp_path, tmp_path / "plain", "--epochs", "1", "--no-dbcl", "--no-lbcl", "--no-text-cache") == 0
    cached, plain = _metrics(tmp_path / "cached")[0], _metrics(tmp_path / "plain")[0]
    assert cached["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-2)


def test_presets_carry_the_published_recipe_and_can_be_overridden(tmp_path):
    assert (PRESETS["mvsa-single"].fusion_layers, PRESETS["mvsa-single"].image_layers) == (3, 2)
    assert (PRESETS["mvsa-multiple"].fusion_layers, PRESETS["mvsa-multiple"].batch_size) == (4, 64)
    assert (PRESETS["hfm"].fusion_layers, PRESETS["hfm"].image_layers, PRESETS["hfm"].batch_size) == (5, 1, 128)
    assert get_preset("twitter15").aspect and PRESETS["mvsa-single"].epochs == 50
    cfg = TrainConfig(preset="hfm", data_root=tmp_path, out=tmp_path)
    assert (cfg.batch_size, cfg.temperature, cfg.stage1_epochs, cfg.selection_metric) == (128, 0.07, 20, "f1_macro")
    cfg = TrainConfig(preset="hfm", data_root=tmp_path, out=tmp_path, batch_size=4, epochs=3, stage1_epochs=3)
    assert (cfg.batch_size, cfg.epochs) == (4, 3) and cfg.text_frozen_throughout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--preset", "nope"], "invalid choice"),
        (["--epochs", "0"], "epochs"),
        (["--batch-size", "-1"], "batch-size"),
        (["--distractor-rate", "2"], "distractor-rate"),
        (["--no-images", "--distractor-rate", "0.3"], "--distractor-rate needs images: a text-only run"),
        (["--fusion-dim", "33"], "fusion"),
        (["--resume"], "no resume state"),
        (["--device", "cuda"], "cuda"),
        (["--grad-accum", "0"], "grad-accum"),
        (["--text-encoder", "/no/such/encoder"], "text encoder"),
        (["--image-cache"], "needs --no-image-augment or --augment-copies K"),
        (["--augment-copies", "3", "--no-image-augment"], "--augment-copies needs image augmentation"),
        (["--augment-copies", "-1"], "augment-copies"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, data, capsys, args, needle):
    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = ["train", "--preset", "mvsa-single", "--data-root", str(data), "--out", str(tmp_path / "o"),
            "--text-encoder", "tiny-random-bert", "--image-encoder", "tiny-cnn", "--fusion-dim", "32",
            "--no-progress", "--epochs", "1", *args]
    if args[0] == "--preset":
        argv[1:3] = args
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert needle in err[-1] and err[-1].startswith("clmlf") and "error:" in err[-1]


@pytest.mark.parametrize("native_bf16", [False, True])
def test_amp_on_cpu_needs_native_bf16(tmp_path, data, capsys, monkeypatch, native_bf16):
    monkeypatch.setattr("clmlf.training.trainer.cpu_has_native_bf16", lambda: native_bf16)
    if native_bf16:  # bf16 autocast on such a CPU trains (and is what --preset default uses there)
        assert _train(tmp_path, tmp_path / "amp", "--amp", "--device", "cpu", "--epochs", "1") == 0
        assert load(tmp_path / "amp" / "best").config.fusion_dim == 32
        return
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path, tmp_path / "amp", "--amp", "--device", "cpu", "--epochs", "1")
    assert exit_info.value.code == 2
    assert "needs a CUDA device or a CPU with native bf16" in capsys.readouterr().err.strip().splitlines()[-1]


def test_max_steps_leaves_a_usable_last_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "stopped"
    assert _train(tmp_path, out, "--epochs", "3", "--stage1-epochs", "1", "--max-steps", "4", "--no-progress") == 0
    assert [r["epoch"] for r in _metrics(out)] == [1]  # stopped inside epoch 2
    meta = json.loads((out / "last" / "config.json").read_text())
    assert meta["extra"]["stopped_at"] == {"epoch": 2, "sample": 8, "step": 4} and meta["extra"]["epoch"] == 1
    resume = load_file(str(out / "resume" / "state.safetensors"))
    last = load(out / "last")
    for key, value in last.model.state_dict().items():  # last/ holds the very state resume/ continues from
        if f"model.{key}" in resume:
            assert torch.equal(value, resume[f"model.{key}"]), key
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "last"), "--data-root", str(data), "--dataset",
                 "mvsa-single", "--split", "dev", "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["n"] == 9


def test_a_run_directory_is_accepted_as_checkpoint(tmp_path, data, capsys):
    out = tmp_path / "run"
    assert _train(tmp_path, out, "--epochs", "1", "--no-dbcl", "--no-progress") == 0
    scores = []
    for checkpoint in (out, out / "best"):
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(checkpoint), "--data-root", str(data), "--dataset",
                     "mvsa-single", "--split", "dev", "--json", "--no-progress"]) == 0
        scores.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert scores[0] == scores[1]
    assert load(out).name == load(out / "best").name


def test_a_run_directory_without_best_is_a_one_line_error(tmp_path, data, capsys):
    out = tmp_path / "early"
    assert _train(tmp_path, out, "--epochs", "2", "--max-steps", "1", "--no-progress") == 0
    assert (out / "last" / "config.json").is_file() and not (out / "best").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--checkpoint", str(out), "--data-root", str(data), "--dataset", "mvsa-single",
              "--split", "dev", "--json", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"{out}: training run directory without a best/ checkpoint; pass {out / 'last'}" in err[0]


def test_stage_2_with_the_package_minilm_ships_only_the_changed_tensors(tmp_path, data, capsys):
    """Real MiniLM fine-tuned in stage 2: best/ holds only its changed tensors (float16) and scores as recorded."""
    out = tmp_path / "minilm"
    args = [arg if arg != "tiny-random-bert" else "minilm" for arg in TINY_MODEL_ARGS]
    assert main(["train", "--preset", "mvsa-single", "--data-root", str(data), "--out", str(out), *args,
                 "--batch-size", "8", "--lr", "1e-3", "--text-lr", "1e-4", "--epochs", "1", "--stage1-epochs", "0",
                 "--no-dbcl", "--no-lbcl", "--no-text-cache"]) == 0
    records = _metrics(out)
    meta = json.loads((out / "last" / "config.json").read_text())
    text = meta["encoders"]["text"]
    assert meta["format_version"] == 2 and text["stored"] == "partial" and text["dtypes"] == ["float16"]
    stored = load_file(str(out / "last" / "model.safetensors"))
    assert sorted(k for k in stored if k.startswith("text_encoder.")) == sorted(text["keys"])
    assert text["keys"] and all(stored[k].dtype == torch.float16 for k in text["keys"])
    assert not (out / "last" / "text_encoder").exists()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "last"), "--data-root", str(data), "--dataset",
                 "mvsa-single", "--split", "dev", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == pytest.approx(records[-1]["dev_accuracy"])  # float16 rounding kept the labels


def test_text_only_run_records_trained_with_images_false(tmp_path, data):
    out = tmp_path / "text-only"
    assert _train(tmp_path, out, "--epochs", "1", "--no-dbcl", "--no-images", "--no-progress") == 0
    for folder in ("best", "last"):
        meta = json.loads((out / folder / "config.json").read_text())
        assert meta["model"]["trained_with_images"] is False
        assert load(out / folder).config.trained_with_images is False
    assert _train(tmp_path, tmp_path / "with-images", "--epochs", "1", "--no-dbcl", "--no-progress") == 0
    assert load(tmp_path / "with-images" / "best").config.trained_with_images is True


def test_malformed_data_exits_2_naming_the_file(tmp_path, data, capsys):
    bad = data / "MVSA-single" / "10-flod-1" / "dev.json"
    bad.write_text('[{"id": "1", "text": "x", "emotion_label": "happy"}]')
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path, tmp_path / "o", "--epochs", "1")
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(bad) in last and "entry 0" in last


def test_two_process_ddp_on_cpu_with_gloo(tmp_path, data):
    """torchrun, 2 ranks, gloo: one metrics line per epoch (rank 0 writes), a loadable best checkpoint."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "clmlf.cli", "train", "--preset", "mvsa-single", "--data-root", str(data), "--out", str(out),
         *TINY_MODEL_ARGS, "--batch-size", "4", "--epochs", "2", "--stage1-epochs", "1"],
        capture_output=True, text=True, timeout=480, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr[:3000]
    records = _metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[-1]["step"] == 2 * 3  # 24 samples over 2 ranks x 4 per step = 3 steps per epoch
    assert done.stderr.count("done: best dev") == 1
    assert load(out / "best").config.fusion_dim == 32


def test_aspect_preset_trains_an_aspect_checkpoint(tmp_path):
    make_tombert(tmp_path / "absa")
    out = tmp_path / "t15"
    assert main(["train", "--preset", "twitter15", "--data-root", str(tmp_path / "absa"), "--out", str(out),
                 *TINY_MODEL_ARGS, "--batch-size", "2", "--epochs", "1"]) == 0
    loaded = load(out / "best")
    assert loaded.config.aspect and loaded.config.labels == ("positive", "neutral", "negative")
    assert _metrics(out)[0]["step"] == 2  # 3 samples, batch 2


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, data):
    out = tmp_path / "accum"
    assert _train(tmp_path, out, "--epochs", "1", "--grad-accum", "2", "--no-dbcl") == 0
    record = _metrics(out)[0]
    assert record["step"] == 2  # 3 micro-batches of 8 -> steps after micro-batch 2 and after the last one
    assert record["train_loss"] > 0


def test_resume_with_another_architecture_exits_2(tmp_path, data, capsys):
    assert _train(tmp_path, tmp_path / "r", "--epochs", "2", "--max-steps", "1", "--no-dbcl") == 0
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path, tmp_path / "r", "--epochs", "2", "--no-dbcl", "--resume", "--fusion-dim", "64")
    assert exit_info.value.code == 2
    assert "state does not match this configuration" in capsys.readouterr().err.strip().splitlines()[-1]


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, data):
    """SIGKILL a real training process somewhere after its second step, resume, compare with a straight run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    common = ["--epochs", "4", "--stage1-epochs", "1", "--seed", "9", "--no-dbcl"]
    assert _train(tmp_path, tmp_path / "straight", *common) == 0
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "clmlf.cli", "train", "--preset", "mvsa-single", "--data-root", str(data),
            "--out", str(out), *TINY_MODEL_ARGS, "--batch-size", "8", "--lr", "1e-3", *common, "--save-every", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    state = out / "resume" / "state.json"
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["global_step"] >= 2:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert _train(tmp_path, out, *common, "--resume") == 0
    timing = {"samples_per_s", "epoch_seconds"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(_metrics(out)) == strip(_metrics(tmp_path / "straight"))
    a, b = _weights(tmp_path / "straight" / "last"), _weights(out / "last")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _initial_weights(tmp_path, seed: int) -> dict[str, torch.Tensor]:
    """The model ``clmlf train --seed SEED`` starts from (the trainer seeds torch right before building it)."""
    from clmlf.data.datasets import MVSA_LABELS
    from clmlf.model.model import CLMLF
    from clmlf.training.trainer import build_model_config

    cfg = TrainConfig(preset="mvsa-single", data_root=tmp_path, out=tmp_path, text_encoder="tiny-random-bert",
                      image_encoder="tiny-cnn", fusion_dim=32, fusion_layers=1, image_layers=1, image_size=32,
                      max_text_len=32, epochs=2, stage1_epochs=1, seed=seed)
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in CLMLF(build_model_config(cfg, MVSA_LABELS)).state_dict().items()}


def test_two_stages_freeze_the_text_encoder_first_and_never_move_the_image_encoder(tmp_path, data):
    """Stage 1: text encoder untouched, fusion trained; stage 2: text encoder trained; image encoder
    (BatchNorm statistics included, REFERENCE.md section 4) identical to its initial state throughout."""
    initial = _initial_weights(tmp_path, seed=3)
    out = tmp_path / "stages"
    common = ("--epochs", "2", "--stage1-epochs", "1", "--seed", "3")
    assert _train(tmp_path, out, *common, "--max-steps", "3") == 0  # 3 steps = exactly epoch 1
    assert [r["stage"] for r in _metrics(out)] == [1]
    after_stage1 = _weights(out / "last")

    def changed(weights, prefix):
        keys = [k for k in weights if k.startswith(prefix)]
        assert keys, prefix
        return [k for k in keys if not torch.equal(weights[k], initial[k])]

    assert changed(after_stage1, "text_encoder.") == []
    assert changed(after_stage1, "image_encoder.") == []
    assert changed(after_stage1, "fusion_transformer.")
    assert _train(tmp_path, out, *common, "--resume") == 0
    assert [r["stage"] for r in _metrics(out)] == [1, 2]
    after_stage2 = _weights(out / "last")
    assert changed(after_stage2, "text_encoder.")
    assert changed(after_stage2, "image_encoder.") == []
    assert any("running_mean" in k for k in after_stage2 if k.startswith("image_encoder."))


@pytest.mark.parametrize("stop_after", [2, 3, 4], ids=["inside-stage-1", "at-the-switch", "inside-stage-2"])
def test_resume_around_the_stage_switch_with_a_package_text_encoder(tmp_path, data, monkeypatch, stop_after):
    """A frozen text encoder whose weights come from a package is not stored in resume/; resuming in
    stage 1, right after it (the default MiniLM recipe) or in stage 2 must match the uninterrupted run."""
    from clmlf.model import encoders

    original = encoders._TEXT_ENCODERS["tiny-random-bert"]

    def packaged(config):  # tiny-random-bert's weights are fixed by the seed, like a package's
        encoder = original(config)
        encoder.builtin_weights = True
        return encoder

    monkeypatch.setitem(encoders._TEXT_ENCODERS, "tiny-random-bert", packaged)
    common = ("--epochs", "2", "--stage1-epochs", "1", "--seed", "4", "--no-dbcl")
    assert _train(tmp_path, tmp_path / "straight", *common) == 0
    out = tmp_path / "switch"
    assert _train(tmp_path, out, *common, "--max-steps", str(stop_after)) == 0  # 3 steps per epoch
    stored = load_file(str(out / "resume" / "state.safetensors"))
    assert any(k.startswith("model.text_encoder.") for k in stored) == (stop_after > 3)
    assert _train(tmp_path, out, *common, "--resume") == 0
    timing = {"samples_per_s", "epoch_seconds"}
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(_metrics(out)) == strip(_metrics(tmp_path / "straight"))
    a, b = _weights(tmp_path / "straight" / "last"), _weights(out / "last")
    assert any(k.startswith("text_encoder.") for k in a) and all(torch.equal(a[k], b[k]) for k in a)


def test_progress_bar_shows_loss_and_throughput_and_load_summary_once(tmp_path, data, capsys):
    args = [a for a in TINY_MODEL_ARGS if a != "--no-progress"]
    assert main(["train", "--preset", "mvsa-single", "--data-root", str(data), "--out", str(tmp_path / "p"), *args,
                 "--batch-size", "8", "--epochs", "1", "--no-dbcl"]) == 0
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "samples_s=" in err  # tqdm on stderr
    for split, line in (("train", "24 samples, 5 with an image (18 missing, 1 unreadable"),
                        ("dev", "9 samples, 6 with an image (3 missing, 0 unreadable")):
        found = [x for x in err.splitlines() if f"mvsa-single/{split}: " in x]
        assert len(found) == 1 and line in found[0]


def test_process_group_backend_has_a_cpu_backend_for_the_metric_reductions():
    """Loss sums and dev predictions are reduced as CPU tensors; NCCL alone cannot carry them."""
    from clmlf.training.distributed import process_group_backend

    assert process_group_backend("cpu") == "gloo"
    pairs = dict(pair.split(":") for pair in process_group_backend("cuda").split(","))
    assert pairs == {"cpu": "gloo", "cuda": "nccl"}
