"""One app from several endpoints (the receiver and the health extension share a port)."""

import pytest

from collector.asgi import Router
from collector.extensions.health import HealthExtension
from tests.unit.collector.test_otlp_http import asgi


def health():
    return HealthExtension(ready=lambda: True, render_metrics=lambda: "")


async def test_the_router_dispatches_by_path_and_404s_the_rest():
    app = Router(health())
    assert (await asgi(app, "/healthz", method="GET"))[0] == 200
    assert (await asgi(app, "/nope", method="GET"))[0] == 404
    assert (await asgi(app, "/nope", method="POST"))[0] == 404


async def test_the_router_answers_the_lifespan_protocol():
    messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message["type"])

    await Router(health())({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_two_endpoints_cannot_serve_one_path():
    with pytest.raises(ValueError):
        Router(health(), health())
