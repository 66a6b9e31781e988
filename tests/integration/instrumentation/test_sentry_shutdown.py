"""A program that calls ``shutdown()`` in a ``finally:`` still reports the error that ends it.

Sentry's ``sys.excepthook`` runs after the ``finally:``, when the client is already closed; shutdown()
reports the error in flight first, once (an error the program reported itself is not sent twice).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.otlp import otlp_capture_server
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[3]

PROGRAM = r"""
import logging, sys
from instrumentation import configure, shutdown

configure(service_name="shutdown-it")
mode = sys.argv[1]
try:
    if mode == "crash":
        raise RuntimeError("the job store is gone")
    if mode == "logged":
        try:
            raise RuntimeError("reported by the program")
        except RuntimeError:
            logging.getLogger("app").exception("fatal")
            raise
    if mode == "exit":
        sys.exit(3)
finally:
    shutdown()
"""


def _run(mode: str, sentry: FakeSentry, endpoint: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SENTRY_DSN": sentry.dsn,
        "PHONOGLYPH_SENTRY_SPANS": "off",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
    }
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, mode], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(("mode", "returncode", "reported"), [("crash", 1, 1), ("logged", 1, 1), ("exit", 3, 0)])
def test_the_error_that_ends_the_program_is_reported_once(mode: str, returncode: int, reported: int) -> None:
    with FakeSentry() as sentry, otlp_capture_server() as (endpoint, _capture):
        result = _run(mode, sentry, endpoint)
        assert result.returncode == returncode, result.stderr
        assert "RuntimeError" in result.stderr or mode == "exit"  # the traceback is still printed
        if reported:
            assert sentry.wait_for(lambda fake: len(fake.events) >= reported)
        events = sentry.events
        assert sentry.errors == []
    assert len(events) == reported, [e.get("exception") for e in events]
    if reported:
        (exception,) = events[0]["exception"]["values"]
        assert exception["type"] == "RuntimeError"
