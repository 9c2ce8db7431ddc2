"""A run's delivery threads: at most ``max_workers`` of them, shared by its backends' sinks.

A sink is a :class:`Task`: it runs in slices on whichever worker is free, never on two at
once. A slice says when the task wants to run again: at once (more work queued), at a
given time (backing off after a failure), when woken (idle until offered more), or never
(done). A sink that is backing off therefore holds no thread while it waits, so with fewer
workers than backends one backend that is down delays none of the others. Workers are
started on demand, so a run never has more of them than it has sinks.
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
    """Woken while running: run again right after this slice."""
    PARKED = 4
    DONE = 5


class DeliveryWorkers:
    """At most ``max_workers`` threads running tasks in slices."""

    def __init__(self, max_workers: int, name: str = "tracelet-delivery") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers = max_workers
        self.name = name
        self._cond = threading.Condition()
        self._states: dict[Task, _State] = {}
        self._ready: deque[Task] = deque()
        self._parked: list[tuple[float, int, Task]] = []
        self._order = itertools.count()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._closed = False

    @property
    def threads(self) -> int:
        """Worker threads started so far."""
        return len(self._threads)

    def wake(self, task: Task) -> None:
        """Run ``task`` soon: now if it is idle or backing off, right after its slice if
        it is running. A finished task stays finished."""
        with self._cond:
            state = self._states.get(task, _State.IDLE)
            if state in (_State.IDLE, _State.PARKED):
                self._queue(task)
            elif state is _State.RUNNING:
                self._states[task] = _State.RUNNING_WOKEN

    def close(self) -> None:
        """Let the workers end once no task is queued (a task still parked is left behind)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- internals (called with the condition held) --------------------------------------

    def _queue(self, task: Task, *, by_worker: bool = False) -> None:
        """Put ``task`` in line; wake an idle worker, or start one (unless a worker queues
        it, and will take it itself)."""
        self._states[task] = _State.QUEUED
        self._ready.append(task)
        if by_worker:
            return
        if self._idle:
            self._cond.notify()
        elif len(self._threads) < self.max_workers:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads) + 1}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _next_task(self) -> Task | None:
        """The next task to run, waiting for one; None when the pool is closed and idle."""
        while True:
            self._unpark_due()
            if self._ready:
                return self._ready.popleft()
            if self._closed:
                return None
            timeout = self._parked[0][0] - time.monotonic() if self._parked else None
            self._idle += 1
            try:
                self._cond.wait(timeout)
            finally:
                self._idle -= 1

    def _due(self) -> bool:
        return bool(self._parked) and self._parked[0][0] <= time.monotonic()

    def _unpark_due(self) -> None:
        while self._due():
            _, _, task = heapq.heappop(self._parked)
            if self._states.get(task) is _State.PARKED:
                self._queue(task, by_worker=True)

    def _finished_slice(self, task: Task, answer: float | Next) -> None:
        key = task
        if answer is Next.DONE:
            self._states[key] = _State.DONE
        elif self._states.get(key) is _State.RUNNING_WOKEN or answer is Next.AGAIN:
            self._queue(task)
        elif answer is Next.IDLE:
            self._states[key] = _State.IDLE
        elif answer <= time.monotonic():
            self._queue(task)
        else:
            self._states[key] = _State.PARKED
            heapq.heappush(self._parked, (answer, next(self._order), task))
            self._cond.notify()  # a waiting worker may need a shorter timeout

    # -- the worker thread ---------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                task = self._next_task()
                if task is None:
                    return
                self._states[task] = _State.RUNNING
            try:
                answer = task.run_slice()
            except Exception as error:  # a task must handle its own errors; never kill a worker
                logger.exception("tracelet delivery task %r failed: %r", task, error)
                answer = Next.DONE
            with self._cond:
                self._finished_slice(task, answer)
