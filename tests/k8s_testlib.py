"""What users apply: ``kubectl kustomize k8s/<dir>``, parsed. Without kubectl the tests skip locally and
fail under ``CI=true`` (a check that silently never runs is no check)."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def require_tool(path: str | None, what: str) -> str:
    """``path``, or skip (locally) / fail (``CI=true``) the test that needs ``what``."""
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required under CI=true")
    pytest.skip(f"{what} not installed")


@functools.cache
def _kustomize_text(directory: Path) -> str:
    kubectl = require_tool(shutil.which("kubectl"), "kubectl (its built-in kustomize renders k8s/)")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources ``kubectl kustomize directory`` renders (a fresh copy per call)."""
    return copy.deepcopy([doc for doc in yaml.safe_load_all(_kustomize_text(Path(directory))) if doc])


def pod_containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a workload's pod template (none for other kinds)."""
    if resource.get("kind") not in WORKLOAD_KINDS:
        return []
    return resource.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
