"""Trend alerts per topic: recent window against the preceding baseline window.

For every topic with recent activity, :meth:`AlertEngine.evaluate` compares

* ``negative_share`` / ``positive_share``: the label's share in the recent window
  (default 5 minutes) against the preceding baseline window (default 1 hour),
  with a pooled two-proportion z-test plus a minimum effect size;
* ``volume_spike``: the recent post count against the count the baseline rate
  predicts (Poisson z plus a minimum ratio).

An alert fires when the statistic clears ``z_fire`` AND the effect clears its
minimum AND both windows hold enough posts; it resolves only when the statistic
falls below ``z_resolve`` or the effect below half its minimum (hysteresis), and
the same topic+kind cannot fire again within ``cooldown`` after resolving.

State lives in Redis (``<prefix>:alerts:state`` hash, ``<prefix>:alerts:stream``
stream) and is changed with an atomic compare-and-set script, so several
evaluators (the consumer's ``run`` and a separate ``alerter``) never record the
same episode twice.  See docs/alerts.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from monitor.stats import poisson_z, two_proportion_z, wilson_interval
from monitor.store import SentimentStore
from monitor.windows import WindowCounts

log = logging.getLogger(__name__)

AlertKind = Literal["negative_share", "positive_share", "volume_spike"]
ALERT_KINDS: tuple[AlertKind, ...] = ("negative_share", "positive_share", "volume_spike")
STREAM_MAXLEN = 10_000


class AlertConfig(BaseModel):
    """Trend-alert thresholds; defaults suit a brand-monitoring team (docs/alerts.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    recent_window: float = Field(300.0, gt=0, description="seconds of recent posts compared")
    baseline_window: float = Field(3600.0, gt=0, description="seconds before the recent window")
    min_recent: int = Field(20, ge=1, description="posts needed in the recent window")
    min_baseline: int = Field(50, ge=1, description="posts needed in the baseline window")
    z_fire: float = Field(4.0, gt=0, description="z statistic that fires an alert")
    z_resolve: float = Field(2.0, ge=0, description="z statistic under which an alert resolves")
    min_share_increase: float = Field(0.15, gt=0, lt=1, description="absolute share increase to fire")
    min_volume_ratio: float = Field(3.0, gt=1, description="recent/expected volume ratio to fire")
    cooldown: float = Field(900.0, ge=0, description="seconds before the same topic+kind may fire again")
    negative_label: str = "negative"
    positive_label: str = "positive"
    kinds: tuple[AlertKind, ...] = ALERT_KINDS

    @model_validator(mode="after")
    def _check(self) -> AlertConfig:
        if self.z_resolve >= self.z_fire:
            raise ValueError("z_resolve must be lower than z_fire (hysteresis)")
        return self


@dataclass(frozen=True)
class WindowFigures:
    """What one window held for an alert's kind."""

    seconds: int
    total: int
    count: int
    share: float
    share_low: float
    share_high: float


@dataclass
class Alert:
    """One alert episode of one topic and kind."""

    topic: str
    kind: str
    state: Literal["firing", "resolved"]
    started: float
    ended: float | None
    score: float
    effect: float
    window: WindowFigures
    baseline: WindowFigures
    updated: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.topic}|{self.kind}"

    @property
    def episode(self) -> str:
        return f"{self.topic}|{self.kind}|{int(self.started)}"

    def summary(self) -> str:
        if self.kind == "volume_spike":
            return (
                f"{self.topic}: {self.window.total} posts in {self.window.seconds}s, "
                f"{self.effect:.1f}x the baseline rate (z={self.score:.1f})"
            )
        label = self.kind.removesuffix("_share")
        return (
            f"{self.topic}: {label} share {self.window.share:.0%} vs baseline "
            f"{self.baseline.share:.0%} (z={self.score:.1f}, n={self.window.total})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        data = dict(data)
        data["window"] = WindowFigures(**data["window"])
        data["baseline"] = WindowFigures(**data["baseline"])
        return cls(**data)


@dataclass(frozen=True)
class _Evaluation:
    score: float
    effect: float
    window: WindowFigures
    baseline: WindowFigures
    enough_volume: bool


def _figures(counts: WindowCounts, count: int) -> WindowFigures:
    low, high = wilson_interval(count, counts.total)
    share = count / counts.total if counts.total else 0.0
    return WindowFigures(counts.window_seconds, counts.total, count, round(share, 6), round(low, 6), round(high, 6))


def evaluate_kind(
    kind: AlertKind, recent: WindowCounts, baseline: WindowCounts, config: AlertConfig
) -> _Evaluation | None:
    """The statistic of one kind for one topic (None when the label does not exist here)."""
    enough = recent.total >= config.min_recent and baseline.total >= config.min_baseline
    if kind == "volume_spike":
        expected = baseline.total * recent.window_seconds / max(baseline.window_seconds, 1)
        ratio = recent.total / max(expected, 1e-9) if recent.total else 0.0
        return _Evaluation(
            score=round(poisson_z(recent.total, expected), 4),
            effect=round(min(ratio, 1e6), 4),
            window=_figures(recent, recent.total),
            baseline=_figures(baseline, baseline.total),
            enough_volume=enough,
        )
    label = config.negative_label if kind == "negative_share" else config.positive_label
    if label not in recent.counts and label not in baseline.counts:
        return None
    x1, x2 = recent.counts.get(label, 0), baseline.counts.get(label, 0)
    return _Evaluation(
        score=round(two_proportion_z(x1, recent.total, x2, baseline.total), 4),
        effect=round(recent.share(label) - baseline.share(label), 6),
        window=_figures(recent, x1),
        baseline=_figures(baseline, x2),
        enough_volume=enough,
    )


class AlertEngine:
    """Evaluates trend alerts for every active topic and keeps their state in Redis.

    ``evaluate(now)`` returns the alerts that fired or resolved in that evaluation.  To export
    ``clmlf_alert_active{topic,kind}`` pass either a prometheus ``registry`` (the gauge is created
    there) or an existing ``gauge`` with labels ``topic`` and ``kind`` (e.g. the consumer's own
    ``PipelineMetrics.alert_active``).  Pass a :class:`monitor.webhook.WebhookNotifier` to POST
    transitions.
    """

    def __init__(
        self,
        store: SentimentStore,
        config: AlertConfig | None = None,
        webhook: Any | None = None,
        registry: Any | None = None,
        gauge: Any | None = None,
    ):
        self.store = store
        self.config = config or AlertConfig()
        self.webhook = webhook
        self.keys = store.keys
        source = resources.files("monitor.lua").joinpath("alert_transition.lua").read_text(encoding="utf-8")
        self._transition = store.redis_client.register_script(source)
        self._gauge = gauge
        if gauge is None and registry is not None:
            from prometheus_client import Gauge

            self._gauge = Gauge(
                "clmlf_alert_active",
                "1 while a trend alert of this topic and kind is firing",
                ["topic", "kind"],
                registry=registry,
            )

    # ------------------------------------------------------------------ state

    def _states(self) -> dict[str, tuple[Alert, str]]:
        raw = self.store.redis_client.hgetall(self.keys.alert_state)
        states = {}
        for name, value in raw.items():
            if name.endswith("#token"):
                continue
            try:
                states[name] = (Alert.from_dict(json.loads(value)), raw.get(f"{name}#token", ""))
            except (ValueError, TypeError, KeyError):
                log.warning("ignoring unreadable alert state %r", name)
        return states

    def _write(self, alert: Alert, expected: str, token: str, event: bool) -> bool:
        body = json.dumps(alert.to_dict(), separators=(",", ":"))
        written = self._transition(
            keys=[self.keys.alert_state, self.keys.alert_stream],
            args=[alert.key, expected, body, token, body if event else "", STREAM_MAXLEN],
        )
        return bool(int(written))

    def active(self) -> list[Alert]:
        """Alerts firing now, newest first."""
        alerts = [a for a, _ in self._states().values() if a.state == "firing"]
        return sorted(alerts, key=lambda a: a.started, reverse=True)

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, now: float | None = None) -> list[Alert]:
        """Evaluate every topic active within the last recent+baseline windows once."""
        now = time.time() if now is None else now
        cfg = self.config
        recent_start, recent_end = self.store.window_bounds(cfg.recent_window, now)
        bs = self.store.bucket_seconds
        baseline_len = int(-(-cfg.baseline_window // bs) * bs)
        baseline_start = recent_start - baseline_len
        states = self._states()
        topics = [t for t, _ in self.store.topics(active_since=baseline_start)]
        topics += sorted({a.topic for a, _ in states.values() if a.state == "firing"} - set(topics))
        if not topics:
            return []
        recent = self.store.range_counts_many(topics, recent_start, recent_end, now)
        baseline = self.store.range_counts_many(topics, baseline_start, recent_start, now)
        changed: list[Alert] = []
        for topic in topics:
            for kind in cfg.kinds:
                ev = evaluate_kind(kind, recent[topic], baseline[topic], cfg)
                if ev is None:
                    continue
                current = states.get(f"{topic}|{kind}")
                alert = self._step(topic, kind, ev, current, now)
                if alert is not None:
                    changed.append(alert)
        self._export_gauges()
        if changed and self.webhook is not None:
            self.webhook.send(changed)
        return changed

    def _fires(self, kind: str, ev: _Evaluation) -> bool:
        cfg = self.config
        if not ev.enough_volume or ev.score < cfg.z_fire:
            return False
        if kind == "volume_spike":
            return ev.effect >= cfg.min_volume_ratio
        return ev.effect >= cfg.min_share_increase

    def _recovered(self, kind: str, ev: _Evaluation) -> bool:
        cfg = self.config
        if ev.score < cfg.z_resolve:
            return True
        if kind == "volume_spike":
            return ev.effect < (1.0 + cfg.min_volume_ratio) / 2.0
        return ev.effect < cfg.min_share_increase / 2.0

    def _step(
        self, topic: str, kind: str, ev: _Evaluation, current: tuple[Alert, str] | None, now: float
    ) -> Alert | None:
        """Apply one evaluation to one alert's state; returns the alert if it fired or resolved."""
        prev, token = current if current else (None, "")
        if prev is not None and prev.state == "firing":
            if self._recovered(kind, ev):
                done = Alert(topic, kind, "resolved", prev.started, now, ev.score, ev.effect,
                             ev.window, ev.baseline, updated=now)
                if self._write(done, token, f"resolved:{int(prev.started)}", event=True):
                    return done
                return None
            live = Alert(topic, kind, "firing", prev.started, None, ev.score, ev.effect,
                         ev.window, ev.baseline, updated=now)
            self._write(live, token, token, event=False)
            return None
        if not self._fires(kind, ev):
            return None
        if prev is not None and prev.ended is not None and now - prev.ended < self.config.cooldown:
            return None
        alert = Alert(topic, kind, "firing", now, None, ev.score, ev.effect, ev.window, ev.baseline, updated=now)
        if self._write(alert, token, f"firing:{int(now)}", event=True):
            return alert
        return None

    def _export_gauges(self) -> None:
        if self._gauge is None:
            return
        for alert, _ in self._states().values():
            self._gauge.labels(topic=alert.topic, kind=alert.kind).set(1 if alert.state == "firing" else 0)


def list_alerts(store: SentimentStore, limit: int = 50) -> list[Alert]:
    """Recent alert episodes, newest first; each episode once, in its latest state."""
    entries = store.redis_client.xrevrange(store.keys.alert_stream, count=max(1, limit) * 4)
    episodes: dict[str, Alert] = {}
    for _entry_id, fields in entries:
        try:
            alert = Alert.from_dict(json.loads(fields["alert"]))
        except (KeyError, ValueError, TypeError):
            continue
        episodes.setdefault(alert.episode, alert)  # newest event of the episode comes first
    ordered = sorted(episodes.values(), key=lambda a: a.started, reverse=True)
    return ordered[:limit]


def alerts_json(alerts: Sequence[Alert]) -> list[dict[str, Any]]:
    return [a.to_dict() for a in alerts]
