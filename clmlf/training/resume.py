"""``OUT/resume``: trainable tensors, optimizer state, data position and RNG states (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clmlf.training.config import METRICS_FILE, RESUME_DIR, TrainConfig
from clmlf.training.metrics_log import truncate_metrics
from clmlf.training.stages import freeze_text, unfreeze_text

log = logging.getLogger(__name__)


def stored_state(model: nn.Module) -> dict[str, Tensor]:
    """Model tensors a resume needs: all but frozen encoders whose weights come from a package."""
    skip = {
        group
        for group in ("text_encoder", "image_encoder")
        if getattr(getattr(model, group), "frozen", False) and getattr(getattr(model, group), "builtin_weights", False)
    }
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items() if k.split(".", 1)[0] not in skip}




def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    entries: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    for index, values in meta["scalars"].items():
        entries.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": entries, "param_groups": meta["param_groups"]})


def rng_tensors() -> dict[str, Tensor]:
    out = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = state
    return out


def restore_rng(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Atomically replace ``out/resume`` with the current training state."""
    from safetensors.torch import save_file

    tmp = out / f"{RESUME_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    tensors = {f"model.{k}": v for k, v in stored_state(model).items()}
    tensors.update(opt_tensors)
    tensors.update(rng_tensors())
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "optimizer": opt_meta}, indent=1))
    final = out / RESUME_DIR
    old = out / f"{RESUME_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def load_resume(out: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    from safetensors.torch import load_file

    folder = out / RESUME_DIR
    if not (folder / "state.json").is_file() and (out / f"{RESUME_DIR}.old" / "state.json").is_file():
        folder = out / f"{RESUME_DIR}.old"  # killed between the two renames of save_resume: the old state is whole
    if not (folder / "state.json").is_file():
        raise FileNotFoundError(f"{folder}: no resume state (run without --resume first)")
    return json.loads((folder / "state.json").read_text()), load_file(str(folder / "state.safetensors"))


def text_trained_before(state: dict[str, Any], cfg: TrainConfig) -> bool:
    """Whether the text encoder was already trainable when ``state`` was saved.

    An end-of-epoch save with ``epoch == stage1_epochs`` comes from the last stage-1
    epoch (encoder still frozen, so a package encoder was not stored); a save inside
    that epoch index (``position > 0``) comes from stage 2.
    """
    if cfg.text_frozen_throughout:
        return False
    return state["epoch"] > cfg.stage1_epochs or (state["epoch"] == cfg.stage1_epochs and state["position"] > 0)


def restore_resume(out: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> dict[str, Any]:
    """Load ``out/resume`` into ``model``, ``optimizer`` and the RNGs; returns the loop state to continue from."""
    state, tensors = load_resume(out)
    # Match the trainable set at save time: a frozen package encoder was not stored, a trainable one was.
    if text_trained_before(state, cfg):
        unfreeze_text(model, cfg.text_train_layers)
    else:
        freeze_text(model)
    model_tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = set(stored_state(model)) - model_tensors.keys()
    if missing:
        raise ValueError(f"{out / RESUME_DIR}: state does not match this configuration (missing {sorted(missing)[:2]})")
    try:
        model.load_state_dict(model_tensors, strict=False)
        optimizer_from_tensors(optimizer, tensors, state.pop("optimizer"))
    except (RuntimeError, ValueError, KeyError) as exc:
        first = " ".join(str(exc).split())[:160]
        raise ValueError(f"{out / RESUME_DIR}: state does not match this configuration ({first})") from None
    restore_rng(tensors)
    truncate_metrics(out / METRICS_FILE, state["epoch"])
    return state
