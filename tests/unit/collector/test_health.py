"""The health extension, and the one app it shares with the receiver (collector.asgi.Router)."""

import threading

from collector.asgi import Router
from collector.extensions.health import HealthExtension
from tests.unit.collector.test_otlp_http import asgi


def health(ready=lambda: True, text="m 1\n"):
    return HealthExtension(ready=ready, render_metrics=lambda: text)


async def test_probes_and_metrics():
    assert await asgi(health(), "/healthz", method="GET") == (
        200,
        {b"content-type": b"text/plain", b"content-length": b"3"},
        b"ok\n",
    )
    assert (await asgi(health(), "/readyz", method="GET"))[::2] == (200, b"ready\n")
    assert (await asgi(health(ready=lambda: False), "/readyz", method="HEAD"))[::2] == (503, b"not ready\n")
    status, headers, body = await asgi(health(), "/metrics", method="GET")
    assert (status, headers[b"content-type"], body) == (200, b"text/plain; version=0.0.4; charset=utf-8", b"m 1\n")


async def test_probes_run_off_the_event_loop_thread():
    threads = []
    loop_thread = threading.current_thread()
    await asgi(health(ready=lambda: threads.append(threading.current_thread()) or True), "/readyz", method="GET")
    assert threads and threads[0] is not loop_thread


async def test_wrong_method_is_405_with_allow():
    status, headers, _ = await asgi(health(), "/healthz", method="POST")
    assert (status, headers[b"allow"]) == (405, b"GET, HEAD")


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
    import pytest

    with pytest.raises(ValueError):
        Router(health(), health())
