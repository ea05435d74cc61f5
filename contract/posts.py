"""The post message and the result record: the public schema of CONTRACT.md.

Everything that reads posts (``clmlf predict``, the Kafka consumers) parses them
with :func:`parse_post`; everything that writes results builds a
:class:`ResultRecord`.  A record that fails validation raises
:class:`InvalidPost` whose ``reason`` is a short, stable code (used as a metric
label and in the dead-letter envelope) and whose ``detail`` is one readable line.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
MAX_TOPICS = 32
MAX_TOPIC_CHARS = 128
MAX_ASPECT_CHARS = 1_000
MAX_URL_CHARS = 4_096
# 10 MB image cap, base64-inflated (4/3), plus room for the rest of the JSON.
MAX_RECORD_BYTES = 16 * 1024 * 1024
DEFAULT_TOPICS = ("all",)

# Stable reason codes (metric label values and DLQ envelope field).
REASONS = (
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_object",
    "missing_id",
    "bad_id",
    "bad_text",
    "bad_topics",
    "bad_image_url",
    "bad_image_b64",
    "bad_created_at",
    "bad_aspect",
    "bad_lang",
    "no_content",
    "unparseable",
)


class InvalidPost(ValueError):
    """A record that cannot be processed; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Post(BaseModel):
    """A validated post. ``created_at`` is event time in epoch seconds (None: use the record time)."""

    model_config = ConfigDict(frozen=True)

    id: str
    text: str
    topics: tuple[str, ...] = DEFAULT_TOPICS
    image_url: str | None = None
    image_b64: str | None = None
    created_at: float | None = None
    aspect: str | None = None
    lang: str | None = None

    @property
    def has_image_source(self) -> bool:
        return bool(self.image_b64) or bool(self.image_url)


# used: the image was fused; none: the post had no image; failed: it could not be fetched or decoded (text
# alone); ignored: the post had one, but the model was trained without images (never fetched nor decoded).
ImageStatus = Literal["used", "none", "failed", "ignored"]


class ResultRecord(BaseModel):
    """One labelled post, as written to Redis, the output topic and ``clmlf predict`` output."""

    id: str
    label: str
    scores: dict[str, float]
    topics: list[str]
    created_at: str
    processed_at: str
    model: str
    image: ImageStatus

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), ensure_ascii=False, separators=(",", ":"))


def iso_utc(epoch_seconds: float) -> str:
    """Epoch seconds -> ISO-8601 UTC with milliseconds and a trailing ``Z``."""
    dt = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_time(value: Any) -> float:
    """ISO-8601 string or epoch seconds (int/float, not bool) -> epoch seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("boolean is not a time")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ts = dt.timestamp()
    else:
        raise ValueError(f"expected ISO-8601 string or epoch seconds, got {type(value).__name__}")
    if ts != ts or ts in (float("inf"), float("-inf")) or not (0 <= ts < 32503680000):  # year 3000
        raise ValueError("time out of range")
    return ts


def encodes_as_utf8(value: str) -> bool:
    """False for strings that UTF-8 cannot hold (lone surrogates such as ``"\\ud800"`` in JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def canonical_topic(raw: str) -> str:
    """The one normal form of a watch-topic name, or ValueError.

    Unicode NFC, surrounding whitespace stripped, case kept; the result must be
    1..:data:`MAX_TOPIC_CHARS` characters, encodable as UTF-8 (no lone
    surrogates) and free of control characters.  Writers (the parser) and
    readers (``clmlf-monitor query --topic``) apply the same function, so
    ``"Acme "``, ``"Acme"`` and a decomposed ``"Acme\u0301"`` vs ``"Acm\u00e9"`` meet.
    """
    if not encodes_as_utf8(raw):
        raise ValueError("topic is not valid Unicode (lone surrogate)")
    topic = unicodedata.normalize("NFC", raw).strip()
    if not topic or len(topic) > MAX_TOPIC_CHARS:
        raise ValueError(f"each topic must be 1..{MAX_TOPIC_CHARS} non-blank characters")
    if any(unicodedata.category(c) == "Cc" for c in topic):
        raise ValueError("topics may not contain control characters")
    return topic


def _optional_str(obj: dict, key: str, reason: str, max_chars: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPost(reason, f"'{key}' must be a string")
    if len(value) > max_chars:
        raise InvalidPost(reason, f"'{key}' longer than {max_chars} characters")
    if not encodes_as_utf8(value):
        raise InvalidPost(reason, f"'{key}' is not valid Unicode (lone surrogate)")
    return value


def post_from_dict(obj: Any) -> Post:
    """Validate a decoded JSON value against the post schema."""
    if not isinstance(obj, dict):
        raise InvalidPost("not_an_object", f"message must be a JSON object, got {type(obj).__name__}")
    if "id" not in obj or obj["id"] is None:
        raise InvalidPost("missing_id", "message has no 'id'")
    post_id = obj["id"]
    if not isinstance(post_id, str) or not (1 <= len(post_id) <= MAX_ID_CHARS):
        raise InvalidPost("bad_id", f"'id' must be a string of 1..{MAX_ID_CHARS} characters")
    if not encodes_as_utf8(post_id):
        raise InvalidPost("bad_id", "'id' is not valid Unicode (lone surrogate)")

    text = obj.get("text")
    if text is None:
        text = ""
        if "text" not in obj and not (obj.get("image_b64") or obj.get("image_url")):
            raise InvalidPost("bad_text", "'text' is required")
    if not isinstance(text, str):
        raise InvalidPost("bad_text", "'text' must be a string")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidPost("bad_text", f"'text' longer than {MAX_TEXT_CHARS} characters")
    if not encodes_as_utf8(text):
        raise InvalidPost("bad_text", "'text' is not valid Unicode (lone surrogate)")

    topics_raw = obj.get("topics")
    if topics_raw is None or topics_raw == []:
        topics: tuple[str, ...] = DEFAULT_TOPICS
    else:
        if not isinstance(topics_raw, list) or not all(isinstance(t, str) for t in topics_raw):
            raise InvalidPost("bad_topics", "'topics' must be a list of strings")
        if len(topics_raw) > MAX_TOPICS:
            raise InvalidPost("bad_topics", f"more than {MAX_TOPICS} topics")
        try:
            cleaned = [canonical_topic(t) for t in topics_raw]
        except ValueError as exc:
            raise InvalidPost("bad_topics", str(exc)) from None
        topics = tuple(dict.fromkeys(cleaned))  # de-duplicated, order kept

    image_url = _optional_str(obj, "image_url", "bad_image_url", MAX_URL_CHARS)
    if image_url is not None:
        lowered = image_url.lower()
        if not (lowered.startswith("http://") or lowered.startswith("https://")) or len(image_url) < 10:
            raise InvalidPost("bad_image_url", "'image_url' must be an http(s) URL")
    image_b64 = _optional_str(obj, "image_b64", "bad_image_b64", MAX_RECORD_BYTES)

    if not text.strip() and not (image_b64 or image_url):
        raise InvalidPost("no_content", "'text' may be empty only when an image is given")

    created_raw = obj.get("created_at")
    created_at = None
    if created_raw is not None:
        try:
            created_at = parse_time(created_raw)
        except (ValueError, OverflowError, OSError) as exc:
            raise InvalidPost("bad_created_at", f"'created_at': {exc}") from None

    return Post(
        id=post_id,
        text=text,
        topics=topics,
        image_url=image_url,
        image_b64=image_b64,
        created_at=created_at,
        aspect=_optional_str(obj, "aspect", "bad_aspect", MAX_ASPECT_CHARS),
        lang=_optional_str(obj, "lang", "bad_lang", 64),
    )


def parse_post(raw: bytes | str) -> Post:
    """Parse one raw message (Kafka value or JSONL line) into a :class:`Post`.

    Total: every input either returns a :class:`Post` or raises :class:`InvalidPost`
    (an unexpected failure inside validation is reason ``unparseable``), so one
    record can never take its consumer down.
    """
    try:
        return _parse_post(raw)
    except InvalidPost:
        raise
    except Exception as exc:  # one record, one fate: whatever else breaks, this record is rejected
        raise InvalidPost("unparseable", f"{type(exc).__name__}: {exc}"[:300]) from None


def _parse_post(raw: bytes | str) -> Post:
    if raw is None:
        raise InvalidPost("invalid_json", "empty message (tombstone)")
    if isinstance(raw, bytes | bytearray | memoryview):
        if len(raw) > MAX_RECORD_BYTES:
            raise InvalidPost("too_large", f"message larger than {MAX_RECORD_BYTES} bytes")
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidPost("invalid_utf8", f"not valid UTF-8 at byte {exc.start}") from None
    elif len(raw) > MAX_RECORD_BYTES:
        raise InvalidPost("too_large", f"message larger than {MAX_RECORD_BYTES} bytes")
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # ValueError: also Python's int-digit limit (4300 digits)
        raise InvalidPost("invalid_json", f"not valid JSON: {getattr(exc, 'msg', exc)}"[:300]) from None
    return post_from_dict(obj)


def build_result(
    post: Post,
    label: str,
    scores: dict[str, float],
    *,
    event_time: float,
    processed_at: float,
    model: str,
    image: ImageStatus,
) -> ResultRecord:
    return ResultRecord(
        id=post.id,
        label=label,
        scores={k: round(float(v), 6) for k, v in scores.items()},
        topics=list(post.topics),
        created_at=iso_utc(event_time),
        processed_at=iso_utc(processed_at),
        model=model,
        image=image,
    )
