"""A real loopback HTTP server for tests (image URLs, health probes), written once.

``LoopbackServer(Handler)`` binds a free port on 127.0.0.1, serves from a daemon thread and
stops on :meth:`close` (or leaving a ``with`` block); ``base`` is its ``http://host:port``.
Handlers subclass :class:`QuietHandler`: no request log on stderr, and :meth:`QuietHandler.send_body`
answers with a body and its length in one call.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    def send_body(self, body: bytes, content_type: str = "image/png", status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up (a size or time limit under test)
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server API)
        pass


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> None:
        self._httpd = ThreadingHTTPServer((host, 0), handler)
        self._httpd.daemon_threads = True
        self.base = f"http://{host}:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, name="test-http", daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
