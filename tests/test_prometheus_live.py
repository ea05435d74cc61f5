"""Real Prometheus scraping a real `clmlf-monitor run`: every PromQL expression of the rules and
dashboards evaluates without error and names only metrics the app exports (or recording rules)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from pipeline_testlib import Member, create_topic, make_posts, produce, wait_until
from prometheus_testlib import (
    PROMETHEUS_SERIES,
    RULES_DIR,
    base_metric,
    dashboard_expressions,
    grafana_to_promql,
    promql_metric_names,
    recording_rule_names,
    rule_expressions,
)

from consumers.local_infra import free_port, wait_for_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus not installed (apt install prometheus)"),
]


def exported_names(metrics_text: str) -> set[str]:
    """Sample names the app can export: every TYPE'd family with its suffixed series."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names |= {name.removesuffix("_total") + "_total", name.removesuffix("_total")}
            elif kind in ("histogram", "summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


def fast_rule_files(dest: Path) -> list[str]:
    """The project's rule files with a 1s evaluation interval, so the test need not wait 30s."""
    paths = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            group["interval"] = "1s"
        out = dest / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(out))
    return paths


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus (free port, temp storage); yields a function that points it at a target."""
    procs: list[subprocess.Popen] = []

    def start(metrics_port: int) -> str:
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": fast_rule_files(tmp_path),
            "scrape_configs": [{"job_name": "clmlf-consumer",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
        procs.append(subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        wait_for_port("127.0.0.1", port, 30, procs[-1])
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def instant_query(base: str, expr: str) -> dict:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    return response.json()


def test_rules_and_dashboards_against_a_live_consumer(broker, redis_server, tiny_checkpoint, unique_name,
                                                      tmp_path, prometheus):
    topic = f"posts-{unique_name}"
    create_topic(broker, topic, 2)
    posts = make_posts(24, prefix="a", topics=("acme",)) + make_posts(12, prefix="g", topics=("globex",))
    produce(broker.bootstrap, topic, posts)
    produce(broker.bootstrap, topic, [b"{not json", b'{"text": "no id"}'])  # two dead letters
    metrics_port = free_port()
    member = Member(tmp_path, "member", bootstrap=broker.bootstrap, topic=topic, group=f"g-{unique_name}",
                    redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                    extra=["--metrics-port", str(metrics_port)])
    try:
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

        def processed_all() -> bool:
            try:
                text = httpx.get(metrics_url, timeout=2).text
            except httpx.HTTPError:
                return False
            total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith("clmlf_posts_processed_total{"))
            return total >= len(posts)

        wait_until(processed_all, 120, f"the member to process the posts; log:\n{member.log()[-2000:]}")
        exported = exported_names(httpx.get(metrics_url, timeout=5).text)

        base = prometheus(metrics_port)
        wait_until(lambda: instant_query(base, 'up{job="clmlf-consumer"} == 1')["data"]["result"], 60,
                   "Prometheus to scrape the member")
        # More posts while Prometheus watches, so the rates (and the shares built on them) are non-zero.
        produce(broker.bootstrap, topic, make_posts(24, prefix="b", topics=("acme",)))
        share_query = 'topic:clmlf_negative_share:ratio5m{topic="acme"}'
        wait_until(lambda: instant_query(base, share_query)["data"]["result"], 90,
                   "the recording rules to produce the negative share of a topic")

        groups = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = {rule["name"] for group in groups for rule in group["rules"]}
        assert loaded == {where for where, _ in rule_expressions()}
        broken = [(rule["name"], rule.get("lastError")) for group in groups for rule in group["rules"]
                  if rule.get("health") == "err"]
        assert broken == []

        recorded = recording_rule_names()
        failures = []
        for where, expr in rule_expressions() + dashboard_expressions():
            body = instant_query(base, grafana_to_promql(expr))
            if body.get("status") != "success":
                failures.append(f"{where}: {body.get('error')}")
            for name in promql_metric_names(expr):
                if ":" in name:
                    ok = name in recorded
                else:
                    ok = name in exported or base_metric(name) in exported or name in PROMETHEUS_SERIES
                if not ok:
                    failures.append(f"{where}: {name} is neither exported by the app nor a recording rule")
        assert failures == []

        share = instant_query(base, share_query)["data"]["result"]
        assert 0.0 <= float(share[0]["value"][1]) <= 1.0
        dlq = instant_query(base, "sum(clmlf_dlq_total)")["data"]["result"]
        assert dlq and float(dlq[0]["value"][1]) == 2
    finally:
        member.stop()
