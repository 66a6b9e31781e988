"""instrumentation._internal.sentry.client: setup_sentry / shutdown_sentry, without a network."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sentry_sdk
from opentelemetry import propagate
from opentelemetry.sdk.trace import TracerProvider

from instrumentation._internal import fastapi as fastapi_layer
from instrumentation._internal.batching import EncodingSpanProcessor
from instrumentation._internal.sentry import spans
from instrumentation._internal.sentry.client import (
    WEB_FRAMEWORK_INTEGRATIONS,
    setup_sentry,
    shutdown_sentry,
    web_framework_integrations,
)
from instrumentation._internal.sentry.request_errors import report_request_error
from instrumentation._internal.sentry.scopes import RequestScope
from instrumentation.scrubbing import Scrubber

SCRUBBER = Scrubber()


@pytest.fixture
def restore_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


@pytest.mark.parametrize("dsn", [None, ""])
def test_without_dsn_nothing_happens_and_nothing_logs(
    dsn: str | None, caplog: pytest.LogCaptureFixture, restore_propagator: None
) -> None:
    provider = TracerProvider()
    propagator = propagate.get_global_textmap()
    with caplog.at_level(logging.DEBUG):
        assert (
            setup_sentry(dsn=dsn, environment="test", release="1", tracer_provider=provider, scrubber=SCRUBBER) is False
        )
    assert caplog.records == []
    assert not sentry_sdk.get_client().is_active()
    assert propagate.get_global_textmap() is propagator
    assert provider._active_span_processor._span_processors == ()


# -- setup: integrations, the span switch, the request-error handler ------------------------------

UNREACHABLE_DSN = "http://publickey@127.0.0.1:9/1"  # never contacted: these tests send no event


@pytest.fixture
def sentry_setup(restore_propagator: None) -> Iterator[None]:
    try:
        yield
    finally:
        shutdown_sentry(timeout_s=0.1)


@pytest.mark.parametrize(("env", "send_spans", "span_path"), [("on", None, True), ("off", None, False),
                                                               ("off", True, True), ("on", False, False)])  # fmt: skip
def test_setup_adds_the_span_path_to_sentry_unless_switched_off(
    env: str, send_spans: bool | None, span_path: bool, monkeypatch: pytest.MonkeyPatch, sentry_setup: None
) -> None:
    monkeypatch.setenv("PHONOGLYPH_SENTRY_SPANS", env)
    provider = TracerProvider()
    assert setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=provider, scrubber=SCRUBBER,
        send_spans=send_spans,
    )  # fmt: skip
    processors = provider._active_span_processor._span_processors
    assert [type(p) for p in processors] == ([EncodingSpanProcessor] if span_path else [])
    assert spans.active_span_paths() == list(processors)
    assert sentry_sdk.get_client().is_active()  # errors go to Sentry either way
    assert fastapi_layer.REQUEST_ERROR_HANDLERS.count(report_request_error) == 1
    shutdown_sentry(timeout_s=0.1)
    assert report_request_error not in fastapi_layer.REQUEST_ERROR_HANDLERS
    assert not sentry_sdk.get_client().is_active()


def test_setup_sets_the_global_propagator_with_sentry_trace(sentry_setup: None) -> None:
    setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=TracerProvider(), scrubber=SCRUBBER
    )
    assert propagate.get_global_textmap().fields == {"traceparent", "tracestate", "baggage", "sentry-trace"}


def test_each_request_gets_a_sentry_isolation_scope_while_sentry_is_set_up(sentry_setup: None) -> None:
    setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=TracerProvider(), scrubber=SCRUBBER
    )
    assert fastapi_layer.REQUEST_SCOPES.count(RequestScope) == 1
    outer_isolation, outer_current = sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()
    with RequestScope() as request_isolation:
        assert sentry_sdk.get_isolation_scope() is request_isolation is not outer_isolation
        assert sentry_sdk.get_current_scope() is not outer_current
        sentry_sdk.add_breadcrumb(message="this request's own")
        sentry_sdk.set_tag("request", "r_1")
        sentry_sdk.get_current_scope().set_tag("current", "c_1")
    assert (sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()) == (outer_isolation, outer_current)
    assert "this request's own" not in [crumb.get("message") for crumb in outer_isolation._breadcrumbs]
    assert "request" not in outer_isolation._tags and "current" not in outer_current._tags
    shutdown_sentry(timeout_s=0.1)
    assert RequestScope not in fastapi_layer.REQUEST_SCOPES


def test_no_web_framework_integration_hooks_the_request_path(sentry_setup: None) -> None:
    setup_sentry(
        dsn=UNREACHABLE_DSN, environment="test", release="1", tracer_provider=TracerProvider(), scrubber=SCRUBBER
    )
    installed = set(sentry_sdk.get_client().integrations)
    assert {"starlette", "fastapi"} <= {cls.identifier for cls in web_framework_integrations()}
    assert not installed & WEB_FRAMEWORK_INTEGRATIONS
    assert {"logging", "otlp"} <= installed  # errors logged with logger.exception still become events
