"""Bad records and bad images, end to end through the real broker and Redis.

Every malformed kind of CONTRACT.md lands in ``<topic>.dlq`` with its reason and
an envelope holding the original bytes, while the good records around it are
counted.  Image failures (private address without --allow-private-images, slow
server, decompression bomb, 50 MB body) leave the post text-only with
``image: failed`` and never hold back the rest of the stream.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import zlib

import pytest
from http_testlib import LoopbackServer, QuietHandler
from pipeline_testlib import (
    Member,
    b64_image,
    committed_offsets,
    create_topic,
    png_bytes,
    produce,
    read_topic,
    store_for,
    stored_ids,
)

from contract.posts import MAX_ID_CHARS, MAX_TEXT_CHARS, REASONS

pytestmark = pytest.mark.integration


def bomb_png(side: int = 20000) -> bytes:
    """A real 1-bit PNG of side x side pixels (400 M for 20000) that compresses to ~50 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    raw = zlib.compress(row * side, 9)
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


class ImageServer(LoopbackServer):
    """Loopback HTTP server: /ok.png, /slow.png (sleeps), /bomb.png, /big.png (50 MB); logs request paths."""

    def __init__(self, slow_seconds: float = 8.0) -> None:
        self.requests: list[str] = []
        bodies = {"/ok.png": png_bytes(48), "/private.png": png_bytes(48), "/bomb.png": bomb_png(),
                  "/slow.png": png_bytes(48), "/big.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * (50 * 1024 * 1024 - 8)}
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if self.path == "/slow.png":
                    time.sleep(slow_seconds)
                body = bodies.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_body(body)

        super().__init__(Handler)


@pytest.fixture
def image_server():
    server = ImageServer()
    yield server
    server.close()


def malformed_records(image_base: str) -> dict[str, bytes | None]:
    """One record per reason code of contract.posts.REASONS (value bytes; None = tombstone), except
    ``unparseable``: the parser's catch-all for its own bugs, which no known input reaches."""
    def post(**fields) -> bytes:
        return json.dumps({"id": "bad", "text": "fine", **fields}).encode()
    return {
        "too_large": json.dumps({"id": "huge", "text": "x", "pad": "y" * (17 * 1024 * 1024)}).encode(),
        "invalid_utf8": b'{"id": "u", "text": "\xff\xfe"}',
        "invalid_json": b'{"id": "j", "text": ',
        "not_an_object": b'["id", "text"]',
        "missing_id": b'{"text": "no id here"}',
        "bad_id": post(id="i" * (MAX_ID_CHARS + 1)),
        "bad_text": post(text="t" * (MAX_TEXT_CHARS + 1)),
        "bad_topics": post(topics="brand"),
        "bad_image_url": post(image_url="ftp://example.com/a.png"),
        "bad_image_b64": post(image_b64=12345),
        "bad_created_at": post(created_at="yesterday-ish"),
        "bad_aspect": post(aspect=["x"]),
        "bad_lang": post(lang=7),
        "no_content": post(text="   "),
    }


def test_every_malformed_kind_goes_to_the_dlq_and_good_records_around_it_count(
        tmp_path, broker, redis_server, tiny_checkpoint, unique_name, image_server):
    topic = unique_name
    create_topic(broker, topic, 1)
    bad = malformed_records(image_server.base)
    assert set(bad) == set(REASONS) - {"unparseable"}
    values: list[bytes] = []
    good_ids = []
    for i, (_reason, value) in enumerate(bad.items()):
        good = {"id": f"good{i}", "text": f"nice post number {i}", "topics": ["brand"]}
        good_ids.append(good["id"])
        values += [json.dumps(good).encode(), value]
    # Image cases that need no private-address permission:
    values.append(json.dumps({"id": "inline", "text": "with a picture", "topics": ["brand"],
                              "image_b64": b64_image()}).encode())
    values.append(json.dumps({"id": "inline-bomb", "text": "bomb", "topics": ["brand"],
                              "image_b64": base64.b64encode(bomb_png()).decode()}).encode())
    values.append(json.dumps({"id": "ssrf", "text": "private url", "topics": ["brand"],
                              "image_url": f"{image_server.base}/private.png"}).encode())
    produce(broker.bootstrap, topic, values)

    running = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=topic, group="g",
                     redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                     extra=["--exit-when-idle", "2s"])
    assert running.wait() == 0, running.log()[-3000:]

    store = store_for(redis_server.url, unique_name)
    assert stored_ids(store) == {*good_ids, "inline", "inline-bomb", "ssrf"}
    assert store.window_counts("brand", 3600).total == len(good_ids) + 3
    assert store.get_result("inline")["image"] == "used"
    assert store.get_result("inline-bomb")["image"] == "failed"
    assert store.get_result("ssrf")["image"] == "failed"
    assert "/private.png" not in image_server.requests  # the SSRF guard refused before connecting

    dead = read_topic(broker.bootstrap, f"{topic}.dlq", len(bad))
    assert len(dead) == len(bad)
    by_reason = {}
    for record in dead:
        envelope = json.loads(record.value)
        assert dict(record.headers)["clmlf-dlq-reason"].decode() == envelope["reason"]
        by_reason[envelope["reason"]] = envelope
    assert set(by_reason) == set(bad)
    for reason, value in bad.items():
        envelope = by_reason[reason]
        kept = base64.b64decode(envelope["value_b64"]) if envelope["value_b64"] is not None else b""
        if envelope["value_truncated"]:  # a giant record keeps its size and (at most) a prefix
            assert reason == "too_large" and value.startswith(kept) and envelope["value_bytes"] == len(value)
        else:
            assert kept == value
        assert envelope["topic"] == topic and envelope["partition"] == 0 and envelope["detail"]
    # Everything, dead letters included, is committed: the partition is not blocked.
    assert committed_offsets(broker.bootstrap, "g", topic) == {0: len(values)}


def test_image_failures_degrade_to_text_only_without_stalling_the_stream(
        tmp_path, broker, redis_server, tiny_checkpoint, unique_name, image_server):
    topic = unique_name
    create_topic(broker, topic, 1)
    base = image_server.base
    posts = [
        {"id": "slow", "text": "slow image", "image_url": f"{base}/slow.png"},
        *({"id": f"after{i}", "text": f"plain text {i}"} for i in range(5)),
        {"id": "ok", "text": "good image", "image_url": f"{base}/ok.png"},
        {"id": "bomb", "text": "bomb image", "image_url": f"{base}/bomb.png"},
        {"id": "big", "text": "50 MB image", "image_url": f"{base}/big.png"},
        {"id": "missing", "text": "404 image", "image_url": f"{base}/missing.png"},
    ]
    produce(broker.bootstrap, topic, posts)
    running = Member(tmp_path, "m", bootstrap=broker.bootstrap, topic=topic, group="g",
                     redis_url=redis_server.url, prefix=unique_name, checkpoint=tiny_checkpoint,
                     extra=["--exit-when-idle", "2s", "--allow-private-images", "--image-timeout", "1s"])
    assert running.wait() == 0, running.log()[-3000:]

    store = store_for(redis_server.url, unique_name)
    results = {p["id"]: store.get_result(p["id"]) for p in posts}
    assert all(results.values()), [k for k, v in results.items() if not v]
    assert results["ok"]["image"] == "used"
    for failed in ("slow", "bomb", "big", "missing"):
        assert results[failed]["image"] == "failed", failed
    assert all(results[f"after{i}"]["image"] == "none" for i in range(5))
    # The posts behind the slow image were stored before it gave up: it did not hold them back.
    assert max(results[f"after{i}"]["processed_at"] for i in range(5)) < results["slow"]["processed_at"]
    assert "/slow.png" in image_server.requests
