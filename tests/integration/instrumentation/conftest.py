"""Fixtures: the OTLP capture server, and OTel globals reset around each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentation.testing import reset_otel_globals
from tests.fakes.otlp import OtlpCapture, otlp_capture_server


@pytest.fixture(autouse=True)
def own_spool_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test its own spool directory: nothing one test spools is adopted by the next."""
    directory = str(tmp_path_factory.mktemp("spool"))
    monkeypatch.setenv("PHONOGLYPH_SPOOL_DIR", directory)
    return directory


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
