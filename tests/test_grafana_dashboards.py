"""Grafana dashboards as code: generated files are fresh, structurally valid, and query only
metrics the app exports (docs/architecture.md) or recording rules that exist."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from prometheus_testlib import (
    PROMETHEUS_SERIES,
    ROOT,
    architecture_metrics,
    base_metric,
    dashboard_expressions,
    dashboards,
    promql_metric_names,
    recording_rule_names,
    rule_expressions,
)

BUILDER = ROOT / "deploy" / "grafana" / "build_dashboards.py"


def test_generated_dashboards_are_up_to_date():
    done = subprocess.run([sys.executable, str(BUILDER), "--check"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_generator_writes_both_dashboards(tmp_path):
    done = subprocess.run([sys.executable, str(BUILDER), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clmlf-pipeline.json", "clmlf-sentiment.json"]
    stale = subprocess.run([sys.executable, str(BUILDER), "--check", "--out", str(tmp_path / "none")],
                           capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "stale" in stale.stderr


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_dashboard_structure(name):
    board = dashboards()[name]
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    assert any(v["type"] == "datasource" for v in board["templating"]["list"])
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    occupied: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["w"] > 0 and grid["h"] > 0
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["type"] == "prometheus" and panel["datasource"]["uid"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        assert all(t["expr"].strip() and t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_sentiment_dashboard_has_the_required_views():
    titles = [p["title"].lower() for p in dashboards()["clmlf-sentiment.json"]["panels"]]
    assert any("stacked" in t for t in titles)
    assert any("baseline" in t and "negative share" in t for t in titles)
    assert any("alert" in t for t in titles)


def test_pipeline_dashboard_covers_every_exported_metric():
    exprs = " ".join(expr for where, expr in dashboard_expressions() if where.startswith("clmlf-pipeline"))
    names = {base_metric(n) for n in promql_metric_names(exprs)}
    names |= {base_metric(n.split(":")[1]) for n in names if n.count(":") == 2}
    sentiment_only = {"clmlf_alert_active"}
    assert architecture_metrics() - sentiment_only - names == set()


def test_every_expression_uses_known_metrics_only():
    exported = architecture_metrics()
    recorded = recording_rule_names()
    assert exported and recorded
    for where, expr in dashboard_expressions() + rule_expressions():
        for name in promql_metric_names(expr):
            if ":" in name:
                assert name in recorded, f"{where}: unknown recording rule {name}"
            else:
                known = base_metric(name) in exported or name.removesuffix("_total") in exported
                known = known or name in exported or name in PROMETHEUS_SERIES
                assert known, f"{where}: {name} is not exported (docs/architecture.md)"


def test_metric_name_extraction():
    expr = ('histogram_quantile(0.95, sum by (le, source) (rate(clmlf_x_bucket{source="a b",le!="1"}[5m] '
            'offset 5m))) / ignoring (label) group_left topic:clmlf_y:rate5m > bool 0.5 and on (topic) up')
    assert promql_metric_names(expr) == {"clmlf_x_bucket", "topic:clmlf_y:rate5m", "up"}


def test_provisioning_files_point_at_the_dashboards():
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    providers = yaml.safe_load((prov / "dashboards" / "clmlf.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    sources = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert sources[0]["type"] == "prometheus" and sources[0]["uid"] == "prometheus"
