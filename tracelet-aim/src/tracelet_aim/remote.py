"""A remote Aim server's write queue, bounded, and Aim's exit handler, made safe.

Aim sends a remote run's writes from a queue on a thread of its own: each ``track`` is one
websocket message (about 1,000 a second here; several ``track`` calls joined into one
message are slower, as the server unpacks a message in quadratic time), a write is
retried forever while the server is down, and every read (and ``Run.close``) first waits,
without limit, for the queue to empty. These functions wait for the queue with a limit
and, when Tracelet gives a run up, drop what is still queued so that the program can exit
(the journal keeps it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger("tracelet")


def is_remote(run: Any) -> bool:
    """Whether ``run`` writes to a remote Aim server."""
    return bool(run.repo.is_remote_repo)


def _queue(run: Any) -> Any:
    return run.repo._client.get_queue()


def pending(run: Any) -> int:
    """How many messages to the server are not yet acknowledged (0 for a local repo)."""
    return _queue(run)._queue.unfinished_tasks if is_remote(run) else 0


def drained(run: Any, stall: float) -> bool:
    """Wait until the server has acknowledged every message; False once it acknowledged
    none for ``stall`` seconds (a long queue on a working server keeps waiting)."""
    if not is_remote(run):
        return True
    waiting = _queue(run)._queue
    with waiting.all_tasks_done:
        left, deadline = waiting.unfinished_tasks, time.monotonic() + stall
        while waiting.unfinished_tasks:
            if waiting.unfinished_tasks < left:
                left, deadline = waiting.unfinished_tasks, time.monotonic() + stall
            wait = min(deadline - time.monotonic(), 0.5)
            if wait <= 0:
                return False
            waiting.all_tasks_done.wait(wait)
    return True


def sender_alive(run: Any) -> bool:
    """Whether Aim's sending thread still runs (an unexpected server answer ends it)."""
    return not is_remote(run) or _queue(run)._thread.is_alive()


def drop_pending(run: Any) -> int:
    """Drop the messages still queued and stop the sender, so that neither ``close`` nor
    Aim's exit handler waits for a server that is gone. Returns how many were dropped."""
    if not is_remote(run):
        return 0
    requests = _queue(run)
    waiting = requests._queue
    requests._shutdown = True
    with waiting.all_tasks_done:
        dropped = waiting.unfinished_tasks
        waiting.queue.clear()
        waiting.unfinished_tasks = 0
        waiting.all_tasks_done.notify_all()
    return dropped


EXIT_LIMIT = 10.0
"""Seconds Aim's exit handler may take before the program exits anyway."""


def exit_never_hangs() -> None:
    """Make Aim's exit handler finish, within :data:`EXIT_LIMIT`.

    At exit Aim runs every cleanup on a thread and waits for a signal the thread sends
    after the last one: a cleanup that raises (any remote object once its server is gone)
    skips the signal, and one that blocks (a request to a server that stopped answering)
    never ends, and the program hangs forever. Here each cleanup's error is logged and the
    signal comes at the latest after :data:`EXIT_LIMIT` seconds.
    """
    from aim.ext.cleanup import AutoClean

    if getattr(AutoClean._cleanup, "tracelet", False):
        return

    def run_all() -> None:
        ordered = sorted(AutoClean._finalizers.items(), key=lambda item: item[1][0])
        for _, (_, finalizer) in reversed(ordered):
            try:
                finalizer()
            except Exception as error:  # Aim's own, at exit: log it and go on
                logger.debug("tracelet aim: an Aim cleanup at exit failed: %s", error)
        AutoClean.stop_signal.set()

    def cleanup() -> None:
        limit = threading.Timer(EXIT_LIMIT, AutoClean.stop_signal.set)
        limit.daemon = True
        limit.start()
        worker = threading.Thread(target=run_all, name="tracelet-aim-exit", daemon=True)
        worker.start()
        AutoClean.stop_signal.wait()

    cleanup.tracelet = True  # type: ignore[attr-defined]
    AutoClean._cleanup = staticmethod(cleanup)
