"""A generated demo feed: a few watch topics, mixed sentiment, images inline and by URL, some junk.

:func:`generate_feed` returns the raw record values (bytes, as a producer sends
them) in a reproducible order for a seed.  :class:`DemoImageServer` serves the
URL images from a loopback HTTP server (so the pipeline must run with
``--allow-private-images``).
"""

from __future__ import annotations

import base64
import io
import json
import random
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOPICS = ("aurora-phone", "brewhouse-coffee", "skyway-air", "#launchday")
PHRASES = {
    "positive": ("absolutely love the new {t}", "{t} made my day, great job", "best purchase this year: {t}",
                 "the {t} team nailed it, so happy", "wow, {t} is fantastic"),
    "neutral": ("just saw an ad for {t}", "{t} announces a press event on Tuesday", "anyone tried {t} yet?",
                "{t} opens at 9am", "reading the {t} spec sheet"),
    "negative": ("{t} is a total disappointment", "worst support ever from {t}", "{t} broke after two days",
                 "so angry at {t} right now, never again", "{t} delayed again, terrible"),
}
COLORS = {"positive": (250, 200, 40), "neutral": (120, 120, 130), "negative": (40, 40, 90)}
MALFORMED = (b'{"id": "broken-json", "text": ', b"\xff\xfe not utf-8", b'["not", "an", "object"]',
             b'{"text": "a post without an id"}', b'{"id": "bad-url", "text": "x", "image_url": "ftp://nope"}')


@dataclass(frozen=True)
class FeedStats:
    posts: int
    malformed: int
    inline_images: int
    url_images: int


def image_png(sentiment: str, seed: int, size: int = 96) -> bytes:
    """A small PNG whose colour follows the sentiment (gradient so it is not flat)."""
    from PIL import Image

    base = COLORS[sentiment]
    img = Image.new("RGB", (size, size), base)
    pixels = img.load()
    for y in range(0, size, 4):
        shade = (y * 2 + seed) % 60
        for x in range(size):
            pixels[x, y] = tuple(min(255, c + shade) for c in base)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def generate_feed(n_posts: int, image_base_url: str | None, seed: int = 7,
                  malformed_every: int = 40) -> tuple[list[bytes], FeedStats]:
    """``n_posts`` valid posts (plus one malformed record every ``malformed_every``), as raw bytes."""
    rng = random.Random(seed)
    values: list[bytes] = []
    inline = url = malformed = 0
    for i in range(n_posts):
        topic = rng.choice(TOPICS)
        # Each topic leans its own way so the table shows differences.
        bias = {"aurora-phone": (0.6, 0.25), "brewhouse-coffee": (0.4, 0.4), "skyway-air": (0.15, 0.3),
                "#launchday": (0.45, 0.2)}[topic]
        roll = rng.random()
        sentiment = "positive" if roll < bias[0] else "neutral" if roll < bias[0] + bias[1] else "negative"
        post = {"id": f"demo-{seed}-{i}", "text": rng.choice(PHRASES[sentiment]).format(t=topic.lstrip("#")),
                "topics": [topic, "all"], "lang": "en"}
        kind = rng.random()
        if kind < 0.15:
            post["image_b64"] = base64.b64encode(image_png(sentiment, i)).decode()
            inline += 1
        elif kind < 0.3 and image_base_url:
            post["image_url"] = f"{image_base_url}/img/{sentiment}/{i}.png"
            url += 1
        values.append(json.dumps(post).encode())
        if malformed_every and i % malformed_every == malformed_every - 1:
            values.append(MALFORMED[(i // malformed_every) % len(MALFORMED)])
            malformed += 1
    return values, FeedStats(n_posts, malformed, inline, url)


class DemoImageServer:
    """Serves ``/img/<sentiment>/<n>.png`` on a free loopback port until :meth:`close`."""

    def __init__(self) -> None:
        cache: dict[str, bytes] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "img" or parts[1] not in COLORS or not parts[2].endswith(".png"):
                    self.send_error(404)
                    return
                with lock:
                    body = cache.get(self.path)
                    if body is None:
                        seed = int(parts[2][:-4]) if parts[2][:-4].isdigit() else 0
                        body = cache[self.path] = image_png(parts[1], seed)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="demo-images", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
