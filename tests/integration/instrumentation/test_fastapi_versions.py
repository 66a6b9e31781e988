"""The route, mount, websocket, distro and signal tests again, on another FastAPI than the venv's.

``PHONOGLYPH_FASTAPI_TARGETS``: ``pip install --target`` directories (``os.pathsep``-separated), each with a
FastAPI and the Starlette it pins, e.g. the oldest the project supports::

    .venv/bin/pip install --target /tmp/fastapi-0.115 --no-deps fastapi==0.115.0 starlette==0.38.6

Each runs the tests in a pytest subprocess with that directory first on ``PYTHONPATH`` (the servers those
tests start inherit it). Without the variable, skipped: the suite installs nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[3]
TARGETS = [str(Path(t).resolve()) for t in os.environ.get("PHONOGLYPH_FASTAPI_TARGETS", "").split(os.pathsep) if t]
TESTS = [
    "tests/unit/instrumentation/test_fastapi.py",
    "tests/unit/instrumentation/test_fastapi_routes.py",
    "tests/unit/instrumentation/test_distro.py",
    "tests/integration/instrumentation/test_distro.py",
    "tests/integration/instrumentation/test_distro_routes.py",
    "tests/integration/instrumentation/test_signals.py",
]


@pytest.mark.skipif(not TARGETS, reason="PHONOGLYPH_FASTAPI_TARGETS not set")
@pytest.mark.parametrize("target", TARGETS)
def test_the_fastapi_tests_pass_on_another_fastapi(target: str) -> None:
    python_path = os.pathsep.join(p for p in (target, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": python_path}
    version = subprocess.run(
        [sys.executable, "-c", "import fastapi, starlette; print(fastapi.__file__, fastapi.__version__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert version[0].startswith(target), version
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning", *TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"FastAPI {version[1]}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"
