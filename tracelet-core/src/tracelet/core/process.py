"""What a run owes the process around it: exit, exceptions, signals and forks.

Once per process, when the first run starts, Tracelet

- registers an ``atexit`` handler that stops every run still running (a forgotten
  ``stop``): killed after SIGTERM or Ctrl-C, failed after an unhandled exception, else
  finished; it runs before the exit handlers tools register when a backend starts them;
- wraps ``sys.excepthook`` and ``sys.exit`` to know whether an unhandled exception or a
  non-zero ``sys.exit`` code ended the program;
- turns SIGTERM into :class:`~tracelet.exceptions.Terminated` in the main thread, where
  SIGTERM still has its default action, so ``with`` blocks end their runs as killed;
- makes a forked child disown its parent's runs: logging to them raises there, and the
  child's exit leaves them alone.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from typing import Any, Protocol

from tracelet.exceptions import Terminated
from tracelet.records import RunStatus

logger = logging.getLogger("tracelet")


class Run(Protocol):
    """What the process hooks need of a running experiment."""

    def stop(self, status: RunStatus | str = ...) -> None: ...

    def _disown(self) -> None: ...


running: set[Run] = set()
"""The runs started in this process and not stopped yet."""
stopping: set[Run] = set()
"""The runs whose ``stop`` is flushing now (a SIGTERM then only marks them killed)."""

_unhandled: list[type[BaseException]] = []
_previous_excepthook: list[Any] = []
_exit_codes: list[object] = []
_previous_exit: list[Any] = []


def status_for(kind: type[BaseException] | None, error: object = None) -> RunStatus:
    """The status of a run ended by ``error``, an exception of type ``kind`` (None: no
    exception). ``SystemExit`` with code 0 or None is a clean end."""
    if kind is None:
        return RunStatus.FINISHED
    if issubclass(kind, KeyboardInterrupt | Terminated):
        return RunStatus.KILLED
    if issubclass(kind, SystemExit):
        code = getattr(error, "code", 1)
        return RunStatus.FINISHED if code in (None, 0) else RunStatus.FAILED
    return RunStatus.FAILED


def watch() -> None:
    """Install the process hooks (once per process)."""
    if _previous_excepthook:
        return
    _previous_excepthook.append(sys.excepthook)
    sys.excepthook = _remember_unhandled
    _previous_exit.append(sys.exit)
    sys.exit = _remember_exit
    atexit.register(_stop_all_at_exit)
    os.register_at_fork(after_in_child=_disown_in_child)
    is_main = threading.current_thread() is threading.main_thread()
    if is_main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


def exit_before_tools() -> None:
    """Make the exit handler run before every one registered so far.

    ``atexit`` runs handlers last-registered first, and a tool registers its own teardown
    when a backend first starts a run in it (W&B's service is the example): runs still
    running at exit must stop, and deliver, while their tools still work. Called each time
    a backend has started a run.
    """
    if _previous_excepthook:
        atexit.unregister(_stop_all_at_exit)
        atexit.register(_stop_all_at_exit)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM: unwind the main thread (``with`` blocks end their runs as killed). During a
    run's ``stop`` it does not interrupt the flush, whose deadline stays as it was: the
    process exits once that stop returns."""
    _unhandled.append(Terminated)
    if stopping:
        _terminate_after_stop.append(signum)
        return
    raise Terminated()


_terminate_after_stop: list[int] = []


def terminate_if_signalled() -> None:
    """Raise the Terminated a SIGTERM during ``stop`` put off (main thread, no run stopping)."""
    main = threading.current_thread() is threading.main_thread()
    if _terminate_after_stop and not stopping and main:
        _terminate_after_stop.clear()
        raise Terminated()


def _disown_in_child() -> None:
    for run in list(running):
        run._disown()
    running.clear()
    stopping.clear()  # (a parent thread was in a stop: a SIGTERM here must not wait for it)
    _terminate_after_stop.clear()


def _remember_unhandled(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    _unhandled.append(kind)
    _previous_excepthook[0](kind, error, tb)


def _remember_exit(code: object = None) -> None:
    """``sys.exit``, remembering the main thread's ``code``: a run stopped at exit after
    ``sys.exit(3)`` failed (``sys.exit`` in another thread ends only that thread)."""
    if threading.current_thread() is threading.main_thread():
        _exit_codes.append(code)
    _previous_exit[0](code)


def _stop_all_at_exit() -> None:
    if _unhandled:
        status = status_for(_unhandled[-1])
    elif _exit_codes:
        status = status_for(SystemExit, SystemExit(_exit_codes[-1]))
    else:
        status = RunStatus.FINISHED
    for run in list(running):
        try:
            run.stop(status)
        except Exception as error:  # pragma: no cover - last-chance reporting
            logger.error("tracelet: could not stop %r at exit: %r", run, error)
