"""The health extension: probes and metrics, off the event loop's thread."""

import threading

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
