"""The host guard: instrumentation never raises into the application (except under tests)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from instrumentation._internal.stats import STATS

_logger = logging.getLogger("instrumentation")

STRICT_ENV = "PHONOGLYPH_INSTRUMENTATION_STRICT"
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


def strict() -> bool:
    """Under tests (``PHONOGLYPH_INSTRUMENTATION_STRICT=1``) instrumentation errors surface."""
    return os.environ.get(STRICT_ENV, "") == "1"


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
    except Exception as exc:  # noqa: BLE001 - the whole point: the host app continues
        report(exc)
