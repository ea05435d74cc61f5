"""The wire contract and the Redis store load without the model: no torch, no ``clmlf.model.model``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "timm", "torchvision")


def _loaded_after(module: str) -> list[str]:
    probe = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO,
                          timeout=120)
    return json.loads(done.stdout)


@pytest.mark.parametrize("module", ["contract.posts", "monitor.store"])
def test_module_loads_without_torch_or_the_model_package(module: str) -> None:
    loaded = _loaded_after(module)
    assert module in loaded
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY or m == "clmlf.model.model" or m.startswith("clmlf.model.model.")]
    assert heavy == [], f"import {module} pulled in {heavy}"
