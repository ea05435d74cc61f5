"""POST trend alerts to a webhook in Alertmanager's webhook payload format (version 4)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from clmlf.settings import redact_url
from contract.posts import iso_utc

if TYPE_CHECKING:
    from monitor.alerts import Alert

log = logging.getLogger(__name__)
ZERO_TIME = "0001-01-01T00:00:00Z"


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return isinstance(exc, httpx.TransportError)


def alertmanager_payload(alerts: Sequence[Alert], receiver: str = "clmlf-monitor") -> dict[str, Any]:
    """The JSON body Alertmanager sends to webhook receivers, built from our alerts."""
    items = []
    for alert in alerts:
        labels = {
            "alertname": "TopicSentimentTrend",
            "topic": alert.topic,
            "kind": alert.kind,
            "severity": "warning",
        }
        items.append(
            {
                "status": alert.state,
                "labels": labels,
                "annotations": {"summary": alert.summary(), "score": f"{alert.score:.2f}"},
                "startsAt": iso_utc(alert.started),
                "endsAt": iso_utc(alert.ended) if alert.ended else ZERO_TIME,
                "generatorURL": "",
                "fingerprint": hashlib.sha256(f"{alert.topic}|{alert.kind}".encode()).hexdigest()[:16],
            }
        )
    status = "firing" if any(a.state == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": "{}:{alertname=\"TopicSentimentTrend\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": "TopicSentimentTrend"},
        "commonLabels": {"alertname": "TopicSentimentTrend"},
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": items,
    }


class WebhookNotifier:
    """Sends alert transitions to one URL, retrying transient failures (tenacity)."""

    def __init__(self, url: str, *, timeout: float = 5.0, attempts: int = 4, max_wait: float = 4.0):
        self.url = url
        self._client = httpx.Client(timeout=timeout)
        self._post = retry(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.25, max=max_wait),
        )(self._post_once)

    def _post_once(self, body: dict[str, Any]) -> None:
        response = self._client.post(self.url, json=body)
        response.raise_for_status()

    def send(self, alerts: Sequence[Alert]) -> bool:
        """POST the alerts; returns False (and logs one line) if the webhook stayed unreachable."""
        if not alerts:
            return True
        try:
            self._post(alertmanager_payload(alerts))
            return True
        except (RetryError, httpx.HTTPError) as exc:
            cause = exc.last_attempt.exception() if isinstance(exc, RetryError) else exc
            log.warning("alert webhook %s failed: %s", redact_url(self.url), type(cause).__name__)
            return False

    def close(self) -> None:
        self._client.close()
