"""Render a kustomization the way ``kubectl kustomize`` does, for the subset of kustomize this repo uses.

Used by the tests (no kubectl or kustomize binary here) and handy for a quick look::

    .venv/bin/python k8s/render.py k8s/overlays/cpu            # YAML stream on stdout
    .venv/bin/python k8s/render.py k8s/overlays/gpu -o gpu.yaml

Supported kustomization fields: ``resources`` (files and directories), ``components``
(``kind: Component``), ``namespace``, ``labels`` (``pairs``, ``includeSelectors``, ``includeTemplates``),
``commonLabels``, ``commonAnnotations``, ``images`` (``newName``, ``newTag``, ``digest``), ``replicas``
and ``patches`` (strategic-merge or JSON6902, from ``path`` or inline ``patch``, with an optional
``target``). Anything else is an error, never silently ignored. Order of operations as in kustomize:
resources, then components, then this kustomization's patches, then the namespace, labels,
annotations, images and replicas transformers.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = frozenset({
    "apiVersion", "kind", "resources", "components", "namespace", "labels", "commonLabels",
    "commonAnnotations", "images", "replicas", "patches",
})
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "IngressClass", "RuntimeClass", "APIService",
})
WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
# Strategic-merge keys of the list fields this repo patches (from the Kubernetes API's patchMergeKey).
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "volumes": "name",
    "env": "name", "imagePullSecrets": "name", "volumeMounts": "mountPath", "ports": "containerPort",
}
KIND_ORDER = ("Namespace", "CustomResourceDefinition", "ServiceAccount", "ConfigMap", "Secret")


class RenderError(Exception):
    """A kustomization that cannot be rendered; the message is one line naming the file."""


def load_yaml_documents(path: Path) -> list[Resource]:
    """All non-empty YAML documents of ``path`` (each must be a mapping with apiVersion and kind)."""
    try:
        docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise RenderError(f"{path}: {' '.join(str(exc).split())}") from None
    for doc in docs:
        if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
            raise RenderError(f"{path}: every document needs apiVersion and kind")
    return docs


def _kustomization_file(directory: Path) -> Path:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise RenderError(f"{directory}: no kustomization.yaml")


def _load_kustomization(directory: Path, expected_kind: str) -> dict[str, Any]:
    path = _kustomization_file(directory)
    docs = load_yaml_documents(path)
    if len(docs) != 1:
        raise RenderError(f"{path}: expected exactly one document")
    kustomization = docs[0]
    kind = kustomization.get("kind", "Kustomization")
    if kind != expected_kind:
        raise RenderError(f"{path}: kind {kind} where {expected_kind} is expected")
    unknown = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unknown:
        raise RenderError(f"{path}: unsupported field(s) {', '.join(unknown)}")
    return kustomization


def _resolve(base: Path, entry: str, what: str) -> Path:
    if "://" in entry or entry.startswith("github.com/"):
        raise RenderError(f"{base}: remote {what} {entry!r} is not supported")
    path = (base / entry).resolve()
    if not path.exists():
        raise RenderError(f"{base}: {what} {entry!r} does not exist")
    return path


def _identity(resource: Resource) -> tuple[str, str, str, str]:
    meta = resource.get("metadata") or {}
    return (resource["apiVersion"], resource["kind"], meta.get("namespace", ""), meta.get("name", ""))


def _add(resources: list[Resource], new: list[Resource], origin: Path) -> None:
    seen = {_identity(r) for r in resources}
    for resource in new:
        ident = _identity(resource)
        if ident in seen:
            raise RenderError(f"{origin}: duplicate resource {ident[1]}/{ident[3]}")
        seen.add(ident)
        resources.append(resource)


def render(directory: Path | str) -> list[Resource]:
    """Render the kustomization in ``directory`` into a list of resources (the input is not modified)."""
    resources = _render(Path(directory).resolve(), "Kustomization", [])
    return sorted(resources, key=lambda r: KIND_ORDER.index(r["kind"]) if r["kind"] in KIND_ORDER
                  else len(KIND_ORDER))


def _render(directory: Path, kind: str, accumulated: list[Resource]) -> list[Resource]:
    kustomization = _load_kustomization(directory, kind)
    resources = accumulated
    for entry in kustomization.get("resources", []) or []:
        path = _resolve(directory, entry, "resource")
        new = _render(path, "Kustomization", []) if path.is_dir() else load_yaml_documents(path)
        _add(resources, copy.deepcopy(new), directory)
    for entry in kustomization.get("components", []) or []:
        resources = _render(_resolve(directory, entry, "component"), "Component", resources)
    for patch in kustomization.get("patches", []) or []:
        _apply_patch_entry(resources, patch, directory)
    if kustomization.get("namespace"):
        _set_namespace(resources, kustomization["namespace"])
    for group in _label_groups(kustomization, directory):
        _add_labels(resources, *group)
    if kustomization.get("commonAnnotations"):
        _add_annotations(resources, {k: str(v) for k, v in kustomization["commonAnnotations"].items()})
    for image in kustomization.get("images", []) or []:
        _set_image(resources, image, directory)
    for replica in kustomization.get("replicas", []) or []:
        _set_replicas(resources, replica, directory)
    return resources


# ---------------------------------------------------------------- patches

def _apply_patch_entry(resources: list[Resource], entry: dict[str, Any], directory: Path) -> None:
    if not isinstance(entry, dict) or ("path" in entry) == ("patch" in entry):
        raise RenderError(f"{directory}: each patch needs exactly one of 'path' or 'patch'")
    if "path" in entry:
        text = _resolve(directory, entry["path"], "patch").read_text(encoding="utf-8")
    else:
        text = entry["patch"]
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RenderError(f"{directory}: patch is not YAML: {' '.join(str(exc).split())}") from None
    target = entry.get("target")
    if isinstance(body, list):
        if not target:
            raise RenderError(f"{directory}: a JSON6902 patch needs a target")
        matched = [r for r in resources if _matches(r, target)]
        if not matched:
            raise RenderError(f"{directory}: patch target {target} matches no resource")
        for resource in matched:
            apply_json6902(resource, body, directory)
        return
    if not isinstance(body, dict):
        raise RenderError(f"{directory}: a patch must be a mapping (strategic merge) or a list (JSON6902)")
    if target:
        matched = [r for r in resources if _matches(r, target)]
    else:
        name = (body.get("metadata") or {}).get("name")
        matched = [r for r in resources if r["kind"] == body.get("kind")
                   and (r.get("metadata") or {}).get("name") == name]
    if not matched:
        raise RenderError(f"{directory}: patch for {body.get('kind')}/{(body.get('metadata') or {}).get('name')} "
                          f"matches no resource")
    if target:
        # With a target the patch applies to every match under the match's own identity.
        body = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
        metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k not in ("name", "namespace")}
        body["metadata"] = metadata
    for resource in matched:
        patched = strategic_merge(resource, body)
        resource.clear()
        resource.update(patched)


def _matches(resource: Resource, target: dict[str, Any]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    meta = resource.get("metadata") or {}
    checks = {
        "group": group, "version": version, "kind": resource["kind"],
        "name": meta.get("name"), "namespace": meta.get("namespace"),
    }
    for key, value in target.items():
        if key not in checks:
            raise RenderError(f"patch target field {key!r} is not supported")
        if checks[key] != value:
            return False
    return True


def strategic_merge(original: Any, patch: Any, field: str | None = None) -> Any:
    """Kubernetes strategic merge for the fields this repo uses; returns a new object.

    Mappings merge recursively and a ``null`` value deletes the key; lists named in :data:`MERGE_KEYS`
    merge element-wise by their key (``$patch: delete`` removes an element) and come out in kustomize's
    order: the patch's elements first, then the original elements the patch did not name; any other
    list is replaced.
    """
    if isinstance(original, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(original)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(original, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        by_key = {item.get(key): item for item in original if isinstance(item, dict)}
        merged_list: list[Any] = []
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise RenderError(f"strategic merge: items of {field!r} need the merge key {key!r}")
            if item.get("$patch") == "delete":
                continue
            old = by_key.get(item[key])
            merged_list.append(copy.deepcopy(item) if old is None else strategic_merge(old, item, field))
        # kustomize's order: the patch's items first (in patch order), then the untouched originals.
        patched = {item[key] for item in patch}
        merged_list += [copy.deepcopy(item) for item in original
                        if not (isinstance(item, dict) and item.get(key) in patched)]
        return merged_list
    return copy.deepcopy(patch)


def _split_pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise RenderError(f"JSON pointer {path!r} must start with '/'")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _walk(document: Any, parts: list[str], path: str) -> Any:
    node = document
    for part in parts:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise RenderError(f"JSON6902: path {path!r} does not exist") from None
    return node


def apply_json6902(document: Resource, operations: list[dict[str, Any]], origin: Path | str = "") -> None:
    """Apply RFC 6902 ``add``/``remove``/``replace``/``test`` operations to ``document`` in place."""
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise RenderError(f"{origin}: JSON6902 operations need 'op' and 'path'")
        name, path = op["op"], op["path"]
        parts = _split_pointer(path)
        parent = _walk(document, parts[:-1], path)
        last = parts[-1]
        if name == "test":
            if _walk(document, parts, path) != op.get("value"):
                raise RenderError(f"{origin}: JSON6902 test failed at {path}")
        elif name == "remove":
            _walk(document, parts, path)
            del parent[int(last) if isinstance(parent, list) else last]
        elif name in ("add", "replace"):
            if "value" not in op:
                raise RenderError(f"{origin}: JSON6902 {name} at {path} needs a value")
            value = copy.deepcopy(op["value"])
            if isinstance(parent, list):
                if name == "add":
                    parent.insert(len(parent) if last == "-" else int(last), value)
                else:
                    _walk(document, parts, path)
                    parent[int(last)] = value
            else:
                if name == "replace":
                    _walk(document, parts, path)
                parent[last] = value
        else:
            raise RenderError(f"{origin}: JSON6902 op {name!r} is not supported")


# ---------------------------------------------------------------- transformers

def _set_namespace(resources: list[Resource], namespace: str) -> None:
    for resource in resources:
        if resource["kind"] not in CLUSTER_SCOPED_KINDS:
            resource.setdefault("metadata", {})["namespace"] = namespace


def _label_groups(kustomization: dict[str, Any], directory: Path) -> Iterator[tuple[dict[str, str], bool, bool]]:
    if kustomization.get("commonLabels"):
        yield {k: str(v) for k, v in kustomization["commonLabels"].items()}, True, True
    for group in kustomization.get("labels", []) or []:
        if not isinstance(group, dict) or not isinstance(group.get("pairs"), dict):
            raise RenderError(f"{directory}: each labels entry needs 'pairs'")
        selectors = bool(group.get("includeSelectors", False))
        templates = bool(group.get("includeTemplates", selectors))
        yield {k: str(v) for k, v in group["pairs"].items()}, selectors, templates


def _add_labels(resources: list[Resource], labels: dict[str, str], selectors: bool, templates: bool) -> None:
    for resource in resources:
        resource.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        spec = resource.get("spec") or {}
        if templates and resource["kind"] in WORKLOAD_KINDS:
            spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        if selectors:
            if resource["kind"] in WORKLOAD_KINDS or resource["kind"] == "PodDisruptionBudget":
                spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(labels)
            elif resource["kind"] == "Service":
                spec.setdefault("selector", {}).update(labels)


def _add_annotations(resources: list[Resource], annotations: dict[str, str]) -> None:
    """Like kustomize: on every object and on the pod template of every workload."""
    for resource in resources:
        resource.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)
        if resource["kind"] in WORKLOAD_KINDS:
            template = resource.setdefault("spec", {}).setdefault("template", {})
            template.setdefault("metadata", {}).setdefault("annotations", {}).update(annotations)


def pod_containers(resource: Resource) -> Iterator[dict[str, Any]]:
    """Every container and init container of a workload's pod template."""
    spec = ((resource.get("spec") or {}).get("template") or {}).get("spec") or {}
    for field in ("initContainers", "containers"):
        yield from spec.get(field, []) or []


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    name, _, digest = image.partition("@")
    tag = None
    if ":" in name.rsplit("/", 1)[-1]:
        name, _, tag = name.rpartition(":")
    return name, tag, digest or None


def _set_image(resources: list[Resource], image: dict[str, Any], directory: Path) -> None:
    if "name" not in image:
        raise RenderError(f"{directory}: each images entry needs 'name'")
    for resource in resources:
        for container in pod_containers(resource):
            name, tag, digest = _split_image(container.get("image", ""))
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            if image.get("digest"):
                container["image"] = f"{new_name}@{image['digest']}"
            elif image.get("newTag") is not None:
                container["image"] = f"{new_name}:{image['newTag']}"
            else:
                container["image"] = new_name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _set_replicas(resources: list[Resource], replica: dict[str, Any], directory: Path) -> None:
    if "name" not in replica or not isinstance(replica.get("count"), int) or replica["count"] < 0:
        raise RenderError(f"{directory}: each replicas entry needs 'name' and a count >= 0")
    matched = False
    for resource in resources:
        if resource["kind"] in WORKLOAD_KINDS and resource["metadata"].get("name") == replica["name"]:
            resource["spec"]["replicas"] = replica["count"]
            matched = True
    if not matched:
        raise RenderError(f"{directory}: replicas entry {replica['name']!r} matches no workload")


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="k8s/render.py",
        description="Render a kustomization (the subset of kustomize this repo uses) to a YAML stream.",
        epilog="examples:\n  k8s/render.py k8s/overlays/cpu\n  k8s/render.py k8s/overlays/gpu -o /tmp/gpu.yaml\n"
               "  k8s/render.py k8s/overlays/cpu | kubectl apply --dry-run=server -f -",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", type=Path, help="directory holding a kustomization.yaml")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        resources = render(args.directory)
    except RenderError as exc:
        print(f"k8s/render.py: error: {exc}", file=sys.stderr)
        return 2
    text = yaml.safe_dump_all(resources, sort_keys=False, explicit_start=True)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
