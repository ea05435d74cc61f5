"""Trend-alert options, the same in ``clmlf-monitor run`` and ``clmlf-monitor alerter``: how often to
evaluate, where to POST transitions, and the thresholds of :class:`monitor.alerts.AlertConfig`
(flags and environment variables in docs/alerts.md)."""

from __future__ import annotations

import argparse
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from clmlf.process_settings import ProcessSettings
from monitor.alerts import AlertConfig
from monitor.settings import Duration, HttpUrlSecret, Interval

# (flag, env, default shown in --help, help) of the thresholds; the defaults live in the fields below
THRESHOLD_FLAGS = (
    ("--recent-window", "CLMLF_ALERT_RECENT_WINDOW", "5m", "recent window"),
    ("--baseline-window", "CLMLF_ALERT_BASELINE_WINDOW", "1h", "baseline window just before the recent one"),
    ("--min-recent", "CLMLF_ALERT_MIN_RECENT", "20", "posts needed in the recent window"),
    ("--min-baseline", "CLMLF_ALERT_MIN_BASELINE", "50", "posts needed in the baseline window"),
    ("--z-fire", "CLMLF_ALERT_Z_FIRE", "4", "z statistic that fires (resolves below min(2, z/2))"),
    ("--cooldown", "CLMLF_ALERT_COOLDOWN", "15m", "no re-fire of a topic+kind this long after it resolved"),
    ("--negative-label", "CLMLF_ALERT_NEGATIVE_LABEL", "negative",
     "label of negative_share alerts (2-class checkpoints name their own)"),
    ("--positive-label", "CLMLF_ALERT_POSITIVE_LABEL", "positive", "label of positive_share alerts"),
)


class AlertOptions(ProcessSettings):
    """When and how trend alerts are evaluated; :meth:`alert_config` gives the engine's thresholds."""

    alert_interval: Interval = Field(30.0, ge=0, le=86_400, alias="CLMLF_ALERT_INTERVAL")  # 0 = off (run)
    alert_webhook: HttpUrlSecret = Field(None, alias="CLMLF_ALERT_WEBHOOK_URL")
    recent_window: Duration = Field(300.0, alias="CLMLF_ALERT_RECENT_WINDOW")
    baseline_window: Duration = Field(3600.0, alias="CLMLF_ALERT_BASELINE_WINDOW")
    min_recent: int = Field(20, ge=1, alias="CLMLF_ALERT_MIN_RECENT")
    min_baseline: int = Field(50, ge=1, alias="CLMLF_ALERT_MIN_BASELINE")
    z_fire: float = Field(4.0, gt=0, alias="CLMLF_ALERT_Z_FIRE")
    cooldown: Duration = Field(900.0, alias="CLMLF_ALERT_COOLDOWN")
    negative_label: str = Field("negative", min_length=1, alias="CLMLF_ALERT_NEGATIVE_LABEL")
    positive_label: str = Field("positive", min_length=1, alias="CLMLF_ALERT_POSITIVE_LABEL")

    @field_validator("alert_interval")
    @classmethod
    def _off_or_100ms(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("must be 0 (off) or at least 100ms")
        return value

    @model_validator(mode="after")
    def _thresholds_ok(self) -> AlertOptions:
        self.alert_config()  # the thresholds are validated once, here
        return self

    def alert_config(self) -> AlertConfig:
        """The engine's thresholds (``z_resolve`` follows ``z_fire``: min(2, z_fire / 2))."""
        try:
            return AlertConfig(recent_window=self.recent_window, baseline_window=self.baseline_window,
                               min_recent=self.min_recent, min_baseline=self.min_baseline, z_fire=self.z_fire,
                               z_resolve=min(2.0, self.z_fire / 2), cooldown=self.cooldown,
                               negative_label=self.negative_label, positive_label=self.positive_label)
        except ValueError as exc:
            raise PydanticCustomError("alert_config", "{reason}", {"reason": " ".join(str(exc).split())}) from None

    def alerts_display(self) -> str:
        """``off`` or ``every 30s[ webhook=https://host/..]`` (scheme and host only: paths hold tokens)."""
        if not self.alert_interval:
            return "off"
        if self.alert_webhook is None:
            return f"every {self.alert_interval:g}s"
        parts = urlsplit(self.alert_webhook.get_secret_value())
        return f"every {self.alert_interval:g}s webhook={parts.scheme}://{parts.hostname}/.."


def add_alert_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, interval_flag: str) -> None:
    """The alert flags of ``run`` (``interval_flag`` ``--alert-interval``) and ``alerter`` (``--interval``)."""
    parser.add_argument(interval_flag, dest="alert_interval", metavar="DURATION",
                        help="evaluate trend alerts this often (env CLMLF_ALERT_INTERVAL, default 30s"
                             + ("; 0 = off)" if interval_flag == "--alert-interval" else ")"))
    parser.add_argument("--alert-webhook", metavar="URL",
                        help="POST fired/resolved alerts here, Alertmanager format; never logged "
                             "(env CLMLF_ALERT_WEBHOOK_URL)")
    for flag, env, default, text in THRESHOLD_FLAGS:
        parser.add_argument(flag, metavar=flag.removeprefix("--").split("-")[-1].upper(),
                            help=f"{text} (env {env}, default {default})")
