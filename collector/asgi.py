"""The little ASGI plumbing the collector's endpoints share: a response, and one app from several.

The collector serves every endpoint on one port: ``Router`` dispatches by path to the endpoint that
declares it (the OTLP receiver, the health extension), answers the lifespan protocol, and 404s the rest
(docs/architecture.md "Collector HTTP").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Endpoint", "Receive", "Response", "Router", "Scope", "Send", "send_response"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def method_not_allowed(methods: Iterable[str]) -> Response:
    """405 with the ``Allow`` header listing the methods the path takes."""
    return Response(405, b"method not allowed\n", "text/plain", ((b"allow", ", ".join(methods).encode()),))


NOT_FOUND = Response(404, b"not found\n", "text/plain")


class Endpoint(Protocol):
    paths: frozenset[str]
    """The paths this endpoint answers (it checks the method itself)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Router:
    """One ASGI app from several endpoints, by path."""

    def __init__(self, *endpoints: Endpoint) -> None:
        self._routes: dict[str, Endpoint] = {}
        for endpoint in endpoints:
            for path in endpoint.paths:
                if path in self._routes:
                    raise ValueError(f"two endpoints serve {path}")
                self._routes[path] = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        endpoint = self._routes.get(scope["path"])
        if endpoint is None:
            await send_response(send, NOT_FOUND)
            return
        await endpoint(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
