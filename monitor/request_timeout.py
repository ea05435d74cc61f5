"""ASGI middleware that bounds how long one HTTP request may take before it is answered.

A request whose response has not started after ``seconds`` is answered ``504`` with the API's
JSON error shape; whatever the route still does afterwards is discarded (a sync route finishes in
its worker thread, where every Redis call has its own socket timeout).  A response that already
started streaming is left to finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


class RequestTimeout:
    """Wraps an ASGI app: ``504 {"error": "request took longer than 10s", "status": 504}``."""

    def __init__(self, app: Any, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("the request timeout must be positive")
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "abandoned": False}

        async def guarded_send(message: dict[str, Any]) -> None:
            if state["abandoned"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        done, _ = await asyncio.wait({task}, timeout=self.seconds)
        if task in done or state["started"]:
            await task
            return
        state["abandoned"] = True
        task.add_done_callback(_log_late_failure)
        log.warning("%s %s took longer than %gs: answered 504", scope.get("method"), scope.get("path"),
                    self.seconds)
        body = json.dumps({"error": f"request took longer than {self.seconds:g}s", "status": 504}).encode()
        await send({"type": "http.response.start", "status": 504,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _log_late_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("abandoned request failed later: %s", type(task.exception()).__name__)
