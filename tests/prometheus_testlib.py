"""Helpers for the Prometheus/Grafana tests: collect PromQL expressions and the metric names in them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"

# Series Prometheus itself provides (not exported by the app).
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with values Prometheus accepts."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def promql_metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (label matchers, groupings, ranges, strings,
    numbers, durations and function names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\boffset\s+\w+", "", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(1)
        if text[match.end():].lstrip().startswith("("):
            continue  # a function call
        if name.lower() in _KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        names.add(name)
    return names


def rule_documents() -> list[dict]:
    return [yaml.safe_load(p.read_text()) for p in sorted(RULES_DIR.glob("*.yml"))]


def rule_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every recording and alert rule."""
    return [(rule.get("record") or rule.get("alert"), rule["expr"])
            for doc in rule_documents() for group in doc["groups"] for rule in group["rules"]]


def recording_rule_names() -> set[str]:
    return {rule["record"] for doc in rule_documents() for group in doc["groups"]
            for rule in group["rules"] if "record" in rule}


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every panel target, variable query and annotation of every dashboard."""
    found = []
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                found.append((f"{name}: {panel['title']} {t['refId']}", t["expr"]))
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                inner = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
                found.append((f"{name}: variable {var['name']}", inner.group(1) if inner else var["query"]["query"]))
        for ann in board["annotations"]["list"]:
            found.append((f"{name}: annotation {ann['name']}", ann["expr"]))
    return found


def architecture_metrics() -> set[str]:
    """Metric names of the table in docs/architecture.md (the names the app exports)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    return set(re.findall(r"^\| `(clmlf_[a-z0-9_]+)` \|", text, flags=re.M))


def base_metric(name: str) -> str:
    """``x_bucket`` / ``x_sum`` / ``x_count`` -> ``x`` (histogram and summary series)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)
