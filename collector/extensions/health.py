"""``GET /healthz`` (the process answers), ``/readyz`` (``ready()``: the outbox answers and is writable) and
``/metrics`` (Prometheus text from ``render_metrics()``); HEAD too, any other method 405.

Probes run on the event loop's default executor, never queued behind ingest work on the receiver's pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from collector.asgi import NOT_FOUND, Receive, Response, Scope, Send, method_not_allowed, send_response

__all__ = ["HealthExtension"]

_METHODS = ("GET", "HEAD")
_METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthExtension:
    paths = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, *, ready: Callable[[], bool], render_metrics: Callable[[], str]) -> None:
        self._ready = ready
        self._render_metrics = render_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_response(send, await self._respond(scope["path"], scope["method"]))

    async def _respond(self, path: str, method: str) -> Response:
        if path not in self.paths:
            return NOT_FOUND
        if method not in _METHODS:
            return method_not_allowed(_METHODS)
        if path == "/healthz":
            return Response(200, b"ok\n", "text/plain")
        loop = asyncio.get_running_loop()
        if path == "/readyz":
            if await loop.run_in_executor(None, self._ready):
                return Response(200, b"ready\n", "text/plain")
            return Response(503, b"not ready\n", "text/plain")
        text = await loop.run_in_executor(None, self._render_metrics)
        return Response(200, text.encode(), _METRICS_CONTENT_TYPE)
