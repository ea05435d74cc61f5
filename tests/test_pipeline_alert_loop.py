"""Alert evaluation inside ``run`` (unit level), retention flags, and ``serve`` stopping with 0."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis
from monitor_testlib import result
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from consumers.alert_gauge import TopicCappedGauge
from consumers.config import RunConfig, add_run_arguments, run_config_from_args
from consumers.local_infra import free_port
from consumers.metrics import TopicLabeler
from monitor.alert_loop import AlertLoop
from monitor.alerts import AlertEngine
from monitor.store import SentimentStore

CLI = [sys.executable, "-m", "consumers.cli"]
RUN_REQUIRED = ["--bootstrap", "h:1", "--topic", "t", "--group", "g", "--redis", "redis://127.0.0.1:1/0"]


def cli(*argv: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CLMLF_", "KAFKA_"))}
    return subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**base, "HF_HUB_OFFLINE": "1", **env})


def run_config(*argv: str) -> RunConfig:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    return run_config_from_args(parser.parse_args([*RUN_REQUIRED, *argv]), parser)


# ---------------------------------------------------------------- configuration


def test_alert_flags_default_to_every_30s_and_0_or_no_alerts_turn_evaluation_off(monkeypatch):
    monkeypatch.delenv("CLMLF_ALERT_INTERVAL", raising=False)
    monkeypatch.delenv("CLMLF_ALERT_WEBHOOK_URL", raising=False)
    assert run_config().alert_interval == 30.0
    assert run_config("--alert-interval", "2m").alert_interval == 120.0
    assert run_config("--alert-interval", "0").alert_interval == 0.0
    assert run_config("--alert-interval", "off").alert_interval == 0.0
    assert run_config("--no-alerts").alert_interval == 0.0
    monkeypatch.setenv("CLMLF_ALERT_INTERVAL", "5s")
    assert run_config().alert_interval == 5.0


def test_alert_webhook_comes_from_the_environment_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("CLMLF_ALERT_WEBHOOK_URL", "https://hooks.example.com/services/T0/B0/sekrit-token")
    config = run_config()
    assert config.alert_webhook is not None
    assert config.alert_webhook.get_secret_value().endswith("sekrit-token")
    shown = config.describe() + repr(config)
    assert "sekrit" not in shown and "hooks.example.com" in shown


def test_retention_flags_reach_the_run_config(monkeypatch):
    monkeypatch.delenv("CLMLF_MINUTE_RETENTION", raising=False)
    monkeypatch.delenv("CLMLF_HOURLY_RETENTION", raising=False)
    default = run_config().store_kwargs()
    assert default == {"bucket_ttl": 2 * 86400, "hourly_ttl": 35 * 86400}
    assert run_config("--minute-retention", "6h", "--hourly-retention", "7d").store_kwargs() == {
        "bucket_ttl": 6 * 3600, "hourly_ttl": 7 * 86400}
    monkeypatch.setenv("CLMLF_HOURLY_RETENTION", "90d")
    assert run_config().hourly_retention == 90 * 86400


BAD_RETENTION = [
    (["--minute-retention", "3d", "--hourly-retention", "1d"], "--hourly-retention (1d) must be at least"),
    (["--minute-retention", "10m"], "minute-retention: must be between 1h and 400d"),
    (["--hourly-retention", "500d"], "hourly-retention: must be between 1h and 400d"),
    (["--hourly-retention", "soon"], "--hourly-retention"),
    (["--minute-retention", "0"], "--minute-retention"),
]


@pytest.mark.parametrize("command, required", [
    ("run", RUN_REQUIRED), ("query", ["--redis", "redis://127.0.0.1:1/0", "--topic", "t"]),
    ("serve", ["--redis", "redis://127.0.0.1:1/0"]), ("alerter", ["--redis", "redis://127.0.0.1:1/0"]),
])
@pytest.mark.parametrize("bad, needle", BAD_RETENTION)
def test_bad_retention_exits_2_with_one_line(command, required, bad, needle):
    done = cli(command, *required, *bad)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


def test_bad_retention_from_the_environment_exits_2():
    done = cli("query", "--redis", "redis://127.0.0.1:1/0", "--topic", "t", CLMLF_MINUTE_RETENTION="40d",
               CLMLF_HOURLY_RETENTION="30d")
    assert done.returncode == 2 and "must be at least --minute-retention (40d)" in done.stderr, done.stderr


@pytest.mark.parametrize("bad, needle", [
    (["--alert-interval", "often"], "--alert-interval"),
    (["--alert-interval", "-5s"], "--alert-interval"),
    (["--alert-interval", "10ms"], "alert-interval: Value error, must be 0 (off) or at least 100ms"),
    (["--alert-webhook", "ftp://hooks.example.com/x"], "alert-webhook: Value error, must be an http"),
])
def test_bad_alert_flags_exit_2_with_one_line(bad, needle):
    done = cli("run", *RUN_REQUIRED, *bad)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr


# ---------------------------------------------------------------- the loop


def test_alert_loop_evaluates_every_interval_and_survives_failures():
    calls: list[float] = []
    called = threading.Event()

    def evaluate(now: float) -> list:
        calls.append(now)
        if len(calls) == 1:
            raise redis.ConnectionError("Connection refused")
        if len(calls) == 2:
            raise KeyError("unexpected")
        if len(calls) >= 4:
            called.set()
        return []

    loop = AlertLoop(evaluate, 0.02, (redis.RedisError, OSError))
    loop.start()
    assert called.wait(10), "the loop stopped after a failed evaluation"
    loop.close()
    assert not loop.is_alive()
    count = len(calls)
    assert loop.final_evaluation() and len(calls) == count + 1
    with pytest.raises(ValueError):
        AlertLoop(evaluate, 0, (redis.RedisError,))


def test_capped_gauge_folds_topics_over_the_cap_into_other_showing_any_firing():
    registry = CollectorRegistry()
    gauge = Gauge("clmlf_alert_active", "x", ["topic", "kind"], registry=registry)
    capped = TopicCappedGauge(gauge, TopicLabeler(1))
    capped.labels(topic="acme", kind="volume_spike").set(1)
    capped.labels(topic="globex", kind="volume_spike").set(1)
    capped.labels(topic="initech", kind="volume_spike").set(0)
    assert gauge.labels(topic="acme", kind="volume_spike")._value.get() == 1
    assert gauge.labels(topic="other", kind="volume_spike")._value.get() == 1  # globex still fires
    capped.labels(topic="globex", kind="volume_spike").set(0)
    assert gauge.labels(topic="other", kind="volume_spike")._value.get() == 0
    assert b'topic="globex"' not in generate_latest(registry)


@pytest.mark.integration
def test_redis_outage_skips_a_round_and_the_next_one_evaluates(private_redis, unique_name):
    client = redis.Redis.from_url(private_redis.url, decode_responses=True, socket_timeout=2,
                                  socket_connect_timeout=1)
    store = SentimentStore(client, prefix=unique_name)
    now = time.time()
    baseline = [(result(f"b{i}", "neutral", ("acme",)), now - 600 - 50 * i) for i in range(60)]
    surge = [(result(f"s{i}", "neutral", ("acme",)), now - 5) for i in range(40)]
    store.record(baseline + surge, now=now)
    loop = AlertLoop(AlertEngine(store).evaluate, 3600, (redis.RedisError, OSError))
    private_redis.stop()
    try:
        assert loop.evaluate_once(now) is False  # logged, not raised
    finally:
        private_redis.start()
    assert loop.evaluate_once(now) is True
    assert [(a.topic, a.kind) for a in AlertEngine(store).active()] == [("acme", "volume_spike")]
    client.close()


# ---------------------------------------------------------------- serve stops with 0


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_exits_0_after_graceful_shutdown_on_a_stop_signal(redis_server, unique_name, signum):
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CLMLF_"))}
    proc = subprocess.Popen([*CLI, "serve", "--redis", redis_server.url, "--redis-prefix", unique_name,
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=base)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output[-3000:]
    assert "Application shutdown complete" in output and f"{signal.Signals(signum).name}: API stopped" in output
