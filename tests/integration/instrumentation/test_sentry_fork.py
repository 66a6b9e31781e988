"""Sentry survives fork: a process configured once, then forked (as gunicorn/uvicorn workers are),
reports errors and spans from the child, linked to the child's trace."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fakes.otlp import otlp_capture_server
from tests.fakes.sentry import FakeSentry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

CHILD_SCRIPT = textwrap.dedent(
    """
    import logging, os, sys
    from instrumentation import configure, operation, semconv, shutdown

    configure(service_name="forked-worker", otlp_endpoint=sys.argv[2], sentry_dsn=sys.argv[1])
    pid = os.fork()
    role = "parent" if pid else "child"
    try:
        with operation("render", {semconv.RENDER_ID: "r_" + role}):
            raise ValueError("render failed in the " + role + " for seed.user@example.com")
    except ValueError:
        logging.getLogger("worker").exception("render failed")
    shutdown()
    if pid:
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    os._exit(0)
    """
)


def test_errors_and_spans_reach_sentry_from_a_forked_child(tmp_path: Path) -> None:
    script = tmp_path / "forked_worker.py"
    script.write_text(CHILD_SCRIPT)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "SENTRY_"))}
    env["PYTHONPATH"] = str(ROOT)
    with FakeSentry() as sentry, otlp_capture_server() as (endpoint, _):
        completed = subprocess.run(
            [sys.executable, str(script), sentry.dsn, endpoint],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        received = sentry.wait_for(lambda fake: len(fake.events) == 2 and len(fake.spans) == 2)
        assert received, (sentry.events, sentry.spans, completed.stderr[-3000:])
        spans = {span["attributes"]["phonoglyph.render.id"]: span for span in sentry.spans}
        events = {}
        for event in sentry.events:
            render_id = event["contexts"]["audio_processing"]["phonoglyph.render.id"]
            events[render_id] = event
        assert set(spans) == set(events) == {"r_parent", "r_child"}
        for render_id, event in events.items():
            assert event["contexts"]["trace"]["trace_id"] == spans[render_id]["trace_id"]
            assert event["tags"]["operation"] == "render"
        assert spans["r_parent"]["trace_id"] != spans["r_child"]["trace_id"]
        assert b"seed.user@example.com" not in sentry.received_bytes()
        assert sentry.errors == []
