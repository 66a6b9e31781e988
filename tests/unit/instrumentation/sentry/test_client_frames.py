"""setup_sentry: the pipeline's frames are not in-app; a normal WebSocket close is no event."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider
from starlette.websockets import WebSocketDisconnect

from instrumentation._internal.sentry.client import drop_normal_websocket_close, setup_sentry, shutdown_sentry
from instrumentation.scrubbing import Scrubber

UNREACHABLE_DSN = "http://publickey@127.0.0.1:9/1"  # never contacted: no event leaves


@pytest.fixture
def sentry_options() -> Iterator[dict[str, Any]]:
    previous = propagate.get_global_textmap()
    setup_sentry(
        dsn=UNREACHABLE_DSN,
        environment="test",
        release="1",
        tracer_provider=TracerProvider(),
        scrubber=Scrubber(),
        send_spans=False,
    )
    try:
        yield sentry_sdk.get_client().options
    finally:
        shutdown_sentry(0.1)
        propagate.set_global_textmap(previous)


def test_the_pipelines_frames_are_not_in_app(sentry_options: dict[str, Any]) -> None:
    assert "instrumentation" in sentry_options["in_app_exclude"]


def _exc_info(exc: BaseException) -> Any:
    try:
        raise exc
    except BaseException as raised:
        return (type(raised), raised, raised.__traceback__)


@pytest.mark.parametrize(
    ("exc", "dropped"),
    [
        (WebSocketDisconnect(1000), True),
        (WebSocketDisconnect(1001), True),
        (WebSocketDisconnect(1005), True),
        (WebSocketDisconnect(1011), False),
        (WebSocketDisconnect(1006), False),
        (RuntimeError("boom"), False),
    ],
)
def test_a_normal_websocket_close_is_dropped_before_anything_else(exc: BaseException, dropped: bool) -> None:
    seen: list[dict[str, Any]] = []

    def rest(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
        seen.append(event)
        return event

    before_send = drop_normal_websocket_close(rest)
    result = before_send({"level": "error"}, {"exc_info": _exc_info(exc)})
    assert (result is None) is dropped
    assert len(seen) == (0 if dropped else 1)
    assert before_send({"message": "no exception"}, {}) == {"message": "no exception"}


def test_the_before_send_sentry_calls_drops_it(sentry_options: dict[str, Any]) -> None:
    before_send = sentry_options["before_send"]
    assert before_send({}, {"exc_info": _exc_info(WebSocketDisconnect(1000))}) is None
