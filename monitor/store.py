"""Topic sentiment in Redis: idempotent atomic writes and window queries.

Write path: :meth:`SentimentStore.record` sends a whole batch of results to Redis
as ONE Lua script call (``monitor/lua/record.lua``, EVALSHA with a fallback to
EVAL).  Per post the script sets the post-id marker with ``SET NX`` and only when
that succeeds stores the result and increments the per-topic minute bucket and
hourly roll-up of the post's event time, so redelivered or reprocessed posts are
never counted twice, also with many concurrent writers.

Read path: a window is a run of whole buckets ending with the bucket that holds
``now``; its counts are summed from minute buckets (short windows, edges) and
hourly roll-ups (the full hours inside long windows), inside Redis by one Lua
script (``monitor/lua/sum_hashes.lua``) in one round trip.  The key layout is in :mod:`monitor.keys` and docs/redis.md.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from contract.posts import ResultRecord
from monitor.keys import HOUR, TOTAL_FIELD, KeyLayout
from monitor.windows import (
    DEFAULT_BUCKET_TTL,
    DEFAULT_FUTURE_SKEW,
    BucketPart,
    EventWindow,
    WindowCounts,
    classify_event_time,
    order_labels,
    plan_range,
    window_counts_of,
)

DEFAULT_BUCKET_SECONDS = 60
DEFAULT_HOURLY_TTL = 35 * 86400  # hourly roll-ups: 35 days
DEFAULT_RECENT_PER_TOPIC = 100
MAX_POSTS_PER_SCRIPT = 500  # larger batches go as several scripts in one pipeline
MAX_KEYS_PER_SCRIPT = 5000  # bounds how long one read script holds Redis (a few ms)

@dataclass
class WriteReport:
    """``record``'s return value: ``counted``, one bool per result (True = newly counted), and
    ``out_of_window``, how many of the newly stored posts were ``future`` / ``expired``
    (stored as results but not counted in buckets; feed ``clmlf_out_of_window_events_total``)."""

    counted: list[bool] = field(default_factory=list)
    out_of_window: Counter[str] = field(default_factory=Counter)


@dataclass
class SentimentStore:
    """Per-topic sentiment aggregates in Redis (see docs/redis.md for the key layout).

    ``redis_client`` is a ``redis.Redis`` created with ``decode_responses=True``.
    """

    redis_client: Any
    prefix: str = "clmlf"
    bucket_seconds: int = DEFAULT_BUCKET_SECONDS
    bucket_ttl: int = DEFAULT_BUCKET_TTL
    hourly_ttl: int = DEFAULT_HOURLY_TTL
    recent_per_topic: int = DEFAULT_RECENT_PER_TOPIC
    result_ttl: int | None = None
    max_future_skew: float = DEFAULT_FUTURE_SKEW
    keys: KeyLayout = field(init=False)

    def __post_init__(self) -> None:
        if self.bucket_seconds <= 0 or HOUR % self.bucket_seconds:
            raise ValueError(f"bucket_seconds must divide 3600, got {self.bucket_seconds}")
        if self.bucket_ttl < self.bucket_seconds or self.hourly_ttl < self.bucket_ttl:
            raise ValueError("retention must be bucket_seconds <= bucket_ttl <= hourly_ttl")
        if self.recent_per_topic < 1:
            raise ValueError("recent_per_topic must be >= 1")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError("prefix must be a non-empty string without spaces")
        self.keys = KeyLayout(self.prefix)
        lua = resources.files("monitor.lua")
        self._record_script = self.redis_client.register_script(lua.joinpath("record.lua").read_text("utf-8"))
        self._sum_script = self.redis_client.register_script(lua.joinpath("sum_hashes.lua").read_text("utf-8"))
        self._top_script = self.redis_client.register_script(lua.joinpath("top_candidates.lua").read_text("utf-8"))
        self._rank_counts_script = self.redis_client.register_script(
            lua.joinpath("rank_counts.lua").read_text("utf-8"))

    # ------------------------------------------------------------------ write path

    @property
    def seen_ttl(self) -> int:
        """Idempotency marker lifetime: longer than any aggregate that the post could be counted in."""
        return int(self.hourly_ttl + 2 * HOUR + self.max_future_skew)

    def classify(self, ts: float, now: float) -> EventWindow:
        return classify_event_time(ts, now, retention=self.bucket_ttl, max_skew=self.max_future_skew)

    def record(
        self, results: Sequence[tuple[ResultRecord, float]], now: float | None = None
    ) -> WriteReport:
        """Store results with their event times (epoch s) atomically and idempotently.

        ``report.counted`` has one bool per result, True if newly counted (False: that post id was
        already recorded, nothing changed).  ``report.out_of_window`` counts the newly stored results
        whose event time was ``future`` or ``expired``: stored, listed, but not in buckets.
        """
        if not results:
            return WriteReport()
        now = time.time() if now is None else now
        chunks = [results[i : i + MAX_POSTS_PER_SCRIPT] for i in range(0, len(results), MAX_POSTS_PER_SCRIPT)]
        kinds_per_chunk = []
        if len(chunks) == 1:
            keys, args, kinds = self._script_call(chunks[0], now)
            replies = [self._record_script(keys=keys, args=args)]
            kinds_per_chunk.append(kinds)
        else:
            pipe = self.redis_client.pipeline(transaction=False)
            for chunk in chunks:
                keys, args, kinds = self._script_call(chunk, now)
                self._record_script(keys=keys, args=args, client=pipe)
                kinds_per_chunk.append(kinds)
            replies = pipe.execute()
        report = WriteReport()
        for reply, kinds in zip(replies, kinds_per_chunk, strict=True):
            for flag, kind in zip(reply, kinds, strict=True):
                report.counted.append(bool(int(flag)))
                if int(flag) and kind != "ok":
                    report.out_of_window[kind] += 1
        return report

    def _script_call(
        self, results: Sequence[tuple[ResultRecord, float]], now: float
    ) -> tuple[list[str], list[Any], list[EventWindow]]:
        keys = [self.keys.topics, self.keys.labels, self.keys.out_of_window]
        args: list[Any] = [
            self.seen_ttl,
            self.result_ttl or self.bucket_ttl,
            self.recent_per_topic,
            self.bucket_ttl,
            len(results),
        ]
        kinds: list[EventWindow] = []
        for result, event_ts in results:
            kind = self.classify(event_ts, now)
            kinds.append(kind)
            minute_start = int(event_ts // self.bucket_seconds * self.bucket_seconds)
            hour_start = int(event_ts // HOUR * HOUR)
            topics = list(dict.fromkeys(result.topics)) or ["all"]
            keys += [
                self.keys.seen(result.id),
                self.keys.result(result.id),
                self.keys.rank("m", minute_start, result.label),
                self.keys.rank("m", minute_start, TOTAL_FIELD),
                self.keys.rank("h", hour_start, result.label),
                self.keys.rank("h", hour_start, TOTAL_FIELD),
            ]
            for topic in topics:
                keys += [
                    self.keys.minute(topic, minute_start),
                    self.keys.hour(topic, hour_start),
                    self.keys.recent(topic),
                ]
            args += [
                len(topics),
                result.label,
                kind,
                repr(float(event_ts)),
                minute_start + self.bucket_seconds + self.bucket_ttl,
                hour_start + HOUR + self.hourly_ttl,
                result.to_json(),
                *topics,
            ]
        return keys, args, kinds

    # ------------------------------------------------------------------ read path

    def window_bounds(self, window_seconds: float, now: float | None = None) -> tuple[int, int]:
        """``[start, end)`` of the last window: whole buckets, the last one holding ``now``."""
        now = time.time() if now is None else now
        bs = self.bucket_seconds
        end = int(now // bs * bs) + bs
        n_buckets = max(1, math.ceil(window_seconds / bs - 1e-9))
        return end - n_buckets * bs, end

    def _minute_floor(self, now: float) -> int:
        """Start of the oldest minute bucket that can still exist."""
        return int((now - self.bucket_ttl) // self.bucket_seconds * self.bucket_seconds) + self.bucket_seconds

    def _part_key(self, topic: str, part: BucketPart) -> str:
        return self.keys.minute(topic, part.start) if part.kind == "m" else self.keys.hour(topic, part.start)

    def range_counts_many(
        self, topics: Sequence[str], start: int, end: int, now: float | None = None
    ) -> dict[str, WindowCounts]:
        """Counts of several topics over ``[start, end)`` (bucket-aligned) in one round trip."""
        now = time.time() if now is None else now
        plan = plan_range(start, end, self.bucket_seconds, self._minute_floor(now))
        labels, sums = self._sum_groups([[self._part_key(topic, part) for part in plan] for topic in topics])
        return {topic: window_counts_of(topic, totals, labels, start, end) for topic, totals in zip(topics, sums, strict=True)}

    def range_counts(self, topic: str, start: int, end: int, now: float | None = None) -> WindowCounts:
        return self.range_counts_many([topic], start, end, now)[topic]

    def _sum_groups(self, groups: Sequence[Sequence[str]]) -> tuple[list[str], list[Counter[str]]]:
        """Known labels and, per group of bucket keys, the summed fields; summed inside Redis by
        ``sum_hashes.lua`` (one script per ~MAX_KEYS_PER_SCRIPT keys, all in one pipeline)."""
        chunks: list[list[Sequence[str]]] = [[]]
        size = 0
        for group in groups:
            if size and size + len(group) > MAX_KEYS_PER_SCRIPT:
                chunks.append([])
                size = 0
            chunks[-1].append(group)
            size += len(group)
        pipe = self.redis_client.pipeline(transaction=False)
        for chunk in chunks:
            keys = [self.keys.labels] + [key for group in chunk for key in group]
            self._sum_script(keys=keys, args=[len(group) for group in chunk], client=pipe)
        labels: set[str] = set()
        sums: list[Counter[str]] = []
        for reply in pipe.execute():
            labels.update(reply[0])
            for flat in reply[1:]:
                sums.append(Counter({flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}))
        return order_labels(labels), sums

    def window_counts_many(
        self, topics: Sequence[str], window_seconds: float, now: float | None = None
    ) -> dict[str, WindowCounts]:
        """Counts of several topics over the last window, one round trip."""
        now = time.time() if now is None else now
        start, end = self.window_bounds(window_seconds, now)
        counts = self.range_counts_many(topics, start, end, now)
        return {t: replace(c, window_seconds=int(round(window_seconds))) for t, c in counts.items()}

    def window_counts(self, topic: str, window_seconds: float, now: float | None = None) -> WindowCounts:
        """Counts by label of ``topic`` for posts whose event time lies in the last window."""
        return self.window_counts_many([topic], window_seconds, now)[topic]

    def timeseries(
        self, topic: str, window_seconds: float, step_seconds: float, now: float | None = None
    ) -> list[WindowCounts]:
        """Consecutive steps (oldest first) covering the last window, one round trip.

        ``step_seconds`` must be a multiple of the bucket size; the window is rounded up to
        whole steps, the last step ending with the bucket that holds ``now``.
        """
        now = time.time() if now is None else now
        bs = self.bucket_seconds
        step = int(round(step_seconds))
        if step < bs or step % bs:
            raise ValueError(f"step must be a multiple of {bs}s")
        _, end = self.window_bounds(bs, now)
        n_steps = max(1, math.ceil(window_seconds / step - 1e-9))
        start = end - n_steps * step
        floor = self._minute_floor(now)
        starts = range(start, end, step)
        groups = [[self._part_key(topic, part) for part in plan_range(s, s + step, bs, floor)] for s in starts]
        labels, sums = self._sum_groups(groups)
        return [window_counts_of(topic, totals, labels, s, s + step) for s, totals in zip(starts, sums, strict=True)]

    def top_candidates(
        self, field: str, start: int, end: int, depth: int, want: int, now: float | None = None
    ) -> tuple[list[str], float]:
        """Up to ``want`` topics most likely to have the highest count of ``field`` (a label, or
        ``_total`` for volume) over ``[start, end)``, from the ranked index of each bucket.

        One script call reading at most ``depth`` members of each bucket's sorted set: the cost
        grows with the number of buckets of the window and ``depth``, never with the number of
        topics.  Returns the candidates (best first by the counts read) and ``bound``, the most
        any topic left out can have in the range (0: none left out has a count).
        """
        if depth < 1 or want < 1:
            raise ValueError("depth and want must be >= 1")
        now = time.time() if now is None else now
        plan = plan_range(start, end, self.bucket_seconds, self._minute_floor(now))
        if not plan:
            return [], 0.0
        keys = [self.keys.rank(part.kind, part.start, field) for part in plan]
        reply = self._top_script(keys=keys, args=[depth, want])
        return list(reply[1:]), float(reply[0])

    def ranked_counts(
        self, topics: Sequence[str], window_seconds: float, now: float | None = None
    ) -> dict[str, WindowCounts]:
        """Counts of ``topics`` over the last window read from the ranked index (the same numbers
        as :meth:`window_counts_many`, written by the same script): one script per label plus one
        for the totals, each one ZMSCORE per bucket and per 1,000 topics."""
        now = time.time() if now is None else now
        start, end = self.window_bounds(window_seconds, now)
        plan = plan_range(start, end, self.bucket_seconds, self._minute_floor(now))
        topics = list(dict.fromkeys(topics))
        labels = self.labels()
        if not topics:
            return {}
        pipe = self.redis_client.pipeline(transaction=False)
        fields = [*labels, TOTAL_FIELD]
        for name in fields:
            keys = [self.keys.rank(part.kind, part.start, name) for part in plan]
            self._rank_counts_script(keys=keys, args=topics, client=pipe)
        sums = dict(zip(fields, pipe.execute(), strict=True)) if plan else {name: [0] * len(topics) for name in fields}
        seconds = int(round(window_seconds))
        return {
            topic: WindowCounts(topic=topic, window_seconds=seconds, total=int(sums[TOTAL_FIELD][i]),
                                counts={label: int(sums[label][i]) for label in labels}, start=start, end=end)
            for i, topic in enumerate(topics)
        }

    def topics(self, active_since: float | None = None) -> list[tuple[str, float]]:
        """Topics with their newest counted event time, newest first (optionally only recent ones)."""
        low = "-inf" if active_since is None else active_since
        pairs = self.redis_client.zrevrangebyscore(self.keys.topics, "+inf", low, withscores=True)
        return [(name, float(score)) for name, score in pairs]

    def labels(self) -> list[str]:
        return order_labels(self.redis_client.smembers(self.keys.labels))

    def recent(self, topic: str, limit: int = 20) -> list[dict[str, Any]]:
        """The newest stored results of ``topic`` (newest first)."""
        rows = self.redis_client.lrange(self.keys.recent(topic), 0, max(0, limit - 1))
        return [json.loads(row) for row in rows]

    def get_result(self, post_id: str) -> dict[str, Any] | None:
        raw = self.redis_client.get(self.keys.result(post_id))
        return None if raw is None else json.loads(raw)

    def out_of_window_counts(self) -> dict[str, int]:
        raw = self.redis_client.hgetall(self.keys.out_of_window)
        return {kind: int(raw.get(kind, 0)) for kind in ("future", "expired")}

    def ping(self) -> bool:
        return bool(self.redis_client.ping())
