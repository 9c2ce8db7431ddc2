"""What a run owes the process around it: exit, exceptions, signals and forks.

Once per process, when the first run starts, Tracelet

- registers an ``atexit`` handler that stops every run still running (a forgotten
  ``stop``): killed after SIGTERM or Ctrl-C, failed after an unhandled exception, else
  finished;
- wraps ``sys.excepthook`` to know whether an unhandled exception ended the program;
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


def status_for(kind: type[BaseException] | None) -> RunStatus:
    """The status of a run ended by an exception of type ``kind`` (None: no exception)."""
    if kind is None:
        return RunStatus.FINISHED
    if issubclass(kind, KeyboardInterrupt | Terminated):
        return RunStatus.KILLED
    return RunStatus.FAILED


def watch() -> None:
    """Install the process hooks (once per process)."""
    if _previous_excepthook:
        return
    _previous_excepthook.append(sys.excepthook)
    sys.excepthook = _remember_unhandled
    atexit.register(_stop_all_at_exit)
    os.register_at_fork(after_in_child=_disown_in_child)
    is_main = threading.current_thread() is threading.main_thread()
    if is_main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)


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


def _remember_unhandled(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    _unhandled.append(kind)
    _previous_excepthook[0](kind, error, tb)


def _stop_all_at_exit() -> None:
    status = status_for(_unhandled[-1] if _unhandled else None)
    for run in list(running):
        try:
            run.stop(status)
        except Exception as error:  # pragma: no cover - last-chance reporting
            logger.error("tracelet: could not stop %r at exit: %r", run, error)
