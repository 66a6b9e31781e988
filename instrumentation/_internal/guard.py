"""The host guard: instrumentation never raises into the application (except under tests)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from instrumentation._internal import config
from instrumentation._internal.stats import STATS

_logger = logging.getLogger("instrumentation")

LOG_INTERVAL_S = 60.0


class _RateLimitedLog:
    """Logs at most one line per ``interval_s``; counts the lines it suppressed."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._next_log_at = 0.0
        self._suppressed = 0

    def error(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now < self._next_log_at:
            self._suppressed += 1
            return
        suppressed, self._suppressed = self._suppressed, 0
        self._next_log_at = now + self._interval_s
        _logger.error(
            "instrumentation error; the request continues (%d similar errors suppressed)",
            suppressed,
            exc_info=exc,
        )


_LOG = _RateLimitedLog(LOG_INTERVAL_S)

EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.sdk.metrics._internal.export",
    "instrumentation._internal.batching",
)
"""Loggers of the export path: an unreachable collector must not log a line per batch."""


class RateLimitedLogFilter(logging.Filter):
    """Lets one record per logger through per ``interval_s``; counts the ones it holds back."""

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._next_record_at: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next_record_at.get(record.name, 0.0):
            STATS.increment("log_lines_suppressed")
            return False
        self._next_record_at[record.name] = now + self._interval_s
        return True


def reset_rate_limits() -> None:
    """Forget when each export logger last logged (tests start from a clean slate)."""
    for name in EXPORT_LOGGERS:
        for existing in logging.getLogger(name).filters:
            if isinstance(existing, RateLimitedLogFilter):
                existing._next_record_at.clear()


def rate_limit_export_logs(interval_s: float = LOG_INTERVAL_S) -> None:
    """Install the rate limit on the export path's loggers (once)."""
    for name in EXPORT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RateLimitedLogFilter) for existing in logger.filters):
            logger.addFilter(RateLimitedLogFilter(interval_s))


def strict() -> bool:
    """Under tests (``PHONOGLYPH_INSTRUMENTATION_STRICT=1``) instrumentation errors surface."""
    return config.read(config.STRICT)


def report(exc: Exception) -> None:
    """Count and log an instrumentation failure; re-raise it only under tests."""
    STATS.increment("instrumentation_errors")
    _LOG.error(exc)
    if strict():
        raise exc


@contextmanager
def guarded() -> Iterator[None]:
    """Run instrumentation code; its failure never reaches the host (see ``report``)."""
    try:
        yield
    except Exception as exc:
        report(exc)
