"""Kubernetes manifests: schema validity, pod security, probes and drain timing, config vs. the real CLI.

The security properties are checked here directly (and by checkov in test_deploy_scanners.py where the
tool is installed), on the raw base and on both rendered overlays.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_testlib import app_env_vars, command_settings
from k8s_testlib import kustomize

from clmlf.settings import parse_duration

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "k8s"
K8S_VERSION = "1.31.0"
SECRET_KEY_PATTERN = re.compile(r"PASSWORD|TOKEN|SECRET|USERNAME|WEBHOOK|REDIS_URL|CREDENTIAL", re.I)
# Variables that configure libraries, not the app.
LIBRARY_ENV = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS"}






def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def _find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]




@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(K8S / "base")


@pytest.fixture(scope="module", params=["base", "overlays/cpu", "overlays/gpu"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(K8S / request.param)


@pytest.fixture(scope="module")
def secret_template() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _docs(K8S / "secret.template.yaml")}


# ------------------------------------------------------------------ parse and validate

def test_every_manifest_parses_and_core_objects_validate() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 15
    validated = 0
    for path in files:
        docs = _docs(path)
        assert docs, f"{path} is empty"
        for doc in docs:
            assert isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc, path
            group = doc["apiVersion"].split("/")[0]
            if "." in group and not group.endswith(".k8s.io"):
                continue  # CRDs (KEDA, Prometheus operator, Strimzi): test_k8s_crds.py
            if doc["kind"] in ("Kustomization", "Component"):
                continue
            if path.parent.name in ("cpu", "gpu"):
                continue  # partial patches; validated after rendering
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            validated += 1
    assert validated >= 15


def test_base_objects_are_complete(base: list[dict[str, Any]]) -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in base}
    for expected in [("Namespace", "clmlf"), ("ServiceAccount", "clmlf-monitor"), ("ConfigMap", "clmlf-config"),
                     ("Deployment", "clmlf-consumer"), ("Deployment", "clmlf-api"), ("Deployment", "clmlf-alerter"),
                     ("Service", "clmlf-api"), ("Service", "clmlf-consumer-metrics"),
                     ("PodDisruptionBudget", "clmlf-consumer"), ("NetworkPolicy", "default-deny")]:
        assert expected in kinds
    namespace = _find(base, "Namespace", "clmlf")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert _find(base, "ServiceAccount", "clmlf-monitor")["automountServiceAccountToken"] is False


# ------------------------------------------------------------------ pod security

def _deployments(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    deployments = [r for r in resources if r["kind"] == "Deployment"]
    assert len(deployments) == 3
    return deployments


def test_pods_meet_the_restricted_security_profile(rendered: list[dict[str, Any]]) -> None:
    for deployment in _deployments(rendered):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["serviceAccountName"] == "clmlf-monitor", name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(key), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        mounted = set()
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"], name
            assert sc.get("privileged") is False and sc["runAsNonRoot"] is True, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
            mounted |= {m["mountPath"] for m in container.get("volumeMounts", [])}
            assert not re.search(r":latest$", container["image"]) and ":" in container["image"], name
        # readOnlyRootFilesystem needs writable scratch space.
        assert "/tmp" in mounted, name
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert "emptyDir" in tmp and tmp["emptyDir"]["sizeLimit"], name


def test_every_deployment_has_probes(rendered: list[dict[str, Any]]) -> None:
    for deployment in _deployments(rendered):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"] for p in container["ports"]}
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, (deployment["metadata"]["name"], probe)


def test_consumer_probes_drain_and_rollout(base: list[dict[str, Any]]) -> None:
    deployment = _find(base, "Deployment", "clmlf-consumer")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    grace = parse_duration(next(e["value"] for e in container["env"] if e["name"] == "CLMLF_SHUTDOWN_GRACE"))
    # The kubelet's grace period covers the preStop hook, the drain and the final commit, with margin.
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + grace + 10
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    # No surge member (it could get no partition, never turn Ready and stall the rollout).
    assert rolling == {"maxUnavailable": 1, "maxSurge": 0}


def test_api_drains_connections_before_exit(base: list[dict[str, Any]]) -> None:
    deployment = _find(base, "Deployment", "clmlf-api")
    pod = deployment["spec"]["template"]["spec"]
    sleep = float(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    assert sleep >= 5 and pod["terminationGracePeriodSeconds"] > sleep
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# ------------------------------------------------------------------ selectors and ports agree

def test_disruption_budgets_allow_one_consumer_down_and_never_block_on_unready_pods(
        base: list[dict[str, Any]]) -> None:
    consumer = _find(base, "PodDisruptionBudget", "clmlf-consumer")["spec"]
    assert consumer["maxUnavailable"] == 1
    assert _find(base, "PodDisruptionBudget", "clmlf-api")["spec"]["minAvailable"] == 1
    for pdb in (r for r in base if r["kind"] == "PodDisruptionBudget"):
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_services_and_pdbs_select_existing_pods(base: list[dict[str, Any]]) -> None:
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in _deployments(base)]
    for deployment in _deployments(base):
        assert deployment["spec"]["selector"]["matchLabels"].items() <= \
            deployment["spec"]["template"]["metadata"]["labels"].items()
    for resource in base:
        if resource["kind"] == "Service":
            selector = resource["spec"]["selector"]
        elif resource["kind"] == "PodDisruptionBudget":
            selector = resource["spec"]["selector"]["matchLabels"]
        else:
            continue
        assert sum(selector.items() <= labels.items() for labels in pod_labels) == 1, resource["metadata"]["name"]


def test_ports_agree_between_configmap_containers_and_services(base: list[dict[str, Any]]) -> None:
    config = _find(base, "ConfigMap", "clmlf-config")["data"]
    consumer = _find(base, "Deployment", "clmlf-consumer")["spec"]["template"]["spec"]["containers"][0]
    assert consumer["ports"][0]["containerPort"] == int(config["CLMLF_METRICS_PORT"])
    metrics = _find(base, "Service", "clmlf-consumer-metrics")
    assert metrics["spec"]["ports"][0]["targetPort"] == consumer["ports"][0]["name"]
    api = _find(base, "Deployment", "clmlf-api")["spec"]["template"]["spec"]["containers"][0]
    api_env = {e["name"]: e["value"] for e in api["env"]}
    assert api["ports"][0]["containerPort"] == int(api_env["CLMLF_API_PORT"])
    assert api_env["CLMLF_API_HOST"] == "0.0.0.0"


# ------------------------------------------------------------------ configuration and secrets

def test_configmap_holds_no_secrets(base: list[dict[str, Any]]) -> None:
    data = _find(base, "ConfigMap", "clmlf-config")["data"]
    for key, value in data.items():
        assert not SECRET_KEY_PATTERN.search(key), key
        assert "@" not in value, key  # no credentials embedded in URLs


def test_every_setting_is_one_the_app_reads(base: list[dict[str, Any]], secret_template: dict[str, Any]) -> None:
    known = app_env_vars() | LIBRARY_ENV
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CLMLF_METRICS_PORT"} <= known  # the scan works
    names = set(_find(base, "ConfigMap", "clmlf-config")["data"])
    names |= set(secret_template["clmlf-credentials"]["stringData"])
    for deployment in _deployments(base) + _deployments(kustomize(K8S / "overlays/gpu")):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names |= {e["name"] for e in container.get("env", [])}
    assert names - known == set()


def test_secret_template_has_placeholders_only_and_is_never_applied(secret_template: dict[str, Any]) -> None:
    assert set(secret_template) == {"clmlf-credentials", "clmlf-kafka-ca", "clmlf-keda-kafka"}
    for secret in secret_template.values():
        kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
        for key, value in secret["stringData"].items():
            assert value in ("", "none", "disable") or "CHANGE_ME" in value, (key, value)
    credentials = secret_template["clmlf-credentials"]["stringData"]
    assert {"REDIS_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "CLMLF_API_TOKEN"} <= set(credentials)
    for kustomization in K8S.rglob("kustomization.yaml"):
        assert "secret.template" not in kustomization.read_text(), kustomization


def test_pods_read_credentials_from_the_secret(base: list[dict[str, Any]]) -> None:
    for deployment in _deployments(base):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        refs = {next(iter(ref)): ref[next(iter(ref))]["name"] for ref in container["envFrom"]}
        assert refs == {"configMapRef": "clmlf-config", "secretRef": "clmlf-credentials"}
        assert all(not SECRET_KEY_PATTERN.search(e["name"]) for e in container.get("env", []))


def _container_environment(resources: list[dict[str, Any]], deployment: str,
                           secrets: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    env = dict(_find(resources, "ConfigMap", "clmlf-config")["data"])
    env.update({k: v for k, v in secrets["clmlf-credentials"]["stringData"].items()})
    container = _find(resources, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env, container["args"]


@pytest.mark.parametrize("overlay", ["overlays/cpu", "overlays/gpu"])
def test_consumer_settings_are_accepted_by_the_real_cli(overlay: str, secret_template: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.cli import build_parser
    from consumers.config import run_config_from_args

    resources = kustomize(K8S / overlay)
    env, args = _container_environment(resources, "clmlf-consumer", secret_template)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser = build_parser()
    parsed = parser.parse_args(args)
    assert parsed.command == "run"
    config = run_config_from_args(parsed, parser)
    container = _find(resources, "Deployment", "clmlf-consumer")["spec"]["template"]["spec"]["containers"][0]
    assert config.metrics_port == container["ports"][0]["containerPort"]
    assert config.device == ("cuda" if overlay.endswith("gpu") else "cpu")
    assert config.topic == env["KAFKA_TOPIC"] and config.group == env["KAFKA_GROUP_ID"]
    assert config.allow_private_images is False


def test_api_and_alerter_settings_are_accepted_by_the_real_cli(base: list[dict[str, Any]],
                                                               secret_template: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.cli import build_parser

    for name, command in (("clmlf-api", "serve"), ("clmlf-alerter", "alerter")):
        env, args = _container_environment(base, name, secret_template)
        with monkeypatch.context() as patched:
            for key, value in env.items():
                patched.setenv(key, value)
            parser = build_parser()
            namespace = parser.parse_args(args)
            assert namespace.command == command
            parsed = command_settings(parser, namespace)
        container = _find(base, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        port = parsed.port if command == "serve" else parsed.metrics_port
        assert port == container["ports"][0]["containerPort"]


# ------------------------------------------------------------------ network policy

def _policy(base: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return _find(base, "NetworkPolicy", name)["spec"]


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {p["port"] for rule in rules for p in rule.get("ports", [])}


def test_network_policy_default_deny_and_allow_lists(base: list[dict[str, Any]]) -> None:
    deny = _policy(base, "default-deny")
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    consumer = _policy(base, "clmlf-consumer")
    assert _ports(consumer["ingress"]) == {9100}
    assert all(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
               for rule in consumer["ingress"] for peer in rule["from"])
    assert _ports(consumer["egress"]) == {53, 9092, 6379, 80, 443}

    api = _policy(base, "clmlf-api")
    assert _ports(api["ingress"]) == {8080}
    assert _ports(api["egress"]) == {53, 6379}

    alerter = _policy(base, "clmlf-alerter")
    assert _ports(alerter["ingress"]) == {9101}


def test_image_egress_cannot_reach_private_or_metadata_addresses(base: list[dict[str, Any]]) -> None:
    consumer = _policy(base, "clmlf-consumer")
    web = [rule for rule in consumer["egress"] if _ports([rule]) == {80, 443}]
    assert len(web) == 1
    blocks = [peer["ipBlock"] for peer in web[0]["to"]]
    assert {b["cidr"] for b in blocks} == {"0.0.0.0/0", "::/0"}
    excluded = [ipaddress.ip_network(c) for b in blocks for c in b["except"]]
    for address in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1",
                    "fd00::1", "fe80::1", "::1", "::ffff:10.0.0.1"):
        assert any(ipaddress.ip_address(address) in net for net in excluded), address
    for public in ("93.184.216.34", "2606:2800:220:1::1"):
        assert not any(ipaddress.ip_address(public) in net for net in excluded), public


# ------------------------------------------------------------------ scaling bounds

def test_autoscaler_bounds_respect_partitions_and_match_the_config(base: list[dict[str, Any]]) -> None:
    config = _find(base, "ConfigMap", "clmlf-config")["data"]
    topics = {t["spec"]["topicName"]: t for t in _docs(K8S / "extras/strimzi/topics.yaml")}
    partitions = topics[config["KAFKA_TOPIC"]]["spec"]["partitions"]
    scaled = _find(_docs(K8S / "components/keda/scaledobject.yaml"), "ScaledObject", "clmlf-consumer")
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert trigger["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert trigger["consumerGroup"] == config["KAFKA_GROUP_ID"]
    assert trigger["topic"] == config["KAFKA_TOPIC"]
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    hpa = _find(_docs(K8S / "components/hpa/hpa.yaml"), "HorizontalPodAutoscaler", "clmlf-consumer")
    assert hpa["spec"]["maxReplicas"] <= partitions
    assert _find(base, "Deployment", "clmlf-consumer")["spec"]["replicas"] <= partitions


def test_configmap_never_blanks_a_setting_the_image_provides(base: list[dict[str, Any]]) -> None:
    """envFrom beats the image's ENV: an empty CLMLF_CHECKPOINT would hide a baked checkpoint (embedded model served)."""
    dockerfiles = [(REPO / "deploy/docker" / name).read_text() for name in ("Dockerfile.cpu", "Dockerfile.cuda")]
    data = _find(base, "ConfigMap", "clmlf-config")["data"]
    blanked = {key for key, value in data.items() if value == "" and any(f"{key}=" in text for text in dockerfiles)}
    assert blanked == set()
    assert all("CLMLF_CHECKPOINT=${CHECKPOINT_DIR:+/models/clmlf}" in text for text in dockerfiles)
