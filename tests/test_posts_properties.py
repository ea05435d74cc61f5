"""Property-based tests of the post parser (Hypothesis): it is total and what it accepts can be stored.

``parse_post`` must, for ANY input (bytes, JSON of any shape, unicode with lone
surrogates, integers past Python's digit limit, deep nesting, every schema field
at and beyond its limit), either return a :class:`Post` or raise
:class:`InvalidPost` with a known reason.  A post it accepts must be storable:
id, topics and every string encode as UTF-8, topics are in canonical form, and
the result record serialises.  The budget is ``CLMLF_FUZZ_EXAMPLES`` (300 in CI).
"""

from __future__ import annotations

import os
import unicodedata

import pytest
from fuzz_testlib import Digits, dumps_hostile, json_values, post_like
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contract.posts import (
    MAX_ID_CHARS,
    MAX_TEXT_CHARS,
    MAX_TOPIC_CHARS,
    MAX_TOPICS,
    REASONS,
    InvalidPost,
    Post,
    build_result,
    canonical_topic,
    parse_post,
)

EXAMPLES = int(os.environ.get("CLMLF_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                             HealthCheck.data_too_large])

def assert_total_and_storable(raw: bytes | str) -> Post | None:
    try:
        post = parse_post(raw)
    except InvalidPost as exc:
        assert exc.reason in REASONS
        assert "\n" not in exc.detail and len(exc.detail) <= 400
        return None
    assert 1 <= len(post.id) <= MAX_ID_CHARS
    post.id.encode("utf-8")
    assert len(post.text) <= MAX_TEXT_CHARS
    assert 1 <= len(post.topics) <= MAX_TOPICS and len(set(post.topics)) == len(post.topics)
    for topic in post.topics:
        assert canonical_topic(topic) == topic
    for value in (post.text, post.aspect, post.lang, post.image_url, post.image_b64):
        if value is not None:
            value.encode("utf-8")
    record = build_result(post, "positive", {"positive": 1.0}, event_time=1.7e9, processed_at=1.7e9,
                          model="m", image="none")
    record.to_json().encode("utf-8")
    return post


@FUZZ
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b"[" * 100_000)
def test_arbitrary_bytes_are_parsed_or_rejected(raw):
    assert_total_and_storable(raw)


@FUZZ
@given(json_values)
def test_arbitrary_json_is_parsed_or_rejected(value):
    assert_total_and_storable(dumps_hostile(value))


@FUZZ
@given(post_like)
@example({"id": "sur\ud800", "text": "x"})
@example({"id": "a", "text": "x", "topics": ["acme\udfff"]})
@example({"id": "a", "text": "x", "n": Digits(5000)})
def test_post_shaped_records_are_parsed_or_rejected(obj):
    raw = dumps_hostile(obj)
    assert_total_and_storable(raw)
    assert_total_and_storable(raw.decode("ascii"))  # the JSONL path of `clmlf predict` gets str


@FUZZ
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1,
                        max_size=MAX_TOPIC_CHARS).filter(lambda t: t.strip()), min_size=1, max_size=MAX_TOPICS))
def test_valid_topics_are_kept_in_canonical_form_and_order(topics):
    post = parse_post(dumps_hostile({"id": "p", "text": "x", "topics": topics}))
    expected = list(dict.fromkeys(unicodedata.normalize("NFC", t).strip() for t in topics))
    if all(1 <= len(t) <= MAX_TOPIC_CHARS for t in expected):
        assert list(post.topics) == expected


@pytest.mark.parametrize(("obj", "reason"), [
    ({"id": "sur\ud800", "text": "x"}, "bad_id"),  # finding 1: a lone surrogate in the id
    ({"id": "a", "text": "x", "topics": ["ok", "acme\udfff"]}, "bad_topics"),  # ... or in a topic
    ({"id": "a", "text": "lone \ud83d half of an emoji"}, "bad_text"),
    ({"id": "a", "text": "x", "aspect": "\udc80"}, "bad_aspect"),
    ({"id": "a", "text": "x", "extra": Digits(5000)}, "invalid_json"),  # finding 2: 5,000 digits
    ({"id": "a", "text": "x", "created_at": Digits(5000)}, "invalid_json"),
    ({"id": "a", "text": "x", "topics": ["a\x00b"]}, "bad_topics"),
    ({"id": "a", "text": "x", "topics": ["\u3000"]}, "bad_topics"),  # ideographic space only: blank
])
def test_records_storage_cannot_hold_are_rejected(obj, reason):
    with pytest.raises(InvalidPost) as info:
        parse_post(dumps_hostile(obj))
    assert info.value.reason == reason


def test_topics_meet_in_one_canonical_form():
    decomposed, composed = "Cafe\u0301", "Caf\u00e9"
    post = parse_post(dumps_hostile({"id": "a", "text": "x", "topics": [f" {decomposed} ", composed, "acme"]}))
    assert post.topics == (composed, "acme")
    assert canonical_topic(" Acme ") == "Acme"  # case is kept
