"""Signals that end runs: SIGTERM and SIGINT raise in the main thread where it is safe, and are never lost.

A run interrupted by Ctrl-C (SIGINT) or by a scheduler, a container or CI (SIGTERM) should end
``KILLED`` in MLflow with its error logged (``tracking.tracked_run``). Python runs a signal's
handler in whatever Python code the main thread runs next, and two places there break that:

- a garbage-collection callback (JAX's ``_xla_gc_callback`` runs at every collection) or a
  finaliser, where an exception is printed ("Exception ignored in") and dropped: the run went
  on to the end and was marked FINISHED (6 of 16 SIGTERMs sent in a run's first seconds of
  compiling);
- the tracking store's SQLite transaction: interrupted inside SQLAlchemy, the transaction kept
  the database locked, and marking the run KILLED then failed ("database is locked").

Inside ``signals_raise`` a signal whose handler finds itself in the store's code, or whose
exception was dropped, is delivered again a moment later from a timer thread
(``_thread.interrupt_main``), until it raises in ordinary code.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from typing import Iterator

#: How long after a deferred or dropped signal it is delivered again.
REDELIVER_SECONDS = 0.01
#: Modules whose code a signal waits for (a store's transaction must not be cut in two).
UNSAFE_MODULES = ("sqlalchemy", "sqlite3", "alembic", "mlflow.store")
#: The longest a signal waits for them: a store stuck on a lock does not keep the run alive.
MAX_DEFER_SECONDS = 10.0


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (as KeyboardInterrupt is for SIGINT)."""


def interruption(signum: int) -> BaseException:
    """The exception a signal raises: ``KeyboardInterrupt`` for SIGINT, ``Terminated`` otherwise."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"terminated by signal {signum}")


def in_unsafe_code(frame) -> bool:
    """Whether ``frame`` or any frame that called it runs code of ``UNSAFE_MODULES``."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(UNSAFE_MODULES):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """While inside, SIGINT raises ``KeyboardInterrupt`` and SIGTERM ``Terminated`` in the main thread,
    outside the tracking store's transactions, and neither is lost to a callback that drops
    exceptions (module docstring). Outside the main thread it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deferred_since: dict[int, float] = {}
    inside = threading.Event()

    def deliver(signum: int) -> None:
        if inside.is_set():  # not once the handlers before are back
            _thread.interrupt_main(signum)

    def later(signum: int) -> None:
        threading.Timer(REDELIVER_SECONDS, deliver, (signum,)).start()

    def handler(signum, frame):
        first = deferred_since.setdefault(signum, time.monotonic())
        if in_unsafe_code(frame) and time.monotonic() - first < MAX_DEFER_SECONDS:
            later(signum)
            return
        deferred_since.pop(signum, None)
        raise interruption(signum)

    def redeliver(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            later(signal.SIGINT)  # from the timer: here the handler would run before this hook returns
        elif isinstance(unraisable.exc_value, Terminated):
            later(signal.SIGTERM)
        else:
            previous_hook(unraisable)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, redeliver
    inside.set()
    try:
        yield
    finally:
        inside.clear()
        for signum, old in previous.items():
            signal.signal(signum, old)
        sys.unraisablehook = previous_hook
