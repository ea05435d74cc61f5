"""Prometheus rules: promtool validates them and runs their unit tests; every alert has a runbook
and is tested both firing and silent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt install prometheus)")


def all_rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [rule for rule in all_rules() if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=PROM)


@needs_promtool
def test_promtool_check_rules():
    done = promtool("check", "rules", *[str(p) for p in RULE_FILES])
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_check_local_config():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_promtool_rule_unit_tests_pass():
    done = promtool("test", "rules", *[str(p.relative_to(PROM)) for p in TEST_FILES])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_runbook_that_exists():
    alerts_doc = (ROOT / "docs" / "alerts.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in alerts_doc.splitlines() if line.startswith("#")}
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        assert url.startswith("docs/alerts.md#"), rule["alert"]
        assert url.split("#", 1)[1] in anchors, f"{rule['alert']}: no heading for {url}"
        assert rule["annotations"].get("summary") and rule["labels"].get("severity")


def test_every_alert_is_unit_tested_firing_and_silent():
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"


def test_recording_rules_follow_the_naming_convention_and_are_unique():
    records = [rule["record"] for rule in all_rules() if "record" in rule]
    assert len(records) == len(set(records))
    for name in records:
        assert re.fullmatch(r"[a-z_]*:clmlf_[a-z0-9_]+:[a-z0-9_]+", name), name
