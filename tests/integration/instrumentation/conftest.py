"""Fixtures: the OTLP capture server, and OTel globals reset around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentation.testing import reset_otel_globals
from tests.fakes.otlp import OtlpCapture, otlp_capture_server


@pytest.fixture
def otlp() -> Iterator[tuple[str, OtlpCapture]]:
    with otlp_capture_server() as server:
        yield server


@pytest.fixture
def fresh_otel() -> Iterator[None]:
    reset_otel_globals()
    try:
        yield
    finally:
        reset_otel_globals()
