"""The Kubernetes Deployments' contract, exercised on real processes: each container's exact arguments and
environment (ConfigMap + Secret template + container env, only addresses and the model swapped for local
ones) against a real Kafka-protocol broker and a real Redis. The probe paths answer as the manifests
expect, posts flow, and SIGTERM drains, commits and exits 0 inside the pod's termination grace period."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from k8s_testlib import kustomize
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.local_infra import create_topics, free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "consumers.cli"]


def _render(overlay: str) -> list[dict[str, Any]]:
    return kustomize(REPO / "k8s" / overlay)


def _deployed(name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """(pod spec, container, environment) of Deployment ``name`` in the CPU overlay."""
    resources = _render("overlays/cpu")
    config = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == "clmlf-config")
    secrets = [d for d in yaml.safe_load_all((REPO / "k8s/secret.template.yaml").read_text()) if d]
    credentials = next(s for s in secrets if s["metadata"]["name"] == "clmlf-credentials")["stringData"]
    pod = next(r for r in resources if r["kind"] == "Deployment" and r["metadata"]["name"] == name)
    pod_spec = pod["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    env = {**config["data"], **credentials, **{e["name"]: e["value"] for e in container.get("env", [])}}
    return pod_spec, container, env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CLMLF_", "REDIS_"))}
    with open(log, "wb") as out:
        return subprocess.Popen([*CLI, *args], env={**base, **env}, stdout=out, stderr=subprocess.STDOUT)


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode} while waiting for {what}: {log.read_text()[-3000:]}"
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {log.read_text()[-3000:]}")


def _probe_ok(port: int, probe: dict[str, Any]) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", timeout=2).status_code == 200


def _stop_within_grace(proc: subprocess.Popen, pod_spec: dict[str, Any], container: dict[str, Any]) -> int:
    """SIGTERM as the kubelet sends it after the preStop hook; the process must be gone before SIGKILL."""
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=pod_spec["terminationGracePeriodSeconds"] - pre_stop)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError("still running when the kubelet would SIGKILL it") from None


def _processed_total(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("clmlf_posts_processed_total{"))


def test_consumer_as_deployed_probes_processes_and_drains(tmp_path: Path, broker: Any, redis_server: Any,
                                                          tiny_checkpoint: Path, unique_name: str) -> None:
    pod_spec, container, env = _deployed("clmlf-consumer")
    port = free_port()
    env.update(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap, KAFKA_TOPIC=unique_name, KAFKA_GROUP_ID=unique_name,
               REDIS_URL=redis_server.url, CLMLF_REDIS_PREFIX=unique_name, CLMLF_CHECKPOINT=str(tiny_checkpoint),
               CLMLF_METRICS_PORT=str(port))
    create_topics(broker.bootstrap, {unique_name: 2})
    log = tmp_path / "consumer.log"
    proc = _start(container["args"], env, log)
    try:
        startup = container["startupProbe"]
        _wait_for(lambda: _probe_ok(port, startup), startup["periodSeconds"] * startup["failureThreshold"],
                  "the startup probe", proc, log)
        assert _probe_ok(port, container["livenessProbe"])
        _wait_for(lambda: _probe_ok(port, container["readinessProbe"]), 60, "readiness (assignment)", proc, log)

        posts = [{"id": f"{unique_name}-{i}", "text": f"deploy check {i}", "topics": ["deploy"]} for i in range(20)]
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        for post in posts:
            producer.send(unique_name, key=post["id"].encode(), value=json.dumps(post).encode())
        producer.flush()
        producer.close()
        _wait_for(lambda: _processed_total(port) == len(posts), 60, "20 processed posts", proc, log)

        assert _stop_within_grace(proc, pod_spec, container) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Everything processed was committed before exit: a successor resumes after these posts.
    reader = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=unique_name, enable_auto_commit=False)
    try:
        partitions = reader.partitions_for_topic(unique_name) or set()
        committed = [reader.committed(TopicPartition(unique_name, p)) or 0 for p in partitions]
    finally:
        reader.close(autocommit=False)
    assert len(committed) == 2 and sum(committed) == len(posts)
    assert "CHANGE_ME" not in log.read_text()  # the Secret's values never reach the log


def test_api_as_deployed_probes_requires_the_token_and_stops(tmp_path: Path, redis_server: Any,
                                                             unique_name: str) -> None:
    pod_spec, container, env = _deployed("clmlf-api")
    port = free_port()
    token = "deploy-test-token-" + unique_name
    env.update(REDIS_URL=redis_server.url, CLMLF_REDIS_PREFIX=unique_name, CLMLF_API_PORT=str(port),
               CLMLF_API_TOKEN=token)
    assert env["CLMLF_API_HOST"] == "0.0.0.0"
    log = tmp_path / "api.log"
    proc = _start(container["args"], env, log)
    try:
        _wait_for(lambda: _probe_ok(port, container["readinessProbe"]), 60, "API readiness", proc, log)
        assert _probe_ok(port, container["livenessProbe"])
        url = f"http://127.0.0.1:{port}/v1/topics"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200
        # graceful shutdown, then exit 0 (not "killed by SIGTERM"), before the kubelet's SIGKILL
        assert _stop_within_grace(proc, pod_spec, container) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert token not in log.read_text()
