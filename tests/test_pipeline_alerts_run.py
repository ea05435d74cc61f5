"""``clmlf-monitor run`` evaluates trend alerts: periodically, and once more after its final commit.

Real Tansu broker, real Redis, the tiny random checkpoint, ``run`` as a subprocess.  The labels of
a random model are arbitrary, so the tests rely on the label-independent ``volume_spike`` kind: a
baseline hour of 60 posts (1 per minute) is written straight into the store with backdated event
times, then a surge of 40 posts is streamed through ``run`` (event time = now).  The recent 5-minute
window expects 5 posts at the baseline rate, so 40 is 8x the rate at z ~ 15: the engine must fire.
A second topic gets the same baseline but only a handful of new posts (under the 20 posts the
recent window needs), so it must not.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from monitor_testlib import result
from pipeline_testlib import CLI, Member, create_topic, make_posts, produce, store_for, wait_until

from consumers.local_infra import free_port
from monitor.alerts import AlertEngine
from monitor.store import SentimentStore

pytestmark = pytest.mark.integration

BASELINE_POSTS = 60
SURGE_POSTS = 40
QUIET_POSTS = 5


def seed_baselines(store: SentimentStore, topics: tuple[str, ...]) -> None:
    """One post a minute over the hour before the recent window, for every topic."""
    now = time.time()
    store.record([(result(f"base-{topic}-{i}", "neutral", (topic,)), now - 420 - 55 * i)
                  for topic in topics for i in range(BASELINE_POSTS)], now=now)


def stream(broker: Any, topic: str, surge: str, quiet: str) -> None:
    create_topic(broker, topic, 2)
    posts = make_posts(SURGE_POSTS, prefix="surge", topics=(surge,))
    posts += make_posts(QUIET_POSTS, prefix="quiet", topics=(quiet,))
    produce(broker.bootstrap, topic, posts)


def listed_alerts(redis_url: str, prefix: str, *flags: str) -> list[dict[str, Any]]:
    done = subprocess.run([*CLI, "alerts", "--redis", redis_url, "--redis-prefix", prefix, "--json", *flags],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_volume_spike(alerts: list[dict[str, Any]], surge: str) -> None:
    assert [(a["topic"], a["kind"], a["state"]) for a in alerts if a["kind"] == "volume_spike"] == [
        (surge, "volume_spike", "firing")]
    spike = next(a for a in alerts if a["kind"] == "volume_spike")
    assert spike["window"]["total"] == SURGE_POSTS and spike["baseline"]["total"] == BASELINE_POSTS
    assert spike["effect"] >= 3.0 and spike["score"] >= 4.0
    assert {a["topic"] for a in alerts} == {surge}  # the quiet topic is under the volume minimum


def test_run_evaluates_alerts_periodically_and_exports_them(tmp_path: Path, broker: Any, redis_server: Any,
                                                            tiny_checkpoint: Path, unique_name: str) -> None:
    surge, quiet = f"surge-{unique_name}", f"quiet-{unique_name}"
    store = store_for(redis_server.url, unique_name)
    seed_baselines(store, (surge, quiet))
    stream(broker, unique_name, surge, quiet)
    port = free_port()
    member = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=unique_name, group=unique_name,
                    redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                    extra=["--alert-interval", "500ms", "--metrics-port", str(port)])
    try:
        # while the member still runs, its periodic evaluation fires the alert and exports the gauge
        wait_until(lambda: AlertEngine(store).active() != [], 60, "the periodic evaluation to fire")
        series = f'clmlf_alert_active{{kind="volume_spike",topic="{surge}"}} 1.0'
        wait_until(lambda: series in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text, 10,
                   "the gauge to show the firing alert")
        assert member.proc.poll() is None
        member.signal(signal.SIGTERM)
        assert member.wait(60) == 0, member.log()[-3000:]
    finally:
        member.stop()
    # a periodic round may have fired on part of the surge; the evaluation on exit saw all of it
    assert_one_volume_spike(listed_alerts(redis_server.url, unique_name, "--active"), surge)
    assert f"alert firing: {surge}: " in member.log()


def test_run_evaluates_once_more_after_its_final_commit(tmp_path: Path, broker: Any, redis_server: Any,
                                                        tiny_checkpoint: Path, unique_name: str) -> None:
    surge, quiet = f"surge-{unique_name}", f"quiet-{unique_name}"
    store = store_for(redis_server.url, unique_name)
    seed_baselines(store, (surge, quiet))
    stream(broker, unique_name, surge, quiet)
    # the interval is far longer than the run: only the evaluation on exit can record the alert
    member = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=unique_name, group=unique_name,
                    redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                    extra=["--alert-interval", "1h", "--exit-when-idle", "2s"])
    assert member.wait(90) == 0, member.log()[-3000:]
    assert store.window_counts(surge, 300).total == SURGE_POSTS
    assert_one_volume_spike(listed_alerts(redis_server.url, unique_name), surge)


def test_run_with_no_alerts_leaves_evaluation_to_the_alerter(tmp_path: Path, broker: Any, redis_server: Any,
                                                             tiny_checkpoint: Path, unique_name: str) -> None:
    surge, quiet = f"surge-{unique_name}", f"quiet-{unique_name}"
    store = store_for(redis_server.url, unique_name)
    seed_baselines(store, (surge, quiet))
    stream(broker, unique_name, surge, quiet)
    member = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=unique_name, group=unique_name,
                    redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                    extra=["--no-alerts", "--exit-when-idle", "2s"])
    assert member.wait(90) == 0, member.log()[-3000:]
    assert store.window_counts(surge, 300).total == SURGE_POSTS
    assert listed_alerts(redis_server.url, unique_name) == []
    done = subprocess.run([*CLI, "alerter", "--redis", redis_server.url, "--redis-prefix", unique_name, "--once"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert_one_volume_spike(listed_alerts(redis_server.url, unique_name), surge)
