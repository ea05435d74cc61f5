#!/usr/bin/env python3
"""Grafana dashboards as code: writes deploy/grafana/dashboards/*.json.

    python deploy/grafana/build_dashboards.py            # (re)write the JSON files
    python deploy/grafana/build_dashboards.py --check    # exit 1 if a file is missing or stale

Standalone (standard library only, imports nothing from the project). Metric names
follow docs/architecture.md; recording rules come from deploy/prometheus/rules/.
Two dashboards: "CLMLF sentiment overview" (per topic: stacked counts by label,
negative share against its 1h baseline band, volume, active trend alerts) and
"CLMLF pipeline health" (throughput, batch size, inference and end-to-end latency
percentiles, consumer lag, dead letters, image outcomes, queue depths, progress).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", instant: bool = False) -> dict[str, Any]:
    """One Prometheus query of a panel (refIds are assigned by :class:`Board`)."""
    t: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


@dataclass
class Panel:
    """A panel before layout: kind, title, queries, size and field options."""

    kind: str
    title: str
    targets: list[dict[str, Any]]
    width: int = 12
    height: int = 8
    unit: str = "short"
    description: str = ""
    stack: bool = False
    overrides: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    min: float | None = None
    max: float | None = None
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])


@dataclass
class Board:
    """Lays panels out left to right, top to bottom, on Grafana's 24-column grid."""

    uid: str
    title: str
    description: str
    tags: list[str]
    variables: list[dict[str, Any]]
    panels: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({
            "type": "row", "title": title, "id": len(self.panels) + 1, "collapsed": False,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self._y}, "panels": [],
        })
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_height
            self._x, self._row_height = 0, 0

    def add(self, panel: Panel) -> None:
        if self._x + panel.width > GRID_WIDTH:
            self._newline()
        grid = {"h": panel.height, "w": panel.width, "x": self._x, "y": self._y}
        self._x += panel.width
        self._row_height = max(self._row_height, panel.height)
        targets = [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(panel.targets)]
        steps = [{"color": color, "value": value} for value, color in panel.thresholds]
        defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}}
        if panel.min is not None:
            defaults["min"] = panel.min
        if panel.max is not None:
            defaults["max"] = panel.max
        if panel.kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line", "lineWidth": 1, "fillOpacity": 30 if panel.stack else 0,
                "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
                "showPoints": "never", "spanNulls": False,
            }
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}} if panel.kind == "timeseries" else {}
        options.update(panel.options)
        self.panels.append({
            "id": len(self.panels) + 1,
            "type": panel.kind,
            "title": panel.title,
            "description": panel.description,
            "datasource": DATASOURCE,
            "gridPos": grid,
            "targets": targets,
            "fieldConfig": {"defaults": defaults, "overrides": panel.overrides},
            "options": options,
        })

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": self.tags,
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "refresh": "30s",
            "schemaVersion": 39,
            "version": 1,
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": self.annotations},
            "panels": self.panels,
            "links": [{"title": "Runbooks (docs/alerts.md)", "type": "link", "url": "docs/alerts.md"}],
        }


def datasource_variable() -> dict[str, Any]:
    return {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
            "current": {"text": "Prometheus", "value": "prometheus"}, "hide": 0}


def query_variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*", "sort": 1,
        "current": {"text": "All", "value": "$__all"}, "hide": 0,
    }


def override_color(name: str, color: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}]
    props += [{"id": k, "value": v} for k, v in (extra or {}).items()]
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def sentiment_overview() -> Board:
    sel = 'topic=~"$topic"'
    board = Board(
        uid="clmlf-sentiment",
        title="CLMLF sentiment overview",
        description="Per-topic sentiment of the streaming monitor (processing-time view from Prometheus; "
        "event-time windows: clmlf-monitor query / the HTTP API).",
        tags=["clmlf", "sentiment"],
        variables=[datasource_variable(),
                   query_variable("topic", "Topic", "label_values(clmlf_posts_processed_total, topic)")],
        annotations=[{
            "name": "Sentiment alerts", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
            "expr": 'ALERTS{alertname=~"ClmlfNegativeShareSurge|ClmlfVolumeSpike|ClmlfTrendAlertFiring",'
                    'alertstate="firing"}',
            "titleFormat": "{{alertname}}", "textFormat": "{{topic}}", "step": "60s",
        }],
    )
    board.row("All topics")
    board.add(Panel("stat", "Posts per minute", [target("sum(:clmlf_posts_processed:rate5m) * 60", "posts/min")],
                    width=4, height=6, unit="short", description="All topics, 5-minute rate."))
    board.add(Panel("table", "Active trend alerts",
                    [target("max by (topic, kind) (clmlf_alert_active) == 1", instant=True)],
                    width=10, height=6, description="Trend alerts firing now (AlertEngine); details: "
                    "clmlf-monitor alerts or GET /v1/alerts.",
                    options={"showHeader": True}))
    board.add(Panel("bargauge", "Negative share, last 5m (top 10)",
                    [target(f"topk(10, topic:clmlf_negative_share:ratio5m{{{sel}}})", "{{topic}}", instant=True)],
                    width=10, height=6, unit="percentunit", min=0, max=1,
                    thresholds=[(None, "green"), (0.4, "orange"), (0.6, "red")],
                    options={"orientation": "horizontal", "displayMode": "gradient"}))
    board.row("Per topic")
    board.add(Panel("timeseries", "Posts per minute by label (stacked)",
                    [target(f"sum by (label) (rate(clmlf_posts_processed_total{{{sel}}}[{RATE}])) * 60", "{{label}}")],
                    width=12, stack=True, unit="short",
                    overrides=[override_color("positive", "green"), override_color("neutral", "blue"),
                               override_color("negative", "red")]))
    board.add(Panel(
        "timeseries", "Negative share vs 1h baseline",
        [
            target(f"topic:clmlf_negative_share:ratio5m{{{sel}}}", "{{topic}} last 5m"),
            target(f"topic:clmlf_negative_share:ratio1h_baseline{{{sel}}}", "{{topic}} baseline"),
            target(f"clamp_max(topic:clmlf_negative_share:ratio1h_baseline{{{sel}}} + 0.15, 1)",
                   "{{topic}} alert threshold"),
        ],
        width=12, unit="percentunit", min=0, max=1,
        description="Shaded band: from the 1h baseline up to the ClmlfNegativeShareSurge threshold (+15 points).",
        overrides=[{"matcher": {"id": "byRegexp", "options": ".*alert threshold"},
                    "properties": [{"id": "custom.fillBelowTo", "value": "baseline"},
                                   {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [4, 4]}},
                                   {"id": "custom.fillOpacity", "value": 15}]}],
    ))
    board.add(Panel("timeseries", "Volume per topic (posts/min) vs 1h baseline",
                    [target(f"topic:clmlf_posts_processed:rate5m{{{sel}}} * 60", "{{topic}}"),
                     target(f"topic:clmlf_posts_processed:rate1h_baseline{{{sel}}} * 60", "{{topic}} baseline")],
                    width=12))
    board.add(Panel("timeseries", "Share by label (5m)",
                    [target(f"topic_label:clmlf_posts_processed:rate5m{{{sel}}} / ignoring (label) group_left "
                            f"topic:clmlf_posts_processed:rate5m{{{sel}}}", "{{topic}} {{label}}")],
                    width=12, unit="percentunit", min=0, max=1))
    return board


def pipeline_health() -> Board:
    board = Board(
        uid="clmlf-pipeline",
        title="CLMLF pipeline health",
        description="Consumers of the streaming monitor: throughput, batching, latency, lag, failures.",
        tags=["clmlf", "pipeline"],
        variables=[datasource_variable(),
                   query_variable("instance", "Instance", "label_values(clmlf_model_info, instance)")],
    )
    inst = 'instance=~"$instance"'
    board.row("Flow")
    board.add(Panel("stat", "Posts/s", [target(f"sum(rate(clmlf_posts_processed_total{{{inst}}}[{RATE}]))")],
                    width=4, height=5, unit="reqps"))
    board.add(Panel("stat", "Consumer lag", [target(f"sum(clmlf_consumer_lag{{{inst}}})")], width=4, height=5,
                    thresholds=[(None, "green"), (1000, "orange"), (5000, "red")]))
    board.add(Panel("stat", "Seconds since progress",
                    [target(f"time() - max(clmlf_last_progress_timestamp_seconds{{{inst}}})")],
                    width=4, height=5, unit="s", thresholds=[(None, "green"), (60, "orange"), (300, "red")]))
    board.add(Panel("stat", "Assigned partitions", [target(f"sum(clmlf_assigned_partitions{{{inst}}})")],
                    width=4, height=5))
    board.add(Panel("stat", "Targets up", [target('sum(up{job=~"clmlf.*"})'), target('count(up{job=~"clmlf.*"})')],
                    width=4, height=5))
    board.add(Panel("table", "Model", [target(f"clmlf_model_info{{{inst}}}", instant=True)], width=4, height=5))
    board.row("Throughput and batching")
    board.add(Panel("timeseries", "Throughput by instance (posts/s)",
                    [target(f"sum by (instance) (rate(clmlf_posts_processed_total{{{inst}}}[{RATE}]))",
                            "{{instance}}")], width=12, unit="reqps", stack=True))
    board.add(Panel("timeseries", "Micro-batch size",
                    [target(f"histogram_quantile(0.5, sum by (le) (rate(clmlf_batch_size_bucket{{{inst}}}[{RATE}])))",
                            "p50"),
                     target(f"histogram_quantile(0.95, sum by (le) (rate(clmlf_batch_size_bucket{{{inst}}}[{RATE}])))",
                            "p95"),
                     target(":clmlf_batch_size:mean5m", "mean (5m)")], width=12))
    board.row("Latency")
    board.add(Panel("timeseries", "Inference time per batch",
                    [target(":clmlf_inference_seconds:p50_5m", "p50"), target(":clmlf_inference_seconds:p95_5m", "p95"),
                     target(":clmlf_inference_seconds:p99_5m", "p99")], width=12, unit="s"))
    board.add(Panel("timeseries", "End-to-end latency (stored - event / ingest time)",
                    [target("source:clmlf_end_to_end_latency_seconds:p50_5m", "p50 {{source}}"),
                     target("source:clmlf_end_to_end_latency_seconds:p95_5m", "p95 {{source}}"),
                     target("source:clmlf_end_to_end_latency_seconds:p99_5m", "p99 {{source}}")],
                    width=12, unit="s"))
    board.row("Backlog and failures")
    board.add(Panel("timeseries", "Consumer lag by partition",
                    [target(f"sum by (topic, partition) (clmlf_consumer_lag{{{inst}}})", "{{topic}}/{{partition}}")],
                    width=12, stack=True))
    board.add(Panel("timeseries", "Internal queue depths",
                    [target(f"sum by (queue) (clmlf_queue_depth{{{inst}}})", "{{queue}}")], width=12))
    board.add(Panel("timeseries", "Dead letters by reason (records/s)",
                    [target(f"sum by (reason) (rate(clmlf_dlq_total{{{inst}}}[{RATE}]))", "{{reason}}"),
                     target(":clmlf_dlq:ratio5m", "share of records")], width=8, unit="short"))
    board.add(Panel("timeseries", "Image outcomes (posts/s)",
                    [target(f"sum by (outcome) (rate(clmlf_image_fetch_total{{{inst}}}[{RATE}]))", "{{outcome}}")],
                    width=8, stack=True,
                    overrides=[override_color("used", "green"), override_color("none", "text")]))
    board.add(Panel("timeseries", "Errors (per s)",
                    [target(f"sum by (sink) (rate(clmlf_sink_errors_total{{{inst}}}[{RATE}]))", "sink {{sink}}"),
                     target(f"sum(rate(clmlf_commit_failures_total{{{inst}}}[{RATE}]))", "commit failures"),
                     target(f"sum by (kind) (rate(clmlf_out_of_window_events_total{{{inst}}}[{RATE}]))",
                            "out of window: {{kind}}")], width=8))
    board.row("Memory budgets and positions")
    board.add(Panel("timeseries", "In-flight posts, bytes held (paused at --max-in-flight-bytes)",
                    [target(f"sum by (instance) (clmlf_in_flight_bytes{{{inst}}})", "{{instance}}")],
                    width=8, unit="bytes"))
    board.add(Panel("timeseries", "Pixels being decoded (decode budget in use)",
                    [target(f"sum by (instance) (clmlf_image_decode_pixels{{{inst}}})", "{{instance}}")],
                    width=8, unit="short"))
    board.add(Panel("timeseries", "Offset resets (position beyond a partition's end, e.g. recreated topic)",
                    [target(f"sum by (topic, partition) (increase(clmlf_offset_resets_total{{{inst}}}[{RATE}]))",
                            "{{topic}}/{{partition}}")], width=8, unit="short"))
    return board


DASHBOARDS = {"clmlf-sentiment.json": sentiment_overview, "clmlf-pipeline.json": pipeline_health}


def render(builder: Any) -> str:
    return json.dumps(builder().to_json(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) the CLMLF Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a dashboard file is missing or stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory (default %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, builder in DASHBOARDS.items():
        path = args.out / name
        text = render(builder)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print(f"stale dashboards: {', '.join(stale)} (run deploy/grafana/build_dashboards.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
