"""signals.install(): our handler stays in front of the program's SIGTERM/SIGINT handlers, invisibly.

Each case runs in a fresh interpreter: the handlers of the test process are left alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_PRELUDE = """
import os, signal, sys
from instrumentation._internal import signals
calls = []
signals.install(shutdown=lambda t: calls.append("shutdown"), flush=lambda t: calls.append("flush"))
"""


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = _PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_the_program_sees_and_restores_its_own_handlers() -> None:
    result = _run(
        """
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        def mine(signum, frame): calls.append("mine")
        assert signal.signal(signal.SIGTERM, mine) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is mine
        signal.raise_signal(signal.SIGTERM)
        assert calls == ["mine"], calls  # a program's own handler: called alone (no flush)
        assert signal.signal(signal.SIGTERM, signal.SIG_IGN) is mine
        signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.signal(signal.SIGUSR1, mine) is signal.SIG_DFL  # other signals untouched
        print("ok", calls)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ['mine']"


def test_a_default_sigterm_shuts_the_pipeline_down_then_kills_the_process() -> None:
    result = _run(
        """
        import atexit
        atexit.register(lambda: print("atexit ran"))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as gunicorn's worker and uvicorn's restore do
        signal.raise_signal(signal.SIGTERM)
        print("survived")
        """
    )
    assert result.returncode == -15
    assert result.stdout == ""


def test_shutdown_runs_before_the_default_action() -> None:
    result = _run(
        """
        def shutdown(timeout_s):
            print("shutdown", timeout_s, flush=True)
        signals._actions["shutdown"] = shutdown
        os.kill(os.getpid(), signal.SIGTERM)
        """
    )
    assert result.returncode == -15
    assert result.stdout == "shutdown 5.0\n"


def test_sigint_flushes_then_raises_keyboard_interrupt() -> None:
    result = _run(
        """
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            print("interrupted", calls)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "interrupted ['flush']"


def test_a_stuck_flush_does_not_keep_the_process_alive() -> None:
    result = _run(
        """
        import threading
        signals._TIMEOUT_S = 0.1
        signals._actions["shutdown"] = lambda t: threading.Event().wait()
        signal.raise_signal(signal.SIGTERM)
        """
    )
    assert result.returncode == -15
