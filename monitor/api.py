"""The monitor's HTTP API (FastAPI): topic sentiment, time series, alerts, health.

``create_app(store, alerts, token=None, request_timeout=10.0)`` builds the app; ``clmlf-monitor serve`` hosts it
with uvicorn and the consumer's ``run`` may host it too.  With a token, every ``/v1``
route needs ``Authorization: Bearer <token>`` (compared in constant time).  Errors are
JSON ``{"error": message, "status": code}``; a request not answered in time gets ``504``.
Every route costs a bounded amount of Redis work (top-N queries: O(limit), see
:func:`monitor.query.ranked_topics`).  See docs/api.md.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from clmlf.settings import parse_duration
from contract.posts import MAX_TOPIC_CHARS, iso_utc
from monitor.alerts import AlertEngine, alerts_json, list_alerts
from monitor.query import ranked_json, ranked_topics
from monitor.request_timeout import RequestTimeout
from monitor.store import SentimentStore
from monitor.windows import WindowCounts

log = logging.getLogger(__name__)
MAX_POINTS = 2000
DEFAULT_REQUEST_TIMEOUT = 10.0

TopicPath = Annotated[str, Path(min_length=1, max_length=MAX_TOPIC_CHARS, description="topic name")]
WindowQuery = Annotated[str, Query(max_length=16, description="window: 90s, 15m, 1h, 1d")]


class Sentiment(BaseModel):
    topic: str
    window_seconds: int
    total: int
    counts: dict[str, int]
    shares: dict[str, float]


class RankedTopics(BaseModel):
    window_seconds: int
    rank: str
    exact: bool
    topics: list[Sentiment]


class Point(BaseModel):
    start: str
    end: str
    total: int
    counts: dict[str, int]
    shares: dict[str, float]


class TimeSeries(BaseModel):
    topic: str
    window_seconds: int
    step_seconds: int
    points: list[Point]


class AlertList(BaseModel):
    alerts: list[dict[str, Any]]


class Health(BaseModel):
    status: str


def _seconds(name: str, text: str, low: float, high: float) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: {exc}") from None
    if not low <= value <= high:
        raise HTTPException(422, f"{name}: must be between {int(low)}s and {int(high)}s")
    return value


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def create_app(store: SentimentStore, alerts: AlertEngine | None = None, token: str | None = None,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> FastAPI:
    """The API over ``store``; ``alerts`` (optional) answers ``/v1/alerts?active=true`` from live state.
    A request not answered within ``request_timeout`` seconds gets ``504`` (JSON error)."""
    import redis

    app = FastAPI(
        title="clmlf-monitor API",
        version="1",
        description="Topic sentiment aggregated from the CLMLF streaming monitor, and trend alerts.",
    )
    expected = token.encode() if token else None
    engine = alerts or AlertEngine(store)
    max_window = float(store.hourly_ttl)

    def authorize(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {err.get('msg', 'invalid value')}")

    @app.exception_handler(redis.RedisError)
    async def _redis_error(_request: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("redis error in API: %s", type(exc).__name__)
        return _error(503, "Redis unavailable")

    v1 = [Depends(authorize)]

    @app.get("/v1/topics", response_model=RankedTopics, dependencies=v1, summary="Topics active in a window")
    def topics(
        window: WindowQuery = "15m",
        rank: Literal["volume", "negative"] = "volume",
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        negative_label: Annotated[str, Query(min_length=1, max_length=64)] = "negative",
    ) -> dict[str, Any]:
        seconds = _seconds("window", window, 1, max_window)
        return ranked_json(ranked_topics(store, seconds, rank, limit, negative_label), seconds, rank)

    @app.get("/v1/topics/{topic}/sentiment", response_model=Sentiment, dependencies=v1,
             summary="Counts and shares by label over the last window")
    def sentiment(topic: TopicPath, window: WindowQuery = "15m") -> dict[str, Any]:
        seconds = _seconds("window", window, 1, max_window)
        return store.window_counts(topic, seconds).to_dict()

    @app.get("/v1/topics/{topic}/timeseries", response_model=TimeSeries, dependencies=v1,
             summary="Counts by label per step over the last window")
    def timeseries(topic: TopicPath, window: WindowQuery = "6h", step: WindowQuery = "5m") -> dict[str, Any]:
        seconds = _seconds("window", window, 1, max_window)
        step_s = _seconds("step", step, store.bucket_seconds, max_window)
        if int(round(step_s)) % store.bucket_seconds:
            raise HTTPException(422, f"step: must be a multiple of {store.bucket_seconds}s")
        if seconds / step_s > MAX_POINTS:
            raise HTTPException(422, f"window/step gives more than {MAX_POINTS} points")
        series = store.timeseries(topic, seconds, step_s, time.time())
        return {
            "topic": topic,
            "window_seconds": int(round(seconds)),
            "step_seconds": int(round(step_s)),
            "points": [_point(p) for p in series],
        }

    @app.get("/v1/alerts", response_model=AlertList, dependencies=v1, summary="Trend alerts, newest first")
    def list_recent_alerts(
        active: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 50
    ) -> dict[str, Any]:
        found = engine.active() if active else list_alerts(store, limit)
        return {"alerts": alerts_json(found[:limit])}

    @app.get("/healthz", response_model=Health, summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, summary="Readiness: Redis answers", responses={503: {}})
    def readyz() -> Any:
        try:
            store.ping()
        except redis.RedisError:
            return _error(503, "Redis unavailable")
        return {"status": "ready"}

    app.add_middleware(RequestTimeout, seconds=request_timeout)
    return app


def _point(counts: WindowCounts) -> dict[str, Any]:
    data = counts.to_dict()
    return {
        "start": iso_utc(counts.start),
        "end": iso_utc(counts.end),
        "total": data["total"],
        "counts": data["counts"],
        "shares": data["shares"],
    }
