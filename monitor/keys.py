"""The Redis key layout of the monitor, in one place (documented in docs/redis.md).

Every key lives under one configurable prefix.  Topic names are embedded as-is
(they are bounded, non-blank strings, see :mod:`contract.posts`); the bucket start
is an integer epoch second, so a key name is always ``prefix:kind:topic:start``
with the start parsed from the right.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR = 3600
TOTAL_FIELD = "_total"


@dataclass(frozen=True)
class KeyLayout:
    """Builds every key name for one prefix."""

    prefix: str = "clmlf"

    def seen(self, post_id: str) -> str:
        """Idempotency marker of one post id (value ``1``, TTL >= the longest retention)."""
        return f"{self.prefix}:seen:{post_id}"

    def result(self, post_id: str) -> str:
        """The result record JSON of one post."""
        return f"{self.prefix}:result:{post_id}"

    def minute(self, topic: str, bucket_start: int) -> str:
        """Hash of counts by label (plus ``_total``) for one topic and one bucket of event time."""
        return f"{self.prefix}:m:{topic}:{bucket_start}"

    def hour(self, topic: str, hour_start: int) -> str:
        """Hourly roll-up hash, same fields as :meth:`minute`, kept longer."""
        return f"{self.prefix}:h:{topic}:{hour_start}"

    def rank(self, kind: str, bucket_start: int, field: str) -> str:
        """Ranked index of one bucket (``kind`` ``m`` = minute, ``h`` = hour): a sorted set
        topic -> count of ``field`` (a label, or ``_total`` for volume) in that bucket."""
        return f"{self.prefix}:rank:{kind}:{bucket_start}:{field}"

    def recent(self, topic: str) -> str:
        """List of the newest result JSONs of one topic (newest first, capped)."""
        return f"{self.prefix}:recent:{topic}"

    @property
    def topics(self) -> str:
        """Sorted set of topics, score = newest event time counted for the topic."""
        return f"{self.prefix}:topics"

    @property
    def labels(self) -> str:
        """Set of every label name ever counted (so zero counts can be reported)."""
        return f"{self.prefix}:labels"

    @property
    def out_of_window(self) -> str:
        """Hash ``future`` / ``expired`` -> count of posts stored but not counted in buckets."""
        return f"{self.prefix}:oow"

    @property
    def alert_stream(self) -> str:
        """Stream of alert events (``fired`` / ``resolved``), capped."""
        return f"{self.prefix}:alerts:stream"

    @property
    def alert_state(self) -> str:
        """Hash ``topic|kind`` -> JSON of the current state of that alert."""
        return f"{self.prefix}:alerts:state"

    def alert_episode(self, topic: str, kind: str, started: int) -> str:
        """Dedup marker of one alert episode (SET NX before writing the stream entry)."""
        return f"{self.prefix}:alerts:episode:{topic}:{kind}:{started}"
