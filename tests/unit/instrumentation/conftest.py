"""Fixtures for instrumentation unit tests: the pipeline with in-memory exporters."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from instrumentation.testing import Captured, capture


@pytest.fixture
def captured() -> Iterator[Captured]:
    with capture(service_name="unit-test") as result:
        yield result


@pytest.fixture
def unsampled(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """The pipeline with a sampler that samples nothing (``always_off``)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with capture(service_name="unit-test") as result:
        yield result
