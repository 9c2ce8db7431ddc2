"""Bounds on MLflow's own HTTP timeout and retries, on Tracelet's delivery threads only.

MLflow reads ``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and
``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` from the environment at every request; with its
defaults (120 s, 7 retries, factor 2) one request to a server that is down holds its thread
for minutes, and Tracelet's own retry policy never gets a say. Inside :func:`bounded`
those three read as Tracelet's bound (the timeout, no retries, no backoff) on the calling
thread only: the user's own MLflow calls on other threads, and the process environment,
are left exactly as they were.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tracelet.plugins import fork_safe

_bounds = threading.local()
_install_lock = fork_safe(threading.Lock())
_VARIABLES = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "timeout",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "max_retries",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "backoff_factor",
}


class ThreadBound:
    """One of MLflow's environment variables, answering this thread's bound when it has one."""

    def __init__(self, variable: Any, key: str) -> None:
        self.variable = variable
        self.key = key

    def get(self) -> Any:
        """The bound on a bounded thread; elsewhere the variable as MLflow reads it."""
        values = getattr(_bounds, "values", None)
        return self.variable.get() if values is None else values[self.key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.variable, name)

    def __str__(self) -> str:
        return str(self.variable)

    def __repr__(self) -> str:
        return repr(self.variable)


def _install() -> None:
    from mlflow.utils import rest_utils

    with _install_lock:
        for name, key in _VARIABLES.items():
            current = getattr(rest_utils, name)
            if not isinstance(current, ThreadBound):
                setattr(rest_utils, name, ThreadBound(current, key))


@contextmanager
def bounded(timeout: float) -> Iterator[None]:
    """MLflow HTTP requests on this thread: at most ``timeout`` seconds each, no retries."""
    _install()
    previous = getattr(_bounds, "values", None)
    _bounds.values = {"timeout": timeout, "max_retries": 0, "backoff_factor": 0}
    try:
        yield
    finally:
        _bounds.values = previous
