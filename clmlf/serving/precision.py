"""Serving precision: which number format the model runs in, chosen once at start-up.

    cpu = probe_cpu()                                    # flags from /proc/cpuinfo + torch's capability
    plan = resolve_precision("auto", torch.device("cpu"), cpu)
    model = plan.prepare(model)                          # channels_last image encoder, int8 layers if asked
    with plan.autocast():
        logits = model(**batch).logits

Modes (``--precision`` / ``CLMLF_PRECISION``):

* ``auto``: CUDA -> ``bf16``; a CPU with native bf16 arithmetic (``avx512_bf16`` or
  ``amx_bf16`` in its flags) -> ``bf16``; any other CPU -> ``fp32`` (logged, with the reason).
* ``fp32``: float32 everywhere; the image encoder runs channels_last (its convolutions
  measured faster that way, docs/performance.md) and denormals are flushed to zero.
* ``bf16``: bfloat16 autocast over the whole forward (matmuls and convolutions in bf16,
  softmax / LayerNorm kept in fp32 by autocast), image encoder channels_last. Every
  ``nn.Linear`` is cast to bf16 once at start-up: autocast would cast its weight and bias to
  bf16 on every forward anyway, so the logits are bit-identical, the Linear weights take half
  the memory, and small batches skip the per-forward cast (docs/performance.md).
  Passes the agreement bar (>= 99.5 % same labels as fp32) on the embedded model.
* ``int8``: CPU only, opt-in: every ``nn.Linear`` of the text encoder and of the fusion
  layers dynamically quantized to int8 (weights int8 with one scale per output channel,
  activations quantized per batch),
  image encoder channels_last fp32. It changes labels well beyond the bar on the
  embedded model, so it is never chosen by ``auto`` (a warning says so at start-up).

Nothing here is global: the plan is a value; :meth:`PrecisionPlan.prepare` changes only
the model it is given. The CPU probe is injectable so tests can play any CPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

PrecisionName = Literal["auto", "fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "int8")
ResolvedMode = Literal["fp32", "bf16", "int8"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
AGREEMENT_BAR = 0.995  # label agreement with fp32 a mode needs before it may be a default

log = logging.getLogger("clmlf.precision")


def parse_precision(text: str) -> PrecisionName:
    """``auto``, ``fp32``, ``bf16`` or ``int8`` (case and surrounding blanks ignored), else ValueError."""
    value = str(text).strip().lower()
    aliases = {"float32": "fp32", "bfloat16": "bf16"}
    value = aliases.get(value, value)
    if value not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {text!r}")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU offers for low-precision arithmetic."""

    flags: frozenset[str]
    capability: str = ""  # torch.backends.cpu.get_cpu_capability(): "AVX512", "AVX2", "DEFAULT", ...

    @property
    def native_bf16(self) -> bool:
        return any(flag in self.flags for flag in BF16_FLAGS)

    def describe(self) -> str:
        present = [flag for flag in BF16_FLAGS if flag in self.flags]
        return f"capability {self.capability or '?'}, bf16 flags: {', '.join(present) or 'none'}"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of the first processor of a /proc/cpuinfo text (empty when there is none)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def probe_cpu(cpuinfo_path: str | Path = "/proc/cpuinfo") -> CpuFeatures:
    """This machine's CPU features (no flags when /proc/cpuinfo cannot be read)."""
    try:
        flags = cpu_flags(Path(cpuinfo_path).read_text(encoding="utf-8", errors="replace"))
    except OSError:
        flags = frozenset()
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        capability = ""
    return CpuFeatures(flags=flags, capability=capability)


@dataclass(frozen=True)
class PrecisionPlan:
    """The resolved precision of one process: what runs in which format, and why."""

    requested: str
    mode: ResolvedMode
    device_type: str
    reason: str
    channels_last: bool = True

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.mode == "bf16" else None

    @property
    def label(self) -> str:
        """The metric label value (``fp32``, ``bf16``, ``int8``)."""
        return self.mode

    def describe(self) -> str:
        layout = ", image encoder channels_last" if self.channels_last else ""
        return f"precision {self.mode} on {self.device_type} (requested {self.requested}: {self.reason}){layout}"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for ``bf16``, otherwise nothing."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put ``model`` (eval mode, on its device) into this plan's layout and formats; returns the model to use.

        Works for any CLMLF: the image encoder (when the model has one) goes channels_last;
        ``bf16`` casts every ``nn.Linear`` to bf16 in place (the model then runs only under
        :meth:`autocast`); ``int8`` swaps the ``nn.Linear`` layers outside the image encoder for
        dynamically quantized ones (a new module tree; the given model is left as it was).
        """
        image_encoder = getattr(model, "image_encoder", None)
        if self.channels_last and isinstance(image_encoder, nn.Module):
            image_encoder.to(memory_format=torch.channels_last)
        if self.mode == "bf16":
            cast_linear_bf16(model)
        if self.mode == "int8":
            model = quantize_linear_int8(model)
        return model

    def pixels(self, pixel_values: Tensor) -> Tensor:
        """Pixel batch in the image encoder's memory layout."""
        if self.channels_last and pixel_values.dim() == 4:
            return pixel_values.contiguous(memory_format=torch.channels_last)
        return pixel_values


def cast_linear_bf16(model: nn.Module) -> int:
    """Cast the weight and bias of every ``nn.Linear`` of ``model`` to bf16 in place; returns how many.

    Under bf16 autocast a Linear's inputs, weight and bias are cast to bf16 before the matmul, so
    doing the parameters' cast once here gives bit-identical outputs (tests/test_precision.py)
    without the per-forward cast. Everything else (embeddings, LayerNorm, convolutions, which
    autocast handles per op) stays as it was."""
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    for module in linears:
        module.to(torch.bfloat16)
    return len(linears)


def quantize_linear_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 for every ``nn.Linear`` outside the image encoder (fbgemm / x86 CPU kernels).

    Weights get one scale per output channel: on the embedded model the agreement gate saw 17 of 450
    MVSA-Single dev labels change against 35 with one scale per tensor (docs/performance.md, 2026-12-04)."""
    import copy
    import warnings

    quantized = copy.deepcopy(model)
    image_encoder = getattr(quantized, "image_encoder", None)
    skip = {id(m) for m in image_encoder.modules()} if isinstance(image_encoder, nn.Module) else set()
    targets = {
        name for name, module in quantized.named_modules() if isinstance(module, nn.Linear) and id(module) not in skip
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice about eager quantization
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = dict.fromkeys(targets, per_channel_dynamic_qconfig)
        return quantize_dynamic(quantized, qconfig_spec=spec, dtype=torch.qint8, inplace=False)


def resolve_precision(
    requested: str,
    device: torch.device,
    cpu: CpuFeatures | Callable[[], CpuFeatures] = probe_cpu,
    logger: logging.Logger = log,
) -> PrecisionPlan:
    """Turn the requested mode into a plan for ``device``; logs the choice once.

    ``cpu`` is the CPU probe (or its result), asked only when the device is a CPU.
    Raises ValueError for a request the device cannot run (``int8`` on CUDA).
    """
    wanted = parse_precision(requested)
    if device.type == "cuda":
        if wanted == "int8":
            raise ValueError("precision int8 runs on CPU only (use bf16 or fp32 on CUDA)")
        mode: ResolvedMode = "bf16" if wanted in ("auto", "bf16") else "fp32"
        reason = "CUDA runs bf16 autocast" if wanted == "auto" else "as requested"
        plan = PrecisionPlan(wanted, mode, "cuda", reason, channels_last=False)
        logger.info("%s", plan.describe())
        return plan
    if device.type != "cpu":
        raise ValueError(f"no precision plan for device {device.type!r}")
    features = cpu() if callable(cpu) else cpu
    if wanted == "auto":
        if features.native_bf16:
            plan = PrecisionPlan(wanted, "bf16", "cpu", f"the CPU has native bf16 ({features.describe()})")
        else:
            plan = PrecisionPlan(wanted, "fp32", "cpu",
                                 f"the CPU has no native bf16 ({features.describe()}), fp32 kernels")
        logger.info("%s", plan.describe())
        return plan
    plan = PrecisionPlan(wanted, wanted, "cpu", "as requested")
    if wanted == "bf16" and not features.native_bf16:
        logger.warning("%s; this CPU has no native bf16 (%s): bf16 is emulated and likely slower than fp32",
                       plan.describe(), features.describe())
    elif wanted == "int8":
        logger.warning("%s; int8 is opt-in: it changes more labels than the %.1f%% agreement bar allows "
                       "on the embedded model (check yours: clmlf evaluate --compare-precision int8)",
                       plan.describe(), 100 * AGREEMENT_BAR)
    else:
        logger.info("%s", plan.describe())
    return plan

