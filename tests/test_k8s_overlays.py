"""The overlays as users apply them (``kubectl kustomize k8s/overlays/<name>``): valid Kubernetes objects,
one namespace, registry images, the GPU overlay's scheduling and the CPU overlay's lack of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from k8s_testlib import kustomize, pod_containers

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.31.0"
OVERLAYS = ("cpu", "gpu")


def _by_kind_name(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} matches"
    return matches[0]


# ------------------------------------------------------------------ the repository's overlays

@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, kustomize(REPO / "k8s" / "overlays" / request.param)


def test_overlay_core_objects_validate_against_kubernetes_schema(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    core = [r for r in resources if "keda.sh" not in r["apiVersion"] and "coreos.com" not in r["apiVersion"]]
    assert {r["kind"] for r in core} >= {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                                        "PodDisruptionBudget", "NetworkPolicy"}
    for resource in core:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


def test_overlay_puts_everything_in_one_namespace(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == "clmlf", resource["metadata"]["name"]
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "clmlf-monitor"


def test_overlay_images_point_at_the_registry(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, resources = overlay
    images = {c["name"]: c["image"] for r in resources for c in pod_containers(r)}
    assert images["api"].endswith(":0.1.0-cpu") and images["alerter"].endswith(":0.1.0-cpu")
    assert images["consumer"].endswith(f":0.1.0-{'cuda' if name == 'gpu' else 'cpu'}")
    assert all(image.startswith("registry.example.com/") for image in images.values())


def test_autoscaler_owns_consumer_replicas(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    assert "replicas" not in _by_kind_name(resources, "Deployment", "clmlf-consumer")["spec"]
    assert _by_kind_name(resources, "Deployment", "clmlf-api")["spec"]["replicas"] >= 2


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes() -> None:
    resources = kustomize(REPO / "k8s/overlays/gpu")
    pod = _by_kind_name(resources, "Deployment", "clmlf-consumer")["spec"]["template"]["spec"]
    consumer = pod["containers"][0]
    assert consumer["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert consumer["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "CLMLF_DEVICE", "value": "cuda"} in consumer["env"]
    # The patch merged into the base container instead of replacing it: probes and mounts survive.
    assert consumer["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {m["mountPath"] for m in consumer["volumeMounts"]} >= {"/tmp"}
    for name in ("clmlf-api", "clmlf-alerter"):
        other = _by_kind_name(resources, "Deployment", name)["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in str(other)
    scaled = _by_kind_name(resources, "ScaledObject", "clmlf-consumer")
    assert scaled["spec"]["maxReplicaCount"] == 4


def test_cpu_overlay_has_no_gpu() -> None:
    resources = kustomize(REPO / "k8s/overlays/cpu")
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(resources)
    consumer = _by_kind_name(resources, "Deployment", "clmlf-consumer")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CLMLF_DEVICE", "value": "cpu"} in consumer["env"]
