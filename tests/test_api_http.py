"""HTTP API against the real Redis with FastAPI's TestClient: routes, validation, auth."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient
from monitor_testlib import redis_prefix, result
from redis.backoff import NoBackoff
from redis.retry import Retry

from monitor.api import create_app
from monitor.store import SentimentStore


@pytest.fixture
def store():
    with redis_prefix() as (client, prefix):
        store = SentimentStore(client, prefix=prefix)
        now = time.time()
        batch = [(result(f"a{i}", ("negative", "positive", "neutral")[i % 3], ("acme",)), now - 20 * i)
                 for i in range(30)]
        batch += [(result(f"b{i}", "negative", ("globex",)), now - 5) for i in range(5)]
        store.record(batch, now=now)
        yield store


@pytest.fixture
def client(store):
    return TestClient(create_app(store))


def test_sentiment_has_the_contract_shape(client, store):
    body = client.get("/v1/topics/acme/sentiment", params={"window": "15m"}).json()
    assert set(body) == {"topic", "window_seconds", "total", "counts", "shares"}
    assert body["window_seconds"] == 900 and body["topic"] == "acme"
    assert body == store.window_counts("acme", 900).to_dict()
    assert sum(body["counts"].values()) == body["total"] > 0


def test_topics_ranked_by_volume_and_negative_share(client):
    by_volume = client.get("/v1/topics", params={"window": "1h"}).json()
    assert [t["topic"] for t in by_volume["topics"]] == ["acme", "globex"]
    by_negative = client.get("/v1/topics", params={"window": "1h", "rank": "negative"}).json()
    assert [t["topic"] for t in by_negative["topics"]] == ["globex", "acme"]


def test_timeseries_points_sum_to_the_window(client):
    body = client.get("/v1/topics/acme/timeseries", params={"window": "1h", "step": "5m"}).json()
    assert body["step_seconds"] == 300 and len(body["points"]) == 12
    assert sum(p["total"] for p in body["points"]) == 30
    assert all(p["start"].endswith("Z") for p in body["points"])


@pytest.mark.parametrize(
    "path, params, fragment",
    [
        ("/v1/topics/acme/sentiment", {"window": "fortnight"}, "window"),
        ("/v1/topics/acme/sentiment", {"window": "0s"}, "window"),
        ("/v1/topics/acme/sentiment", {"window": "400d"}, "window"),
        ("/v1/topics/acme/timeseries", {"window": "1h", "step": "90s"}, "step"),
        ("/v1/topics/acme/timeseries", {"window": "30d", "step": "1m"}, "points"),
        ("/v1/topics", {"rank": "loudest"}, "rank"),
        ("/v1/topics", {"limit": "0"}, "limit"),
        ("/v1/alerts", {"limit": "many"}, "limit"),
        ("/v1/topics/" + "x" * 200 + "/sentiment", {}, "topic"),
    ],
)
def test_bad_input_is_a_json_error(client, path, params, fragment):
    response = client.get(path, params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422 and fragment in body["error"]


def test_unknown_route_is_a_json_404(client):
    response = client.get("/v1/nope")
    assert response.status_code == 404 and response.json()["status"] == 404


def test_bearer_token_is_required_when_configured(store):
    client = TestClient(create_app(store, token="s3cret"))
    assert client.get("/v1/topics").status_code == 401
    assert client.get("/v1/topics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/topics", headers={"Authorization": "Basic s3cret"}).status_code == 401
    denied = client.get("/v1/alerts")
    assert denied.headers["www-authenticate"] == "Bearer" and "s3cret" not in denied.text
    assert client.get("/v1/topics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # probes stay open


def test_health_readiness_and_openapi(client, store):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    spec = client.get("/openapi.json").json()
    assert {"/v1/topics", "/v1/topics/{topic}/sentiment", "/v1/topics/{topic}/timeseries", "/v1/alerts",
            "/healthz", "/readyz"} <= set(spec["paths"])


def test_redis_down_gives_503_json():
    dead = redis.Redis(host="127.0.0.1", port=1, decode_responses=True, retry=Retry(NoBackoff(), 0))
    client = TestClient(create_app(SentimentStore(dead, prefix="x")))
    assert client.get("/readyz").status_code == 503
    response = client.get("/v1/topics/acme/sentiment")
    assert response.status_code == 503 and response.json() == {"error": "Redis unavailable", "status": 503}


def test_alerts_route_lists_alert_episodes(client):
    assert client.get("/v1/alerts").json() == {"alerts": []}
    assert client.get("/v1/alerts", params={"active": "true"}).json() == {"alerts": []}
