"""Trend alerts: statistics, no alert on noise, alert on surge, cooldown, recovery, small topics."""

from __future__ import annotations

import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from monitor_testlib import redis_prefix, result
from prometheus_client import CollectorRegistry

from monitor.alerts import AlertConfig, AlertEngine, list_alerts
from monitor.stats import poisson_z, two_proportion_z, wilson_interval
from monitor.store import SentimentStore
from monitor.webhook import WebhookNotifier, alertmanager_payload

STEADY = {"positive": 0.4, "neutral": 0.35, "negative": 0.25}


def test_two_proportion_z_matches_a_hand_computation():
    # p1 = 0.6 (60/100), p2 = 0.3 (30/100): pooled 0.45, se = sqrt(.45*.55*.02) = 0.070356
    assert two_proportion_z(60, 100, 30, 100) == pytest.approx(0.3 / 0.0703562, rel=1e-5)
    assert two_proportion_z(30, 100, 60, 100) < 0
    assert two_proportion_z(0, 0, 5, 10) == 0.0
    assert two_proportion_z(0, 10, 0, 10) == 0.0


def test_wilson_interval_contains_the_share_and_narrows_with_volume():
    low, high = wilson_interval(3, 10)
    assert low < 0.3 < high
    low_big, high_big = wilson_interval(300, 1000)
    assert high_big - low_big < high - low
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == pytest.approx(1.0)


def test_poisson_z():
    assert poisson_z(100, 100.0) == 0.0
    assert poisson_z(130, 100.0) == pytest.approx(3.0)
    assert poisson_z(5, 0.0) == pytest.approx(4.0)


def test_alert_config_rejects_inverted_hysteresis():
    with pytest.raises(ValueError):
        AlertConfig(z_fire=2.0, z_resolve=3.0)
    with pytest.raises(ValueError):
        AlertConfig(min_recent=0)


class Sim:
    """Feeds a topic minute by minute (event time = simulated clock) and evaluates the engine."""

    def __init__(self, store: SentimentStore, engine: AlertEngine, start: float, seed: int = 1):
        self.store, self.engine, self.now = store, engine, start
        self.rng = random.Random(seed)
        self.n = 0
        self.transitions: list = []

    def minute(self, topic: str, per_minute: int, mix: dict[str, float], evaluate: bool = True) -> None:
        labels, weights = zip(*mix.items(), strict=True)
        batch = []
        for _ in range(per_minute):
            self.n += 1
            ts = self.now + self.rng.uniform(0, 59)
            batch.append((result(f"{topic}-{self.n}", self.rng.choices(labels, weights)[0], (topic,)), ts))
        self.store.record(batch, now=self.now + 60)
        self.now += 60
        if evaluate:
            self.transitions += self.engine.evaluate(self.now)

    def fired(self, kind: str | None = None) -> list:
        return [a for a in self.transitions if a.state == "firing" and (kind is None or a.kind == kind)]


@pytest.fixture
def sim():
    with redis_prefix() as (client, prefix):
        store = SentimentStore(client, prefix=prefix)
        engine = AlertEngine(store, AlertConfig())
        start = int(time.time()) // 3600 * 3600 - 8 * 3600
        yield Sim(store, engine, start)


def test_steady_topic_never_alerts(sim):
    for _ in range(60):
        sim.minute("steady", 30, STEADY, evaluate=False)
    for _ in range(120):
        sim.minute("steady", 30, STEADY)
    assert sim.transitions == []


def test_negative_surge_alerts_within_two_minutes(sim):
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    surge_start = sim.now
    for _ in range(5):
        sim.minute("brand", 40, {"negative": 0.8, "neutral": 0.1, "positive": 0.1})
    fired = sim.fired("negative_share")
    assert fired, "a clear negative surge must alert"
    assert fired[0].started - surge_start <= 120
    assert fired[0].window.share > fired[0].baseline.share + 0.15
    assert fired[0].score >= sim.engine.config.z_fire
    assert not sim.fired("positive_share")
    # The episode is recorded once, however often it is evaluated while firing.
    stored = list_alerts(sim.store)
    assert [(a.topic, a.kind) for a in stored if a.kind == "negative_share"] == [("brand", "negative_share")]


def test_alert_recovers_and_cooldown_blocks_refiring(sim):
    surge = {"negative": 0.8, "neutral": 0.1, "positive": 0.1}
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(4):
        sim.minute("brand", 40, surge)
    assert len(sim.fired("negative_share")) == 1
    for _ in range(8):  # back to normal: the recent window empties of the surge
        sim.minute("brand", 30, STEADY)
    resolved = [a for a in sim.transitions if a.state == "resolved" and a.kind == "negative_share"]
    assert len(resolved) == 1 and resolved[0].ended is not None
    assert sim.engine.active() == [] or all(a.kind != "negative_share" for a in sim.engine.active())
    for _ in range(3):  # a second surge inside the 15-minute cooldown does not fire
        sim.minute("brand", 40, surge)
    assert len(sim.fired("negative_share")) == 1
    for _ in range(15):
        sim.minute("brand", 30, STEADY)
    for _ in range(4):
        sim.minute("brand", 40, surge)
    assert len(sim.fired("negative_share")) == 2


def test_hysteresis_keeps_an_alert_while_the_surge_fades(sim):
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"negative": 0.85, "neutral": 0.1, "positive": 0.05})
    assert len(sim.fired("negative_share")) == 1
    # Still clearly elevated (z well above z_resolve) but no longer at firing strength: no resolve.
    for _ in range(3):
        sim.minute("brand", 30, {"negative": 0.5, "neutral": 0.25, "positive": 0.25})
    assert not [a for a in sim.transitions if a.state == "resolved" and a.kind == "negative_share"]


def test_small_topic_does_not_flap(sim):
    rng = random.Random(5)
    for i in range(180):
        mix = {"negative": 1.0} if rng.random() < 0.2 else STEADY
        sim.minute("tiny", 2 if i % 3 else 3, mix, evaluate=i >= 60)
    assert sim.transitions == []


def test_volume_spike_alerts(sim):
    for _ in range(60):
        sim.minute("brand", 10, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 80, STEADY)
    spikes = sim.fired("volume_spike")
    assert len(spikes) == 1 and spikes[0].effect >= 3.0
    assert not sim.fired("negative_share")


def test_concurrent_engines_record_each_episode_once(sim):
    other = AlertEngine(sim.store, AlertConfig())
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"negative": 0.9, "neutral": 0.05, "positive": 0.05}, evaluate=False)
    first = sim.engine.evaluate(sim.now)
    second = other.evaluate(sim.now + 1)
    assert [a.kind for a in first].count("negative_share") == 1
    assert [a.kind for a in second].count("negative_share") == 0
    entries = sim.store.redis_client.xrange(sim.store.keys.alert_stream)
    kinds = [json.loads(f["alert"])["kind"] for _, f in entries]
    assert kinds.count("negative_share") == 1


def test_active_gauge_in_the_callers_registry(sim):
    registry = CollectorRegistry()
    engine = AlertEngine(sim.store, AlertConfig(), registry=registry)
    sim.engine = engine
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"negative": 0.9, "neutral": 0.05, "positive": 0.05})
    value = registry.get_sample_value("clmlf_alert_active", {"topic": "brand", "kind": "negative_share"})
    assert value == 1.0
    for _ in range(10):
        sim.minute("brand", 30, STEADY)
    assert registry.get_sample_value("clmlf_alert_active", {"topic": "brand", "kind": "negative_share"}) == 0.0


class _Hook(BaseHTTPRequestHandler):
    bodies: list
    statuses: list

    def do_POST(self):  # noqa: N802 (http.server API)
        length = int(self.headers["Content-Length"])
        type(self).bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(type(self).statuses.pop(0) if type(self).statuses else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    handler = type("Hook", (_Hook,), {"bodies": [], "statuses": [503, 500]})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", handler
    server.shutdown()
    server.server_close()


def test_webhook_gets_alertmanager_payload_with_retries(sim, webhook_server):
    url, handler = webhook_server
    notifier = WebhookNotifier(url, max_wait=0.05)
    sim.engine = AlertEngine(sim.store, AlertConfig(kinds=("negative_share",)), webhook=notifier)
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"negative": 0.9, "neutral": 0.05, "positive": 0.05})
    notifier.close()
    assert len(handler.bodies) == 3  # two transient failures, then delivered
    body = handler.bodies[-1]
    assert body["version"] == "4" and body["status"] == "firing"
    alert = body["alerts"][0]
    assert alert["labels"] == {"alertname": "TopicSentimentTrend", "topic": "brand", "kind": "negative_share",
                               "severity": "warning"}
    assert alert["startsAt"].endswith("Z") and alert["endsAt"] == "0001-01-01T00:00:00Z"


def test_webhook_failure_does_not_raise():
    notifier = WebhookNotifier("http://127.0.0.1:9/unreachable", attempts=2, max_wait=0.01, timeout=0.5)
    from monitor.alerts import Alert, WindowFigures

    fig = WindowFigures(300, 10, 5, 0.5, 0.2, 0.8)
    alert = Alert("t", "negative_share", "firing", 1000.0, None, 5.0, 0.3, fig, fig)
    assert notifier.send([alert]) is False
    assert alertmanager_payload([alert])["alerts"][0]["labels"]["topic"] == "t"
    notifier.close()


def test_engine_exports_through_a_callers_existing_gauge(sim):
    from prometheus_client import Gauge

    registry = CollectorRegistry()
    gauge = Gauge("clmlf_alert_active", "firing trend alerts", ["topic", "kind"], registry=registry)
    sim.engine = AlertEngine(sim.store, AlertConfig(), gauge=gauge)
    for _ in range(60):
        sim.minute("brand", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"negative": 0.9, "neutral": 0.05, "positive": 0.05})
    assert registry.get_sample_value("clmlf_alert_active", {"topic": "brand", "kind": "negative_share"}) == 1.0


def test_two_class_labels_alert_under_their_own_names(sim):
    steady = {"sarcastic": 0.2, "not_sarcastic": 0.8}
    default_engine = AlertEngine(sim.store, AlertConfig())
    sim.engine = AlertEngine(sim.store, AlertConfig(negative_label="sarcastic", positive_label="not_sarcastic"))
    for _ in range(60):
        sim.minute("brand", 30, steady, evaluate=False)
    for _ in range(3):
        sim.minute("brand", 40, {"sarcastic": 0.9, "not_sarcastic": 0.1})
    assert [a.kind for a in sim.fired()] == ["negative_share"]
    assert sim.fired()[0].window.share > sim.fired()[0].baseline.share + 0.15
    # An engine configured for 3-class labels finds no "negative" label here and stays silent.
    assert default_engine.evaluate(sim.now + 1) == []


def test_list_alerts_is_newest_first_with_each_episode_once_in_its_latest_state(sim):
    surge = {"negative": 0.8, "neutral": 0.1, "positive": 0.1}
    for _ in range(40):
        sim.minute("early", 30, STEADY, evaluate=False)
        sim.minute("late", 30, STEADY, evaluate=False)
    for _ in range(3):
        sim.minute("early", 40, surge)
    for _ in range(10):  # early recovers while late surges, minutes later
        sim.minute("early", 30, STEADY)
        sim.minute("late", 40, surge)
    episodes = [(a.topic, a.kind) for a in sim.fired()]
    assert ("early", "negative_share") in episodes and ("late", "negative_share") in episodes
    listed = [a for a in list_alerts(sim.store) if a.kind == "negative_share"]
    assert [a.topic for a in listed] == ["late", "early"]  # newest episode first, each once
    assert listed[0].started > listed[1].started
    assert listed[1].state == "resolved" and listed[1].ended is not None  # its latest state
    assert listed[0].state == "firing" and listed[0].ended is None
