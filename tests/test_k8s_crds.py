"""Custom resources (KEDA, Prometheus operator, Grafana sidecar, Strimzi): required fields and references,
and the generated PrometheusRule / dashboard ConfigMap being exact copies of deploy/."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_testlib import kustomize

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sync_mod = _load("k8s_sync_for_crds", K8S / "sync_from_deploy.py")


@pytest.fixture(scope="module")
def cpu() -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays/cpu")


def _find(resources: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]


def _require(obj: dict[str, Any], *paths: str) -> None:
    for path in paths:
        node: Any = obj
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"{obj['kind']}: missing {path}"
            node = node[part]
        assert node not in (None, "", [], {}), f"{obj['kind']}: empty {path}"


# ------------------------------------------------------------------ KEDA

def test_scaled_object_targets_the_consumer_and_has_a_kafka_trigger(cpu: list[dict[str, Any]]) -> None:
    (scaled,) = _find(cpu, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    _require(scaled, "metadata.name", "metadata.namespace", "spec.scaleTargetRef.name", "spec.triggers")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "clmlf-consumer")
    assert _find(cpu, "Deployment", target["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
        assert isinstance(trigger["metadata"][key], str) and trigger["metadata"][key], key
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    (auth,) = _find(cpu, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} <= {"sasl", "tls", "username", "password",
                                                                          "ca", "cert", "key"}
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300  # no rebalance storms


def test_hpa_component_is_a_working_alternative(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s")  # kustomize takes paths relative to the overlay, inside its tree
    overlay = tmp_path / "k8s" / "overlays" / "hpa"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["../../base"], "components": ["../../components/hpa"],
    }))
    resources = kustomize(overlay)
    (hpa,) = _find(resources, "HorizontalPodAutoscaler")
    kubernetes_validate.validate(hpa, "1.31.0", strict=True)
    assert hpa["spec"]["scaleTargetRef"]["name"] == "clmlf-consumer"
    assert hpa["spec"]["metrics"][0]["external"]["metric"]["name"] == "clmlf_consumer_lag_total"
    (consumer,) = _find(resources, "Deployment", "clmlf-consumer")
    assert "replicas" not in consumer["spec"]
    assert not _find(resources, "ScaledObject")


# ------------------------------------------------------------------ Prometheus operator

def test_service_monitor_selects_the_metrics_services(cpu: list[dict[str, Any]]) -> None:
    (monitor,) = _find(cpu, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    _require(monitor, "spec.selector.matchLabels", "spec.endpoints")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [s for s in _find(cpu, "Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in services} == {"clmlf-consumer-metrics", "clmlf-alerter-metrics"}
    for service in services:
        assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
        assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]].startswith("clmlf-")
    # Same job names as the compose Prometheus, so one set of rules and dashboards fits both.
    compose_jobs = {job["job_name"] for job in
                    yaml.safe_load((REPO / "deploy/compose/prometheus.yml").read_text())["scrape_configs"]}
    assert {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in services} <= compose_jobs


def test_prometheus_rule_is_well_formed(cpu: list[dict[str, Any]]) -> None:
    (rule,) = _find(cpu, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert isinstance(rule["spec"]["groups"], list)
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"], group
        for item in group["rules"]:
            assert ("alert" in item) != ("record" in item) and item["expr"], item


def test_generated_copies_equal_what_the_sync_script_makes() -> None:
    for rel, text in sync_mod.generated_files(REPO).items():
        assert (REPO / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run k8s/sync_from_deploy.py"
    done = subprocess.run([sys.executable, str(K8S / "sync_from_deploy.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_prometheus_rule_carries_exactly_the_deploy_rules(cpu: list[dict[str, Any]]) -> None:
    sources = sorted((REPO / "deploy/prometheus/rules").glob("*.yml"))
    expected = [g for path in sources for g in yaml.safe_load(path.read_text())["groups"]]
    (rule,) = _find(cpu, "PrometheusRule")
    assert rule["spec"]["groups"] == expected


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_rule_groups_pass_promtool(cpu: list[dict[str, Any]], tmp_path: Path) -> None:
    (rule,) = _find(cpu, "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_dashboards_configmap_matches_the_sources(cpu: list[dict[str, Any]]) -> None:
    (configmap,) = _find(cpu, "ConfigMap", "clmlf-grafana-dashboards")
    kubernetes_validate.validate(configmap, "1.31.0", strict=True)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    sources = {p.name: p.read_text(encoding="utf-8")
               for p in sorted((REPO / "deploy/grafana/dashboards").glob("*.json"))}
    assert configmap.get("data", {}) == sources
    for text in sources.values():
        json.loads(text)


def test_sync_script_rejects_broken_sources(tmp_path: Path) -> None:
    rules = tmp_path / "deploy/prometheus/rules"
    rules.mkdir(parents=True)
    (tmp_path / "deploy/grafana/dashboards").mkdir(parents=True)
    (rules / "a.yml").write_text("groups:\n  - name: g\n    rules: []\n")
    (rules / "b.yml").write_text("groups:\n  - name: g\n    rules: []\n")
    with pytest.raises(sync_mod.SyncError, match="defined twice"):
        sync_mod.generated_files(tmp_path)
    (rules / "b.yml").write_text("not_groups: 1\n")
    with pytest.raises(sync_mod.SyncError, match="needs a 'groups' list"):
        sync_mod.generated_files(tmp_path)
    (rules / "b.yml").unlink()
    (tmp_path / "deploy/grafana/dashboards/d.json").write_text("{not json")
    with pytest.raises(sync_mod.SyncError, match="not JSON"):
        sync_mod.generated_files(tmp_path)


def test_sync_check_reports_stale_files(tmp_path: Path) -> None:
    (tmp_path / "deploy/prometheus/rules").mkdir(parents=True)
    (tmp_path / "deploy/grafana/dashboards").mkdir(parents=True)
    (tmp_path / "k8s/components/monitoring").mkdir(parents=True)
    script = str(K8S / "sync_from_deploy.py")
    stale = subprocess.run([sys.executable, script, "--check", "--repo", str(tmp_path)],
                           capture_output=True, text=True, check=False)
    assert stale.returncode == 1 and "stale" in stale.stderr
    write = subprocess.run([sys.executable, script, "--repo", str(tmp_path)], capture_output=True, text=True,
                           check=False)
    assert write.returncode == 0
    fresh = subprocess.run([sys.executable, script, "--check", "--repo", str(tmp_path)],
                           capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stderr


# ------------------------------------------------------------------ Strimzi (optional extras)

def test_strimzi_cluster_and_topics() -> None:
    resources = kustomize(K8S / "extras/strimzi")
    (kafka,) = _find(resources, "Kafka")
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"] == {"strimzi.io/node-pools": "enabled", "strimzi.io/kraft": "enabled"}
    _require(kafka, "spec.kafka.version", "spec.kafka.listeners")
    assert "topicOperator" in kafka["spec"]["entityOperator"]  # KafkaTopic objects need it
    (pool,) = _find(resources, "KafkaNodePool")
    _require(pool, "spec.replicas", "spec.roles", "spec.storage.type")
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    cluster = kafka["metadata"]["name"]
    for topic in _find(resources, "KafkaTopic") + [pool]:
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    topics = {t["spec"]["topicName"]: t["spec"] for t in _find(resources, "KafkaTopic")}
    assert {"posts", "posts.dlq"} <= set(topics)
    for spec in topics.values():
        assert spec["partitions"] >= 1 and 1 <= spec["replicas"] <= pool["spec"]["replicas"]
        assert spec["config"]["min.insync.replicas"] < spec["replicas"]
    # The bootstrap address the ConfigMap uses is the one Strimzi creates for this cluster.
    config = _find(kustomize(K8S / "base"), "ConfigMap", "clmlf-config")[0]["data"]
    plain = next(listener for listener in kafka["spec"]["kafka"]["listeners"] if not listener["tls"])
    expected = f"{cluster}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc:{plain['port']}"
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == expected
