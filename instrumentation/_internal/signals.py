"""Flush the pipeline when SIGTERM or SIGINT ends the process, whichever server runs the app.

Servers end a process on a signal without running ``atexit`` hooks: uvicorn (single process and each
``--workers`` child) shuts down gracefully, restores the handlers it found and raises the signal again;
gunicorn's ``UvicornWorker`` resets SIGTERM and SIGINT to ``SIG_DFL`` before uvicorn does the same. The
signal then kills the process with everything still queued.

``install()`` keeps one handler of ours on SIGTERM and SIGINT for the life of the process, in front of
whatever handler the program sets (``signal.signal`` and ``signal.getsignal`` are wrapped so the
program keeps seeing and restoring its own handlers):

- the program's handler is a function (uvicorn's graceful shutdown, gunicorn's arbiter): it is called
  as it is, with no flush (requests are still in flight; the server ends the process later);
- ``SIG_DFL`` (the signal will kill the process): shut the pipeline down (flush, Sentry included), then
  restore ``SIG_DFL`` and raise the signal again, so the process dies of it as it would have;
- ``default_int_handler`` (SIGINT raising ``KeyboardInterrupt``): flush, then raise it;
- ``SIG_IGN``: ignored, no handler of ours.

The flush runs on a helper thread joined with a timeout: the interrupted main thread may hold a lock
the export threads need, so a flush on the main thread could wait on itself.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from instrumentation._internal.guard import guarded

FLUSH_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_real_signal = signal.signal
_real_getsignal = signal.getsignal
_chained: dict[int, Any] = {}
"""The handler the program set for each flush signal (what ``signal.getsignal`` answers)."""
_actions: dict[str, Callable[[float], None]] = {}
_TIMEOUT_S = 5.0


def install(*, shutdown: Callable[[float], None], flush: Callable[[float], None]) -> None:
    """Put our handler on SIGTERM and SIGINT (main thread only; once per process).

    ``shutdown(timeout_s)`` runs before the signal kills the process, ``flush(timeout_s)`` before
    ``KeyboardInterrupt`` is raised.
    """
    _actions.update(shutdown=shutdown, flush=flush)
    if _chained or threading.current_thread() is not threading.main_thread():
        return
    with guarded():
        for signum in FLUSH_SIGNALS:
            previous = _real_getsignal(signum)
            if previous is None:  # set outside Python: left alone
                continue
            _chained[signum] = previous
            if previous is not signal.SIG_IGN:
                _real_signal(signum, _handle)
        signal.signal = _signal
        signal.getsignal = _getsignal


def _signal(signalnum: Any, handler: Any) -> Any:
    """``signal.signal``: the program's handler is chained behind ours on a flush signal."""
    if signalnum not in _chained:
        return _real_signal(signalnum, handler)
    real_previous = _real_signal(signalnum, handler)  # validates the call exactly as before
    previous = _chained[signalnum] if real_previous is _handle else real_previous
    _chained[signalnum] = handler
    if handler is not signal.SIG_IGN:
        _real_signal(signalnum, _handle)
    return previous


def _getsignal(signalnum: Any) -> Any:
    current = _real_getsignal(signalnum)
    if current is _handle:
        return _chained.get(signalnum, signal.SIG_DFL)
    return current


def _run_bounded(action: str) -> None:
    function = _actions.get(action)
    if function is None:
        return
    worker = threading.Thread(target=_guarded_call, args=(function,), name="phonoglyph-signal-flush", daemon=True)
    worker.start()
    worker.join(_TIMEOUT_S + 1.0)


def _guarded_call(function: Callable[[float], None]) -> None:
    with guarded():
        function(_TIMEOUT_S)


def _handle(signum: int, frame: FrameType | None) -> None:
    handler = _chained.get(signum, signal.SIG_DFL)
    if handler is signal.SIG_DFL:
        _run_bounded("shutdown")
        _real_signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # dies of it, exit status unchanged
        return
    if handler is signal.default_int_handler:
        _run_bounded("flush")
    if callable(handler):
        handler(signum, frame)
