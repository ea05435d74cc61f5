"""The monitor's commands end to end (subprocesses against the real Redis): output, bad args, secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from monitor_testlib import REDIS_URL, redis_prefix, result

from monitor.store import SentimentStore


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "CLMLF_"))}
    return subprocess.run(
        [sys.executable, "-m", "consumers.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**base, **(env or {})},
    )


@pytest.fixture
def seeded():
    with redis_prefix() as (client, prefix):
        store = SentimentStore(client, prefix=prefix)
        now = time.time()
        labels = ["positive"] * 6 + ["neutral"] * 3 + ["negative"] * 3
        store.record([(result(f"q{i}", label, ("acme",)), now - 5) for i, label in enumerate(labels)], now=now)
        store.record([(result(f"g{i}", "negative", ("globex",)), now - 5) for i in range(4)], now=now)
        yield store


@pytest.mark.parametrize("command", ["query", "alerts", "serve", "alerter"])
def test_help_teaches_with_examples(command):
    done = run_cli(command, "--help")
    assert done.returncode == 0 and "examples:" in done.stdout and "REDIS_URL" in done.stdout


def test_query_json_is_exactly_the_contract(seeded):
    done = run_cli("query", "--redis", REDIS_URL, "--redis-prefix", seeded.prefix, "--topic", "acme",
                   "--window", "15m", "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body == {
        "topic": "acme",
        "window_seconds": 900,
        "total": 12,
        "counts": {"positive": 6, "neutral": 3, "negative": 3},
        "shares": {"positive": 0.5, "neutral": 0.25, "negative": 0.25},
    }


def test_query_topic_is_normalised_as_the_consumers_store_it(seeded):
    done = run_cli("query", "--redis", REDIS_URL, "--redis-prefix", seeded.prefix, "--topic", " acme\t", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["topic"] == "acme" and json.loads(done.stdout)["total"] == 12


def test_query_reads_redis_url_from_the_environment(seeded):
    done = run_cli("query", "--topic", "globex", "--window", "90s", "--json",
                   env={"REDIS_URL": REDIS_URL, "CLMLF_REDIS_PREFIX": seeded.prefix})
    body = json.loads(done.stdout)
    assert (body["window_seconds"], body["total"], body["counts"]["negative"]) == (90, 4, 4)


def test_query_all_ranks_topics_and_prints_a_table(seeded):
    args = ["query", "--redis", REDIS_URL, "--redis-prefix", seeded.prefix, "--all", "--window", "1h"]
    by_negative = json.loads(run_cli(*args, "--rank", "negative", "--json").stdout)
    assert [t["topic"] for t in by_negative["topics"]] == ["globex", "acme"]
    by_volume = json.loads(run_cli(*args, "--json").stdout)
    assert [t["topic"] for t in by_volume["topics"]] == ["acme", "globex"]
    table = run_cli(*args).stdout.splitlines()
    assert table[0].split() == ["topic", "window", "total", "positive", "neutral", "negative"]
    assert table[1].split()[:3] == ["acme", "1h", "12"] and "(50.0%)" in table[1]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["query", "--topic", "acme"], "Redis URL required"),
        (["query", "--redis", REDIS_URL], "exactly one of"),
        (["query", "--redis", REDIS_URL, "--topic", "a", "--all"], "exactly one of"),
        (["query", "--redis", REDIS_URL, "--topic", "a", "--window", "soon"], "invalid duration"),
        (["query", "--redis", REDIS_URL, "--topic", "a", "--window", "0s"], "positive"),
        (["query", "--redis", REDIS_URL, "--all", "--rank", "loud"], "invalid choice"),
        (["query", "--redis", REDIS_URL, "--all", "--limit", "0"], "limit"),
        (["query", "--redis", REDIS_URL, "--topic", "a\x01b"], "control characters"),
        (["query", "--redis", "http://:hunter2@host/0", "--topic", "a"], "redis://"),
        (["alerts", "--redis", REDIS_URL, "--limit", "-1"], "limit"),
        (["alerter", "--redis", REDIS_URL, "--interval", "often"], "invalid duration"),
        (["alerter", "--redis", REDIS_URL, "--z-fire", "-1"], "z-fire"),
        (["serve", "--redis", REDIS_URL, "--port", "70000"], "port"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, fragment):
    done = run_cli(*args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and fragment in done.stderr
    assert "hunter2" not in done.stderr


def test_unreachable_redis_is_one_line_without_the_password():
    done = run_cli("query", "--redis", "redis://user:hunter2@127.0.0.1:1/0", "--topic", "a", "--json")
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1
    assert "cannot reach Redis" in done.stderr and "hunter2" not in done.stderr + done.stdout


def test_alerter_once_then_alerts_lists_newest_first(seeded):
    now = time.time()
    store = seeded
    start = now - 3900
    baseline = [(result(f"b{i}", ("positive", "neutral", "negative", "positive")[i % 4], ("acme",)),
                 start + i * 6) for i in range(600)]
    surge = [(result(f"s{i}", "negative", ("acme",)), now - 100 + i) for i in range(60)]
    store.record(baseline + surge, now=now)
    env = {"REDIS_URL": REDIS_URL, "CLMLF_REDIS_PREFIX": store.prefix}
    done = run_cli("alerter", "--once", env=env)
    assert done.returncode == 0, done.stderr
    listed = json.loads(run_cli("alerts", "--json", env=env).stdout)
    kinds = {a["kind"] for a in listed}
    assert "negative_share" in kinds
    first = listed[0]
    assert {"topic", "kind", "state", "started", "ended", "score", "window", "baseline"} <= set(first)
    assert first["topic"] == "acme" and first["state"] == "firing" and first["ended"] is None
    assert first["window"]["share"] > first["baseline"]["share"]
    assert [a["started"] for a in listed] == sorted((a["started"] for a in listed), reverse=True)
    human = run_cli("alerts", "--active", env=env).stdout
    assert "acme" in human and "firing" in human


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_serve_hosts_the_api_with_token(seeded):
    port = _free_port()
    env = {**os.environ, "REDIS_URL": REDIS_URL, "CLMLF_REDIS_PREFIX": seeded.prefix, "CLMLF_API_TOKEN": "tok3n"}
    proc = subprocess.Popen([sys.executable, "-m", "consumers.cli", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        assert httpx.get(f"{url}/v1/topics/acme/sentiment").status_code == 401
        ok = httpx.get(f"{url}/v1/topics/acme/sentiment", headers={"Authorization": "Bearer tok3n"})
        assert ok.json()["total"] == 12
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=20)
    assert "tok3n" not in output
