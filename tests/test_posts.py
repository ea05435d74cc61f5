"""The post message schema of CONTRACT.md: every bad input gets a stable reason code."""

from __future__ import annotations

import json

import pytest

from contract.posts import (
    MAX_ID_CHARS,
    MAX_RECORD_BYTES,
    MAX_TEXT_CHARS,
    InvalidPost,
    build_result,
    iso_utc,
    parse_post,
    parse_time,
)


def _raw(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_minimal_post_gets_default_topic():
    post = parse_post(_raw(id="p1", text="great phone"))
    assert post.id == "p1"
    assert post.topics == ("all",)
    assert post.created_at is None
    assert not post.has_image_source


def test_full_post_round_trip():
    post = parse_post(
        _raw(
            id="p2",
            text="hi",
            topics=["acme", " acme ", "globex"],
            image_url="https://example.com/a.jpg",
            created_at="2026-11-24T10:00:00Z",
            aspect="battery",
            lang="en",
        )
    )
    assert post.topics == ("acme", "globex")
    assert post.created_at == parse_time("2026-11-24T10:00:00+00:00")
    assert post.has_image_source


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (_raw(text="no id"), "missing_id"),
        (_raw(id=None, text="null id"), "missing_id"),
        (_raw(id="", text="x"), "bad_id"),
        (_raw(id=7, text="x"), "bad_id"),
        (_raw(id="x" * (MAX_ID_CHARS + 1), text="x"), "bad_id"),
        (_raw(id="a"), "bad_text"),
        (_raw(id="a", text=5), "bad_text"),
        (_raw(id="a", text="x" * (MAX_TEXT_CHARS + 1)), "bad_text"),
        (_raw(id="a", text=""), "no_content"),
        (_raw(id="a", text="   "), "no_content"),
        (_raw(id="a", text="x", topics="acme"), "bad_topics"),
        (_raw(id="a", text="x", topics=[1]), "bad_topics"),
        (_raw(id="a", text="x", topics=[""]), "bad_topics"),
        (_raw(id="a", text="x", image_url="ftp://host/a.jpg"), "bad_image_url"),
        (_raw(id="a", text="x", image_url="javascript:alert(1)"), "bad_image_url"),
        (_raw(id="a", text="x", image_url=3), "bad_image_url"),
        (_raw(id="a", text="x", image_b64=["x"]), "bad_image_b64"),
        (_raw(id="a", text="x", created_at="yesterday"), "bad_created_at"),
        (_raw(id="a", text="x", created_at=True), "bad_created_at"),
        (_raw(id="a", text="x", created_at=-5), "bad_created_at"),
        (_raw(id="a", text="x", aspect=1), "bad_aspect"),
    ],
)
def test_bad_records_name_their_reason(raw, reason):
    with pytest.raises(InvalidPost) as info:
        parse_post(raw)
    assert info.value.reason == reason
    assert "\n" not in str(info.value)


def test_oversized_record_is_refused_before_decoding():
    with pytest.raises(InvalidPost) as info:
        parse_post(b" " * (MAX_RECORD_BYTES + 1))
    assert info.value.reason == "too_large"


def test_empty_text_allowed_with_image():
    post = parse_post(_raw(id="img-only", text="", image_b64="aGVsbG8="))
    assert post.text == ""
    post = parse_post(_raw(id="img-only2", image_url="https://example.com/x.png"))
    assert post.text == ""


def test_epoch_and_naive_iso_times():
    assert parse_time(1700000000) == 1700000000.0
    assert parse_time("2023-11-14T22:13:20") == 1700000000.0
    assert iso_utc(1700000000.5) == "2023-11-14T22:13:20.500Z"


def test_build_result_matches_contract_fields():
    post = parse_post(_raw(id="r1", text="x", topics=["acme"]))
    record = build_result(
        post,
        "positive",
        {"positive": 0.9, "neutral": 0.05, "negative": 0.05},
        event_time=1700000000,
        processed_at=1700000001,
        model="tiny",
        image="none",
    )
    data = json.loads(record.to_json())
    assert set(data) == {"id", "label", "scores", "topics", "created_at", "processed_at", "model", "image"}
    assert data["topics"] == ["acme"]
    assert data["created_at"] == "2023-11-14T22:13:20.000Z"
