"""The kustomize-subset renderer (k8s/render.py): its semantics on small inputs, and the real overlays."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.31.0"
OVERLAYS = ("cpu", "gpu")
KUBECTL = shutil.which("kubectl")


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_mod = _load("k8s_render", REPO / "k8s" / "render.py")


def _write(directory: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump_all(
            content if isinstance(content, list) else [content], sort_keys=False)
        path.write_text(text, encoding="utf-8")
    return directory


def _deployment(name: str = "web", image: str = "app:1.0") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                {"name": "main", "image": image, "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "sidecar:2"},
            ]}},
        },
    }


def _kustomization(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def _by_kind_name(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} matches"
    return matches[0]


# ------------------------------------------------------------------ semantics on small inputs

def test_namespace_labels_and_images_transformers(tmp_path: Path) -> None:
    _write(tmp_path, {
        "kustomization.yaml": _kustomization(
            resources=["deploy.yaml", "ns.yaml"], namespace="prod",
            labels=[{"pairs": {"team": "ml"}, "includeSelectors": False}],
            commonAnnotations={"owner": "ops"},
            images=[{"name": "app", "newName": "reg.example/app", "newTag": "2.0"}],
        ),
        "deploy.yaml": _deployment(),
        "ns.yaml": {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}},
    })
    resources = render_mod.render(tmp_path)
    assert resources[0]["kind"] == "Namespace"  # namespaces first, as kustomize orders them
    deploy = _by_kind_name(resources, "Deployment", "web")
    assert deploy["metadata"]["namespace"] == "prod"
    assert "namespace" not in resources[0]["metadata"]  # cluster-scoped
    assert deploy["metadata"]["labels"] == {"team": "ml"}
    assert deploy["spec"]["selector"]["matchLabels"] == {"app": "web"}  # includeSelectors: false
    assert deploy["metadata"]["annotations"] == {"owner": "ops"}
    images = [c["image"] for c in deploy["spec"]["template"]["spec"]["containers"]]
    assert images == ["reg.example/app:2.0", "sidecar:2"]


def test_common_labels_reach_selectors_and_templates(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": _kustomization(resources=["d.yaml"], commonLabels={"tier": "x"}),
                      "d.yaml": _deployment()})
    deploy = render_mod.render(tmp_path)[0]
    assert deploy["spec"]["selector"]["matchLabels"] == {"app": "web", "tier": "x"}
    assert deploy["spec"]["template"]["metadata"]["labels"] == {"app": "web", "tier": "x"}


def test_image_digest_replaces_tag(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    _write(tmp_path, {"kustomization.yaml": _kustomization(
        resources=["d.yaml"], images=[{"name": "app", "digest": digest}]), "d.yaml": _deployment()})
    container = render_mod.render(tmp_path)[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"app@{digest}"


def test_strategic_merge_patch_merges_containers_and_env_by_name(tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": None, "template": {"spec": {
            "nodeSelector": {"gpu": "yes"},
            "containers": [{"name": "main", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}],
                            "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        }}},
    }
    _write(tmp_path, {"kustomization.yaml": _kustomization(resources=["d.yaml"], patches=[{"path": "p.yaml"}]),
                      "d.yaml": _deployment(), "p.yaml": patch})
    deploy = render_mod.render(tmp_path)[0]
    spec = deploy["spec"]["template"]["spec"]
    assert "replicas" not in deploy["spec"]  # null deletes
    assert spec["nodeSelector"] == {"gpu": "yes"}
    main, side = spec["containers"]
    assert (main["name"], side["name"]) == ("main", "side")  # merged, not replaced
    assert main["image"] == "app:1.0"
    assert main["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]  # kustomize's order
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_targeted_strategic_merge_patch_keeps_each_targets_identity(tmp_path: Path) -> None:
    patch = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: any, labels: {x: '1'}}\nspec: {replicas: 7}\n"
    _write(tmp_path, {"kustomization.yaml": _kustomization(
        resources=["a.yaml", "b.yaml"], patches=[{"target": {"kind": "Deployment"}, "patch": patch}]),
        "a.yaml": _deployment("a"), "b.yaml": _deployment("b")})
    resources = render_mod.render(tmp_path)
    assert [(r["metadata"]["name"], r["metadata"]["labels"], r["spec"]["replicas"]) for r in resources] == [
        ("a", {"x": "1"}, 7), ("b", {"x": "1"}, 7)]
    if KUBECTL:
        assert _ours(tmp_path) == _kubectl_kustomize(tmp_path)


def test_strategic_merge_replaces_lists_without_merge_key() -> None:
    original = {"spec": {"tolerations": [{"key": "a"}], "args": ["x", "y"]}}
    merged = render_mod.strategic_merge(original, {"spec": {"tolerations": [{"key": "b"}]}})
    assert merged == {"spec": {"tolerations": [{"key": "b"}], "args": ["x", "y"]}}
    assert original["spec"]["tolerations"] == [{"key": "a"}]  # input untouched


def test_strategic_merge_delete_directive() -> None:
    original = {"containers": [{"name": "a"}, {"name": "b"}]}
    merged = render_mod.strategic_merge(original, {"containers": [{"name": "a", "$patch": "delete"}]})
    assert merged == {"containers": [{"name": "b"}]}


def test_json6902_operations() -> None:
    doc = {"spec": {"replicas": 3, "triggers": [{"metadata": {"lag": "1"}}], "a/b": 1}}
    render_mod.apply_json6902(doc, [
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/triggers/0/metadata/lag", "value": "5"},
        {"op": "add", "path": "/spec/triggers/-", "value": {"metadata": {}}},
        {"op": "remove", "path": "/spec/a~1b"},
        {"op": "add", "path": "/spec/minReplicas", "value": 1},
    ])
    assert doc == {"spec": {"replicas": 3, "triggers": [{"metadata": {"lag": "5"}}, {"metadata": {}}],
                            "minReplicas": 1}}


@pytest.mark.parametrize("ops, message", [
    ([{"op": "remove", "path": "/spec/missing"}], "does not exist"),
    ([{"op": "replace", "path": "/spec/x"}], "needs a value"),
    ([{"op": "move", "path": "/spec", "from": "/a"}], "not supported"),
    ([{"op": "test", "path": "/spec", "value": 1}], "test failed"),
    ([{"path": "/spec"}], "need 'op' and 'path'"),
    ([{"op": "add", "path": "spec", "value": 1}], "must start with '/'"),
])
def test_json6902_rejects_bad_operations(ops: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(render_mod.RenderError, match=message):
        render_mod.apply_json6902({"spec": {"x": 1}}, ops)


def test_component_adds_resources_and_patches_parent(tmp_path: Path) -> None:
    _write(tmp_path, {
        "base/kustomization.yaml": _kustomization(resources=["d.yaml"]),
        "base/d.yaml": _deployment(),
        "comp/kustomization.yaml": {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component",
            "resources": ["cm.yaml"],
            "patches": [{"target": {"kind": "Deployment", "name": "web"},
                         "patch": "- op: remove\n  path: /spec/replicas\n"}],
        },
        "comp/cm.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"}},
        "overlay/kustomization.yaml": _kustomization(resources=["../base"], components=["../comp"],
                                                     namespace="ns1"),
    })
    resources = render_mod.render(tmp_path / "overlay")
    assert {(r["kind"], r["metadata"]["namespace"]) for r in resources} == {("Deployment", "ns1"),
                                                                            ("ConfigMap", "ns1")}
    assert "replicas" not in _by_kind_name(resources, "Deployment", "web")["spec"]


def test_replicas_transformer(tmp_path: Path) -> None:
    _write(tmp_path, {"kustomization.yaml": _kustomization(resources=["d.yaml"],
                                                           replicas=[{"name": "web", "count": 5}]),
                      "d.yaml": _deployment()})
    assert render_mod.render(tmp_path)[0]["spec"]["replicas"] == 5


@pytest.mark.parametrize("files, message", [
    ({"kustomization.yaml": _kustomization(resources=["missing.yaml"])}, "does not exist"),
    ({"kustomization.yaml": _kustomization(resources=["d.yaml"], secretGenerator=[])}, "unsupported field"),
    ({"kustomization.yaml": _kustomization(resources=["https://example.com/x.yaml"])}, "remote"),
    ({"kustomization.yaml": _kustomization(resources=["d.yaml", "d2.yaml"]), "d.yaml": _deployment(),
      "d2.yaml": _deployment()}, "duplicate resource"),
    ({"kustomization.yaml": _kustomization(resources=["d.yaml"], patches=[{"patch": "- op: remove\n  path: /x\n"}]),
      "d.yaml": _deployment()}, "needs a target"),
    ({"kustomization.yaml": _kustomization(resources=["d.yaml"], patches=[
        {"patch": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n"}]),
      "d.yaml": _deployment()}, "matches no resource"),
    ({"kustomization.yaml": _kustomization(resources=["d.yaml"], replicas=[{"name": "nope", "count": 1}]),
      "d.yaml": _deployment()}, "matches no workload"),
    ({"kustomization.yaml": _kustomization(resources=["bad.yaml"]), "bad.yaml": "kind: [unclosed\n"}, "bad.yaml"),
    ({"kustomization.yaml": _kustomization(resources=["bad.yaml"]), "bad.yaml": "just: a map\n"},
     "needs apiVersion and kind"),
    ({"kustomization.yaml": {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component"}},
     "where Kustomization is expected"),
    ({"other.yaml": "{}\n"}, "no kustomization.yaml"),
])
def test_bad_kustomizations_fail_with_one_line(tmp_path: Path, files: dict[str, Any], message: str) -> None:
    _write(tmp_path, files)
    with pytest.raises(render_mod.RenderError, match=message) as caught:
        render_mod.render(tmp_path)
    assert "\n" not in str(caught.value)


def test_cli_writes_stream_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    done = subprocess.run([sys.executable, str(REPO / "k8s" / "render.py"), str(REPO / "k8s/overlays/cpu"),
                           "-o", str(out)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(list(yaml.safe_load_all(out.read_text()))) == len(render_mod.render(REPO / "k8s/overlays/cpu"))
    bad = subprocess.run([sys.executable, str(REPO / "k8s" / "render.py"), str(tmp_path)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "no kustomization.yaml" in bad.stderr


# ------------------------------------------------------------------ the repository's overlays

@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_mod.render(REPO / "k8s" / "overlays" / request.param)


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
    images = {c["name"]: c["image"] for r in resources for c in render_mod.pod_containers(r)}
    assert images["api"].endswith(":0.1.0-cpu") and images["alerter"].endswith(":0.1.0-cpu")
    assert images["consumer"].endswith(f":0.1.0-{'cuda' if name == 'gpu' else 'cpu'}")
    assert all(image.startswith("registry.example.com/") for image in images.values())


def test_autoscaler_owns_consumer_replicas(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = overlay
    assert "replicas" not in _by_kind_name(resources, "Deployment", "clmlf-consumer")["spec"]
    assert _by_kind_name(resources, "Deployment", "clmlf-api")["spec"]["replicas"] >= 2


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes() -> None:
    resources = render_mod.render(REPO / "k8s/overlays/gpu")
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
    resources = render_mod.render(REPO / "k8s/overlays/cpu")
    assert "nvidia.com/gpu" not in yaml.safe_dump_all(resources)
    consumer = _by_kind_name(resources, "Deployment", "clmlf-consumer")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "CLMLF_DEVICE", "value": "cpu"} in consumer["env"]


# ------------------------------------------------------------------ same objects as the real kustomize

def _kubectl_kustomize(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    done = subprocess.run([KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return {(r["kind"], r["metadata"]["name"]): r for r in yaml.safe_load_all(done.stdout) if r}


def _ours(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["kind"], r["metadata"]["name"]): r for r in render_mod.render(directory)}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (its built-in kustomize is the reference)")
@pytest.mark.parametrize("directory", ["base", "overlays/cpu", "overlays/gpu", "extras/strimzi"])
def test_renderer_matches_kubectl_kustomize_on_the_repository(directory: str) -> None:
    assert _ours(REPO / "k8s" / directory) == _kubectl_kustomize(REPO / "k8s" / directory)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (its built-in kustomize is the reference)")
def test_renderer_matches_kubectl_kustomize_on_every_supported_feature(tmp_path: Path) -> None:
    strategic = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "extra", "image": "extra:1"},
            {"name": "main", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "9"}]},
            {"name": "side", "$patch": "delete"},
        ]}}},
    }
    _write(tmp_path, {
        "base/kustomization.yaml": _kustomization(resources=["d.yaml"]),
        "base/d.yaml": _deployment(),
        "comp/kustomization.yaml": {
            "apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component", "resources": ["cm.yaml"],
            "patches": [{"target": {"kind": "Deployment", "name": "web"},
                         "patch": "- op: replace\n  path: /spec/replicas\n  value: 4\n"}],
        },
        "comp/cm.yaml": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "extra"},
                         "data": {"k": "v"}},
        "overlay/kustomization.yaml": _kustomization(
            resources=["../base"], components=["../comp"], namespace="ns1",
            labels=[{"pairs": {"team": "ml"}, "includeSelectors": False}], commonAnnotations={"owner": "ops"},
            images=[{"name": "app", "newName": "reg.example/app", "newTag": "2.0"},
                    {"name": "extra", "digest": "sha256:" + "cd" * 32}],
            patches=[{"path": "smp.yaml"}], replicas=[{"name": "web", "count": 3}],
        ),
        "overlay/smp.yaml": strategic,
    })
    assert _ours(tmp_path / "overlay") == _kubectl_kustomize(tmp_path / "overlay")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (its built-in kustomize is the reference)")
def test_renderer_matches_kubectl_kustomize_on_common_labels(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
           "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}}
    _write(tmp_path, {
        "kustomization.yaml": _kustomization(resources=["all.yaml"], commonLabels={"tier": "x"},
                                             labels=[{"pairs": {"t2": "val"}, "includeTemplates": True}]),
        "all.yaml": [_deployment(), service, pdb],
    })
    assert _ours(tmp_path) == _kubectl_kustomize(tmp_path)
