"""Serving precision (clmlf.serving.precision) and threads (clmlf.serving.cpu_threads): parsing, resolution on any CPU,
outputs of each mode on the tiny model, the agreement gate, the command-line settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from training_testlib import make_mvsa

from clmlf.evaluation.metrics import precision_agreement
from clmlf.model.checkpoint import load
from clmlf.serving.cpu_threads import cgroup_cpu_limit, choose_threads, parse_threads
from clmlf.serving.inference import InferenceItem, Predictor
from clmlf.serving.precision import (
    AGREEMENT_BAR,
    PRECISIONS,
    CpuFeatures,
    cpu_flags,
    parse_precision,
    probe_cpu,
    resolve_precision,
)

torch.set_num_threads(1)

CPU = torch.device("cpu")
WITH_BF16 = CpuFeatures(frozenset({"avx512f", "avx512_bf16"}), "AVX512")
WITH_AMX = CpuFeatures(frozenset({"amx_bf16", "amx_tile"}), "AVX512")
WITHOUT_BF16 = CpuFeatures(frozenset({"avx2", "fma"}), "AVX2")


# ------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize(("text", "mode"), [("auto", "auto"), ("FP32", "fp32"), (" bf16 ", "bf16"),
                                            ("int8", "int8"), ("bfloat16", "bf16"), ("float32", "fp32")])
def test_parse_precision_accepts_the_modes(text: str, mode: str) -> None:
    assert parse_precision(text) == mode


@pytest.mark.parametrize("text", ["", "fp16", "int4", "bf16x", "auto,fp32"])
def test_parse_precision_rejects_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, int8") as info:
        parse_precision(text)
    assert "\n" not in str(info.value)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # shared, loaded machine: no time limits
@given(st.text(max_size=12))
def test_parse_precision_returns_a_mode_or_raises(text: str) -> None:
    try:
        assert parse_precision(text) in PRECISIONS
    except ValueError:
        assert text.strip().lower() not in (*PRECISIONS, "float32", "bfloat16")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # shared, loaded machine: no time limits
@given(st.lists(st.sampled_from(["fpu", "sse2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]),
                unique=True))
def test_cpu_flags_round_trip_and_decide_native_bf16(flags: list[str]) -> None:
    text = "processor\t: 0\nvendor_id\t: X\nflags\t\t: " + " ".join(flags) + "\nbogomips\t: 1\n\nprocessor\t: 1\n"
    parsed = cpu_flags(text)
    assert parsed == frozenset(flags)
    assert CpuFeatures(parsed).native_bf16 == bool({"avx512_bf16", "amx_bf16"} & set(flags))


def test_probe_cpu_without_cpuinfo_has_no_flags(tmp_path: Path) -> None:
    features = probe_cpu(tmp_path / "missing")
    assert features.flags == frozenset() and not features.native_bf16


# ------------------------------------------------------------------------------------ resolution

@pytest.mark.parametrize("cpu", [WITH_BF16, WITH_AMX])
def test_auto_on_a_cpu_with_native_bf16_is_bf16(cpu: CpuFeatures) -> None:
    plan = resolve_precision("auto", CPU, cpu)
    assert plan.mode == "bf16" and plan.autocast_dtype is torch.bfloat16 and plan.channels_last


def test_auto_on_a_cpu_without_bf16_falls_back_to_fp32_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def probe() -> CpuFeatures:
        calls.append(1)
        return WITHOUT_BF16

    with caplog.at_level(logging.INFO, logger="clmlf.precision"):
        plan = resolve_precision("auto", CPU, probe)
    assert plan.mode == "fp32" and plan.autocast_dtype is None and calls == [1]
    lines = [r.getMessage() for r in caplog.records if r.name == "clmlf.precision"]
    assert len(lines) == 1 and "precision fp32 on cpu" in lines[0] and "no native bf16" in lines[0]


def test_explicit_modes_on_cpu_are_kept_and_the_risky_ones_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="clmlf.precision"):
        assert resolve_precision("fp32", CPU, WITH_BF16).mode == "fp32"
        assert resolve_precision("bf16", CPU, WITHOUT_BF16).mode == "bf16"
        assert resolve_precision("int8", CPU, WITH_BF16).mode == "int8"
    levels = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "clmlf.precision"]
    assert levels[0][0] == logging.INFO
    assert levels[1][0] == logging.WARNING and "emulated" in levels[1][1]
    assert levels[2][0] == logging.WARNING and "opt-in" in levels[2][1]


def test_cuda_resolution_needs_no_gpu_and_never_probes_the_cpu() -> None:
    def probe() -> CpuFeatures:
        raise AssertionError("the CPU probe must not run for CUDA")

    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda, probe).mode == "bf16"
    assert resolve_precision("fp32", cuda, probe).mode == "fp32"
    assert not resolve_precision("auto", cuda, probe).channels_last
    with pytest.raises(ValueError, match="int8 runs on CPU only"):
        resolve_precision("int8", cuda, probe)


# ------------------------------------------------------------------------------------ outputs on the tiny model

def tiny_items(n: int) -> list[InferenceItem]:
    gen = torch.Generator().manual_seed(3)
    texts = ["great phone", "worst flight ever, again", "meh", "coffee was fine today", "acme outage"]
    return [InferenceItem(texts[i % len(texts)] + f" {i}",
                          image=torch.randn(3, 64, 64, generator=gen) if i % 3 else None) for i in range(n)]


def probabilities(predictor: Predictor, items: list[InferenceItem]) -> np.ndarray:
    return np.array([[p.scores[label] for label in predictor.labels] for p in predictor.predict(items)])


@pytest.fixture(scope="module")
def fp32_reference(tiny_checkpoint: Path) -> np.ndarray:
    return probabilities(Predictor(load(tiny_checkpoint), device="cpu", precision="fp32"), tiny_items(12))


@pytest.mark.parametrize(("mode", "tolerance"), [("fp32", 1e-6), ("bf16", 0.03), ("int8", 0.05)])
def test_each_mode_stays_within_tolerance_of_fp32(tiny_checkpoint: Path, fp32_reference: np.ndarray,
                                                  mode: str, tolerance: float) -> None:
    predictor = Predictor(load(tiny_checkpoint), device="cpu", precision=mode, cpu=WITH_BF16)
    got = probabilities(predictor, tiny_items(12))
    assert predictor.precision.mode == mode
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(got - fp32_reference).max() <= tolerance
    if mode != "fp32":
        assert np.abs(got - fp32_reference).max() > 0  # the mode really ran in another format


def test_prepare_sets_channels_last_and_int8_leaves_the_given_model_alone(tiny_checkpoint: Path) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = load(tiny_checkpoint).model
    original = model.fusion_transformer.layers[0].feed_forward[0]
    plan = resolve_precision("int8", CPU, WITH_BF16)
    quantized = plan.prepare(model)
    conv = next(m for m in model.image_encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.fusion_transformer.layers[0].feed_forward[0] is original  # untouched
    assert isinstance(quantized.fusion_transformer.layers[0].feed_forward[0], DynamicLinear)
    assert isinstance(quantized.text_encoder.backbone.encoder.layer[0].attention.self.query, DynamicLinear)
    assert not any(isinstance(m, DynamicLinear) for m in quantized.image_encoder.modules())


def test_bf16_casts_every_linear_once_with_the_same_logits_as_autocast(tiny_checkpoint: Path) -> None:
    import copy

    loaded = load(tiny_checkpoint)
    reference = copy.deepcopy(loaded.model).eval()
    reference.image_encoder.to(memory_format=torch.channels_last)
    plan = resolve_precision("bf16", CPU, WITH_BF16)
    prepared = plan.prepare(loaded.model.eval())
    linears = [m for m in prepared.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.bfloat16 for m in linears)
    assert all(m.bias is None or m.bias.dtype == torch.bfloat16 for m in linears)
    norms = [m for m in prepared.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.Embedding))]
    assert norms and all(p.dtype == torch.float32 for m in norms for p in m.parameters())
    items = tiny_items(9)
    batch = loaded.preprocessor.collate([i.text for i in items], [i.image for i in items])
    batch["pixel_values"] = plan.pixels(batch["pixel_values"])
    with torch.inference_mode(), plan.autocast():
        want = reference(**batch).logits.float()
        got = prepared(**batch).logits.float()
    assert torch.equal(got, want)  # the cast autocast did per forward, done once: bit for bit the same


# ------------------------------------------------------------------------------------ the agreement gate

def test_agreement_by_hand() -> None:
    ref = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.4, 0.35, 0.25], [0.2, 0.2, 0.6]]
    got = [[0.69, 0.21, 0.1], [0.1, 0.8, 0.1], [0.34, 0.41, 0.25], [0.2, 0.2, 0.6]]
    report = precision_agreement(ref, got)
    assert report["n"] == 4 and report["labels_changed"] == 1 and report["label_agreement"] == 0.75
    assert report["max_probability_change"] == pytest.approx(0.06)
    assert report["mean_probability_change"] == pytest.approx((0.01 + 0 + 0.06 + 0) / 4)
    assert report["bar"] == AGREEMENT_BAR and not report["passes"]
    assert precision_agreement(ref, ref)["passes"] and precision_agreement([], [])["passes"] is True


def test_agreement_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        precision_agreement([[0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9]])


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # shared, loaded machine: no time limits
@given(st.integers(1, 30).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=3, max_size=3), min_size=n, max_size=n),
    st.lists(st.lists(st.floats(0, 1, allow_subnormal=False), min_size=3, max_size=3), min_size=n, max_size=n))))
def test_agreement_properties(pair: tuple[list, list]) -> None:
    ref, got = pair
    report = precision_agreement(ref, got)
    assert 0.0 <= report["label_agreement"] <= 1.0
    assert 0.0 <= report["mean_probability_change"] <= report["max_probability_change"] <= 1.0
    assert report["passes"] == (report["label_agreement"] >= AGREEMENT_BAR)
    same = precision_agreement(ref, ref)
    assert same["label_agreement"] == 1.0 and same["max_probability_change"] == 0.0


@pytest.mark.parametrize("mode", ["bf16", "int8"])
def test_evaluate_compare_precision_reports_the_gate(tiny_checkpoint: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture, mode: str) -> None:
    from clmlf.cli import main

    make_mvsa(tmp_path / "data", n_train=4, n_dev=9, with_images=3)
    status = main(["evaluate", "--checkpoint", str(tiny_checkpoint), "--data-root", str(tmp_path / "data"),
                   "--dataset", "mvsa-single", "--split", "dev", "--no-progress", "--compare-precision", mode,
                   "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["reference"] == "fp32" and report["precision"] == mode and report["n"] == 9
    assert 0 < report["max_probability_change"] < 0.1 and set(report["accuracy"]) == {"fp32", mode}
    assert status == (0 if report["passes"] else 1)
    assert report["passes"] == (report["label_agreement"] >= 0.995)


# ------------------------------------------------------------------------------------ threads

@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # shared, loaded machine: no time limits
@given(st.one_of(st.text(max_size=6), st.integers(-5, 2000)))
def test_parse_threads_is_auto_a_count_or_an_error(text) -> None:
    try:
        value = parse_threads(text)
    except ValueError as exc:
        assert "threads must be" in str(exc)
        return
    assert value is None or 1 <= value <= 1024


def test_threads_follow_the_cgroup_quota(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "kubepods" / "pod1").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "kubepods" / "cpu.max").write_text("250000 100000\n")
    (v2 / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2, "0::/kubepods/pod1\n") == 1.5  # the tightest on the path
    assert cgroup_cpu_limit(v2, "0::/\n") is None  # unlimited at the root
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert cgroup_cpu_limit(v2, "0::/\n") == 2.0  # a container sees its own cgroup as the root

    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1", "4:cpu,cpuacct:/\n") == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "v1", "4:cpu,cpuacct:/\n") is None


def test_thread_choice_order() -> None:
    assert choose_threads(3, env={"OMP_NUM_THREADS": "2"}, quota=1.0, cpus=8).threads == 3
    assert choose_threads(None, env={"OMP_NUM_THREADS": "2"}, quota=1.0, cpus=8).source == "OMP_NUM_THREADS"
    assert choose_threads(None, env={}, quota=1.5, cpus=8).threads == 1
    assert choose_threads(None, env={}, quota=0.2, cpus=8).threads == 1
    assert choose_threads(None, env={}, quota=16.0, cpus=4).threads == 4
    assert choose_threads(None, env={}, quota=None, cpus=4).threads == 4


# ------------------------------------------------------------------------------------ command-line settings

@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["--precision", "fp16"], {}, "argument --precision: precision must be one of auto, fp32, bf16, int8"),
    ([], {"CLMLF_PRECISION": "half"}, "argument --precision: precision must be one of"),
    (["--threads", "0"], {}, "argument --threads: threads must be between 1 and 1024"),
    ([], {"CLMLF_THREADS": "many"}, "argument --threads: threads must be auto or a whole number"),
])
def test_bad_precision_or_threads_exit_2_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture, argv, env, needle) -> None:
    from clmlf.cli import main

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "hi"}\n')
    with pytest.raises(SystemExit) as info:
        main(["predict", "--input", str(posts), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and needle in err[0]


def test_run_config_carries_precision_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from consumers.config import add_run_arguments, run_config_from_args

    monkeypatch.setenv("CLMLF_PRECISION", "fp32")
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--bootstrap", "k:9092", "--topic", "t", "--group", "g", "--redis", "redis://r:6379/0",
                              "--threads", "2"])
    config = run_config_from_args(args, parser)
    assert config.precision == "fp32" and config.threads == 2
    assert "precision=fp32 threads=2" in config.describe()


def test_model_info_metric_has_the_precision_label(tiny_checkpoint: Path) -> None:
    from consumers.metrics import PipelineMetrics

    predictor = Predictor(load(tiny_checkpoint), device="cpu", precision="auto", cpu=WITHOUT_BF16)
    metrics = PipelineMetrics()
    metrics.model_info.labels(model=predictor.model_name, device="cpu", precision=predictor.precision.label).set(1)
    assert 'precision="fp32"' in metrics.render().decode()
