"""A run's delivery threads: at most ``max_workers`` of them, shared by its backends' sinks.

A sink is a :class:`Task`: it runs in slices on whichever worker is free, never on two at
once. A slice says when the task wants to run again: at once (more work queued), at a
given time (backing off after a failure), when woken (idle until offered more), or never
(done). A sink that is backing off holds no thread while it waits, so with fewer workers
than backends one backend that is down delays none of the others; being offered a new batch
does not cut its backoff short (only an urgent wake does: stop, abandon).

Workers start on demand, one per task waiting with no idle worker for it, so a run never
has more than it has sinks. A worker whose slice has run for :data:`STUCK_AFTER` seconds
(a call into a backend that hangs) no longer counts against ``max_workers``: when a task is
waiting, another worker is started, so a hung backend never stalls the others.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from enum import Enum
from typing import Protocol

from tracelet.reporting import logger

STUCK_AFTER = 5.0
"""Seconds after which a slice counts as stuck (its worker is replaced while others wait)."""


class Next(Enum):
    """What a slice asks for, besides a time to run again."""

    AGAIN = "again"
    """More to do at once: to the back of the line, so other tasks get a turn."""
    IDLE = "idle"
    """Nothing to do until woken."""
    DONE = "done"
    """Finished for good."""


class Task(Protocol):
    """Work a :class:`DeliveryWorkers` runs in slices."""

    def run_slice(self) -> float | Next:
        """Do some work; return a :class:`Next`, or the ``time.monotonic()`` value at which
        to run again."""
        ...


class _State(Enum):
    IDLE = 0
    QUEUED = 1
    RUNNING = 2
    RUNNING_WOKEN = 3
    """Woken while running: run again after this slice, unless it asks to back off."""
    RUNNING_URGENT = 4
    """Woken urgently while running: run again right after this slice, whatever it asks."""
    PARKED = 5
    DONE = 6


class DeliveryWorkers:
    """At most ``max_workers`` threads (not counting stuck ones) running tasks in slices."""

    def __init__(self, max_workers: int, name: str = "tracelet-delivery") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self.name = name
        self._cond = threading.Condition()
        self._states: dict[Task, _State] = {}
        self._ready: deque[Task] = deque()
        self._parked: list[tuple[float, int, Task]] = []
        self._park_marks: dict[Task, int] = {}
        """The heap entry that is current for each parked task (older ones are stale)."""
        self._order = itertools.count()
        self._started = 0
        self._slices: dict[int, float] = {}
        """Per worker running a slice, when it began."""
        self._closed = False
        self._watchdog: threading.Timer | None = None
        """Set while tasks wait and every worker is busy: looks again for stuck ones."""

    @property
    def threads(self) -> int:
        """Worker threads running now."""
        return self._started

    def wake(self, task: Task, *, urgent: bool = False) -> None:
        """Run ``task`` soon: at once if it is idle, after its slice if it is running. A
        task backing off keeps waiting unless ``urgent``. A finished task stays finished."""
        with self._cond:
            state = self._states.get(task, _State.IDLE)
            if state is _State.IDLE or (urgent and state is _State.PARKED):
                self._queue(task)
            elif state is _State.RUNNING or (urgent and state is _State.RUNNING_WOKEN):
                self._states[task] = _State.RUNNING_URGENT if urgent else _State.RUNNING_WOKEN
            elif state is _State.QUEUED:
                self._start_worker_if_needed()

    def close(self) -> None:
        """Let the workers end once no task is queued (a task still parked is left behind)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals (called with the condition held) --------------------------------------

    def _queue(self, task: Task, *, by_worker: bool = False) -> None:
        """Put ``task`` in line, and see that a worker will take it (a worker queueing it
        takes the next task itself)."""
        self._states[task] = _State.QUEUED
        self._park_marks.pop(task, None)
        self._ready.append(task)
        if not by_worker:
            self._start_worker_if_needed()

    def _start_worker_if_needed(self) -> None:
        """Wake an idle worker, or start one while more tasks wait than there are workers
        not running a slice (idle, notified, or just started: each will take one)."""
        self._cond.notify()
        if len(self._ready) <= self._started - len(self._slices):
            return
        if self._started - self._stuck() < self.max_workers:
            self._started += 1
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{self._started}", daemon=True
            )
            thread.start()
        elif self._watchdog is None and not self._closed:  # look again once one may be stuck
            self._watchdog = threading.Timer(STUCK_AFTER, self._look_again)
            self._watchdog.daemon = True
            self._watchdog.start()

    def _look_again(self) -> None:
        with self._cond:
            self._watchdog = None
            if self._ready:
                self._start_worker_if_needed()

    def _next_task(self) -> Task | None:
        """The next task to run, waiting for one; None when the pool is closed and idle."""
        while True:
            self._unpark_due()
            if self._ready:
                return self._ready.popleft()
            if self._closed:
                return None
            self._cond.wait(self._parked[0][0] - time.monotonic() if self._parked else None)

    def _unpark_due(self) -> None:
        now = time.monotonic()
        while self._parked and self._parked[0][0] <= now:
            _, mark, task = heapq.heappop(self._parked)
            if self._park_marks.get(task) == mark:  # else woken since: a stale entry
                self._queue(task, by_worker=True)

    def _finished_slice(self, task: Task, answer: float | Next) -> None:
        state = self._states.get(task)
        if answer is Next.DONE:
            self._states[task] = _State.DONE
            self._park_marks.pop(task, None)
        elif answer is Next.AGAIN or state is _State.RUNNING_URGENT:
            self._queue(task, by_worker=True)
        elif answer is Next.IDLE:
            if state is _State.RUNNING_WOKEN:
                self._queue(task, by_worker=True)
            else:
                self._states[task] = _State.IDLE
        elif answer <= time.monotonic():
            self._queue(task, by_worker=True)
        else:  # backing off: an offer while it ran does not cut that short
            mark = next(self._order)
            self._states[task] = _State.PARKED
            self._park_marks[task] = mark
            heapq.heappush(self._parked, (answer, mark, task))
            self._cond.notify()  # a waiting worker may need a shorter timeout

    # -- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        """Take tasks until the pool closes. Between two slices the worker keeps the lock,
        so a task it queued for itself is never mistaken for one nobody will take."""
        me = threading.get_ident()
        with self._cond:
            while True:
                task = self._next_task()
                if task is None:
                    self._started -= 1
                    return
                self._states[task] = _State.RUNNING
                self._slices[me] = time.monotonic()
                self._cond.release()
                try:
                    answer = task.run_slice()
                except Exception as error:  # a task handles its own errors; never lose a worker
                    logger.exception("tracelet delivery task %r failed: %r", task, error)
                    answer = Next.DONE
                finally:
                    self._cond.acquire()
                del self._slices[me]
                self._finished_slice(task, answer)
                if self._stuck() + self.max_workers < self._started and not self._ready:
                    self._started -= 1  # a replacement was started while this one was stuck
                    return

    def _stuck(self) -> int:
        now = time.monotonic()
        return sum(1 for began in self._slices.values() if now - began > STUCK_AFTER)
