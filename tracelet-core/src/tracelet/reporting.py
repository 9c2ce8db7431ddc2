"""Warnings that are worth reading once: each distinct report reaches the log one time.

Everything Tracelet reports about plugins, backends and collectors goes through
:func:`report_once` on the ``tracelet`` logger, so a failure repeated every second (a
collector, a backend that stays down) is one line, not a flood.
"""

from __future__ import annotations

import logging
import threading

from tracelet.forks import fork_safe

logger = logging.getLogger("tracelet")

_reported: set[tuple[str, str]] = set()
_lock = fork_safe(threading.Lock())


def report_once(subject: str, message: str, level: int = logging.WARNING) -> None:
    """Log ``subject: message`` at ``level`` unless this exact report was already logged."""
    with _lock:
        if (subject, message) in _reported:
            return
        _reported.add((subject, message))
    logger.log(level, "%s: %s", subject, message)
