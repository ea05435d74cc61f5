"""The one place Redis clients are made: :func:`redis_client` with the timeouts of its use.

* ``COMMAND`` (query, alerts, serve, alerter): 5 s to connect, 10 s per reply, two quick retries,
  so a command answers or fails within seconds.
* ``CONSUMER`` (the store of ``run``): 3 s / 5 s; failed writes are retried by the sink writer's own
  back-off, with the offsets kept uncommitted meanwhile.
* ``probe(seconds)`` (the readiness probe of ``run``): one short try, no retry, so a hung Redis fails
  the probe inside the kubelet's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from clmlf.settings import redact_url


@dataclass(frozen=True)
class RedisTimeouts:
    connect: float
    read: float
    health_check_interval: int = 0
    retries: int | None = None  # None = redis-py's default retry policy
    retry_on_timeout: bool | None = None
    decode_responses: bool = True


COMMAND = RedisTimeouts(connect=5, read=10, health_check_interval=30, retries=2)
CONSUMER = RedisTimeouts(connect=3, read=5, health_check_interval=10)


def probe(seconds: float) -> RedisTimeouts:
    return RedisTimeouts(connect=seconds, read=seconds, retry_on_timeout=False, decode_responses=False)


def redis_client(url: SecretStr | str, timeouts: RedisTimeouts) -> Any:
    """A ``redis.Redis`` for ``url`` (a secret: never logged) with ``timeouts``."""
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    kwargs: dict[str, Any] = {"decode_responses": timeouts.decode_responses,
                              "socket_connect_timeout": timeouts.connect, "socket_timeout": timeouts.read}
    if timeouts.health_check_interval:
        kwargs["health_check_interval"] = timeouts.health_check_interval
    if timeouts.retries is not None:
        kwargs["retry"] = Retry(ExponentialBackoff(cap=0.5, base=0.05), timeouts.retries)
    if timeouts.retry_on_timeout is not None:
        kwargs["retry_on_timeout"] = timeouts.retry_on_timeout
    text = url.get_secret_value() if isinstance(url, SecretStr) else url
    return redis.Redis.from_url(text, **kwargs)


class RedisUnavailable(RuntimeError):
    """Redis could not be reached; the message is one line with the redacted URL."""


def open_store(settings: Any, check: bool = True, **store_kwargs: Any) -> Any:
    """A :class:`monitor.store.SentimentStore` on a ``COMMAND`` client for ``settings``
    (:class:`monitor.settings.RedisOptions`); pings first when ``check``."""
    import redis

    from monitor.store import SentimentStore

    client = redis_client(settings.redis_url, COMMAND)
    if check:
        try:
            client.ping()
        except redis.RedisError as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RedisUnavailable(
                f"cannot reach Redis at {redact_url(settings.redis_url.get_secret_value())}: {reason}"
            ) from None
    return SentimentStore(client, prefix=settings.redis_prefix, **store_kwargs)
