from __future__ import annotations

import logging

import pytest

from instrumentation._internal import guard
from instrumentation._internal.guard import guarded
from instrumentation._internal.stats import STATS


def test_under_tests_instrumentation_errors_surface() -> None:
    with pytest.raises(ZeroDivisionError):
        with guarded():
            1 / 0  # noqa: B018


def test_in_production_errors_are_counted_and_logged_once_per_interval(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("PHONOGLYPH_INSTRUMENTATION_STRICT")
    monkeypatch.setattr(guard, "_LOG", guard._RateLimitedLog(60.0))
    STATS.reset()
    with caplog.at_level(logging.ERROR, logger="instrumentation"):
        for _ in range(3):
            with guarded():
                raise RuntimeError("broken exporter")
    assert STATS.snapshot() == {"instrumentation_errors": 3}
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["instrumentation error; the request continues (0 similar errors suppressed)"]


def test_public_helpers_never_raise_into_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from instrumentation import operation, track
    from instrumentation._internal import pipeline

    class BrokenLogger:
        def emit(self, **kwargs: object) -> None:
            raise RuntimeError("logger is broken")

    monkeypatch.delenv("PHONOGLYPH_INSTRUMENTATION_STRICT")
    monkeypatch.setattr(pipeline.current(), "event_logger", BrokenLogger())
    assert track("project_created")
    with operation("render") as span:
        result = "the app's work still runs"
    assert result and span is not None
