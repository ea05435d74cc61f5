"""HTTP server on the metrics port: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the consumer loop's heartbeat is fresh (the loop
is not stuck), 503 otherwise.  ``/readyz`` answers 200 when the member has a
partition assignment (or is still within its startup window) and Redis answers
a PING.  Each probe is a callable returning ``(ok, reason)``, so the server
knows nothing about Kafka or Redis.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

Probe = Callable[[], tuple[bool, str]]
log = logging.getLogger(__name__)


class HealthServer:
    """Serves metrics and probes from a daemon thread; ``close()`` stops it."""

    def __init__(self, host: str, port: int, render_metrics: Callable[[], bytes], healthz: Probe,
                 readyz: Probe) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, render_metrics()),
            "/healthz": lambda: _probe_response(healthz),
            "/readyz": lambda: _probe_response(readyz),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, ctype, body = 404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n"
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:  # a probe must never kill the server
                        status, ctype, body = 500, "text/plain", f"error: {type(exc).__name__}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                log.debug("http %s", format % args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _probe_response(probe: Probe) -> tuple[int, str, bytes]:
    ok, reason = probe()
    body = json.dumps({"ok": ok, "reason": reason}).encode() + b"\n"
    return (200 if ok else 503), "application/json", body
