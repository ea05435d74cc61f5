"""deploy/docker-compose.yml, checked statically (Docker does not run here): Compose-spec structure via a
JSON schema for the subset we use, references between services, mounted files, settings vs. the real CLI,
and the mounted Prometheus/Grafana configs (promtool validates the Prometheus one with the project rules)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_testlib import app_env_vars, command_settings

from contract.posts import parse_post

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
MONITOR_SERVICES = ("monitor-run", "monitor-api", "monitor-alerter", "demo-producer")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|WEBHOOK", re.I)

_STRINGS = {"type": "array", "items": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"}
# The subset of the Compose specification (compose-spec.io) this file uses; unknown keys are errors.
COMPOSE_SUBSET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["services"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "services": {"type": "object", "minProperties": 1, "additionalProperties": {"$ref": "#/$defs/service"}},
        "volumes": {"type": "object", "additionalProperties": {"type": ["object", "null"]}},
    },
    "patternProperties": {"^x-": {}},
    "additionalProperties": False,
    "$defs": {
        "service": {
            "type": "object",
            "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
            "properties": {
                "image": {"type": "string", "pattern": r"^[\w./-]+:[\w.-]+$", "not": {"pattern": ":latest$"}},
                "build": {"type": "object", "required": ["context"], "additionalProperties": False,
                          "properties": {"context": {"type": "string"}, "dockerfile": {"type": "string"}}},
                "command": _STRINGS,
                "entrypoint": _STRINGS,
                "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "string",
                                                     "pattern": r"^127\.0\.0\.1:\d+:\d+$"}},
                "expose": {"type": "array", "items": {"type": "string", "pattern": r"^\d+$"}},
                "volumes": _STRINGS,
                "tmpfs": _STRINGS,
                "cap_drop": _STRINGS,
                "security_opt": _STRINGS,
                "profiles": _STRINGS,
                "user": {"type": "string", "pattern": r"^\d+:\d+$"},
                "read_only": {"type": "boolean"},
                "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                "stop_grace_period": _DURATION,
                "depends_on": {"type": "object", "additionalProperties": {
                    "type": "object", "required": ["condition"], "additionalProperties": False,
                    "properties": {"condition": {"enum": ["service_started", "service_healthy",
                                                          "service_completed_successfully"]}}}},
                "healthcheck": {"type": "object", "additionalProperties": False, "properties": {
                    "test": {"type": "array", "minItems": 2, "items": {"type": "string"},
                             "prefixItems": [{"enum": ["CMD", "CMD-SHELL"]}]},
                    "interval": _DURATION, "timeout": _DURATION, "start_period": _DURATION,
                    "retries": {"type": "integer", "minimum": 1},
                    "disable": {"const": True}}},
            },
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))




def test_compose_follows_the_schema(compose: dict[str, Any]) -> None:
    jsonschema.validate(compose, COMPOSE_SUBSET_SCHEMA)


@pytest.mark.parametrize("mutation, message", [
    (lambda c: c["services"]["redis"].update(imgae="x"), "Additional properties"),
    (lambda c: c["services"]["grafana"].update(ports=["3000:3000"]), "does not match"),
    (lambda c: c["services"]["kafka"].update(image="apache/kafka:latest"), "should not be valid"),
    (lambda c: c["services"]["monitor-run"]["depends_on"].update(redis={"condition": "healthy"}), "is not one of"),
    (lambda c: c["services"]["redis"].pop("image"), "is not valid under any"),
])
def test_schema_rejects_broken_files(compose: dict[str, Any], mutation: Any, message: str) -> None:
    broken = json.loads(json.dumps(compose))
    mutation(broken)
    with pytest.raises(jsonschema.ValidationError, match=message):
        jsonschema.validate(broken, COMPOSE_SUBSET_SCHEMA)


def test_the_full_stack_is_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "kafka-init", "redis", "prometheus", "grafana", "monitor-run", "monitor-api",
            "monitor-alerter"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("zookeeper" in key.lower() or "zookeeper" in value for key, value in kafka["environment"].items())
    # kafka-storage.sh format accepts only a base64url-encoded 16-byte UUID as the cluster id.
    cluster_id = kafka["environment"]["CLUSTER_ID"]
    assert len(cluster_id) == 22 and len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
    assert kafka["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"  # the image's appuser-owned VOLUME
    assert "kafka-data:/var/lib/kafka/data" in kafka["volumes"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--appendfsync everysec" in redis_command
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert [s for s in services if "container_name" in services[s]] == []  # monitor-run must be scalable
    assert "ports" not in services["monitor-run"]


def test_references_between_services_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if spec["condition"] == "service_healthy":
                assert "test" in services[dependency].get("healthcheck", {}), (name, dependency)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"]["dockerfile"]).is_file()


def test_monitor_containers_are_locked_down(compose: dict[str, Any]) -> None:
    for name in MONITOR_SERVICES:
        service = compose["services"][name]
        assert service["read_only"] is True and "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        assert service["user"] == "10001:10001", name


def test_secrets_come_from_the_environment_not_the_file(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+(:-[^}]*)?\}", value), f"{name}: {key} is hard-coded"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", value), f"{name}: {key} embeds credentials"


def test_monitor_settings_are_known_to_the_app(compose: dict[str, Any]) -> None:
    known = app_env_vars() | {"CLMLF_HEALTHCHECK_URL"}
    for name in MONITOR_SERVICES:
        assert set(compose["services"][name]["environment"]) - known == set(), name


@pytest.mark.parametrize("service, command", [("monitor-run", "run"), ("monitor-api", "serve"),
                                              ("monitor-alerter", "alerter"), ("demo-producer", "produce")])
def test_monitor_commands_parse_with_the_real_cli(compose: dict[str, Any], service: str, command: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from consumers.cli import build_parser

    spec = compose["services"][service]
    for key, value in spec["environment"].items():
        monkeypatch.setenv(key, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value))
    parser = build_parser()
    parsed = command_settings(parser, parser.parse_args(spec["command"]))
    if command == "run":
        assert parsed.metrics_port == int(spec["expose"][0])
        grace = float(spec["stop_grace_period"].rstrip("s"))
        assert grace > parsed.shutdown_grace, "docker stop must wait longer than the drain"
    if command == "serve":
        assert (parsed.host, f"127.0.0.1:{parsed.port}:{parsed.port}") == ("0.0.0.0", spec["ports"][0])
    if command == "alerter":
        assert parsed.metrics_port == int(spec["expose"][0])


def test_sample_posts_are_valid_messages() -> None:
    lines = (DEPLOY / "compose/sample-posts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 10
    ids = [parse_post(line.encode()).id for line in lines]
    assert len(set(ids)) == len(ids)


def test_topic_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(DEPLOY / "compose/create-topics.sh")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_grafana_provisioning_points_at_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/clmlf.yml").read_text())
    assert mounts["./grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert list((DEPLOY / "grafana/dashboards").glob("*.json"))
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasource["datasources"]
    # Grafana expands ${VAR} in provisioning files from its environment.
    url = re.sub(r"\$\{(\w+)\}", lambda m: grafana["environment"][m.group(1)], source["url"])
    assert source["type"] == "prometheus" and url == "http://prometheus:9090"


def test_prometheus_scrapes_every_metrics_port(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    run = jobs["clmlf-consumer"]["dns_sd_configs"][0]
    assert run["names"] == ["monitor-run"] and str(run["port"]) in compose["services"]["monitor-run"]["expose"]
    alerter_target = jobs["clmlf-alerter"]["static_configs"][0]["targets"][0]
    assert alerter_target == f"monitor-alerter:{compose['services']['monitor-alerter']['expose'][0]}"
    mounts = dict(v.split(":")[:2] for v in compose["services"]["prometheus"]["volumes"])
    assert mounts["./prometheus/rules"] == str(Path(config["rule_files"][0]).parent)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_config_with_the_project_rules_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "compose/prometheus.yml").read_text())
    config["rule_files"] = [str(DEPLOY / "prometheus/rules/*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "rules found" in done.stdout


def test_long_running_monitor_services_have_a_matching_healthcheck(compose: dict[str, Any]) -> None:
    image_default = "http://127.0.0.1:9100/healthz"  # deploy/docker/healthcheck.py DEFAULT_URL
    assert image_default in (DEPLOY / "docker/healthcheck.py").read_text()
    for name, port in (("monitor-run", "9100"), ("monitor-api", "8080"), ("monitor-alerter", "9101")):
        service = compose["services"][name]
        assert service["healthcheck"]["test"] == ["CMD", "python", "/usr/local/bin/clmlf-healthcheck"], name
        url = service["environment"].get("CLMLF_HEALTHCHECK_URL", image_default)
        assert url.startswith(f"http://127.0.0.1:{port}/"), (name, url)
