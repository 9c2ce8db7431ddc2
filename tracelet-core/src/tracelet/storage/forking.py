"""Forks and the local store: a forked child opens the store afresh and never waits on its
parent's locks.

SQLite does not survive ``fork()`` with its connections. A child that opens a new connection
while inherited ones hold locks in the copied memory waits for locks nobody in the child
will release (measured: ``database is locked`` after 60 s in 7 forks of 10, a hang in 2,
when the parent was journaling at the time). So:

- every statement Tracelet runs, and every transaction as a whole, passes :data:`GATE`:
  any number at once, none while a fork is under way, and a statement's rows are read
  before it leaves the gate. A transaction holds the gate from ``BEGIN`` to ``COMMIT``
  (its own statements pass again freely), so no thread ever holds an SQLite lock outside
  the gate, and one waiting at the gate never blocks one inside;
- just before ``fork()`` the gate closes and waits (a few seconds at most) for the
  statements in flight, so no thread is inside SQLite when the process is copied;
- in the child, every inherited connection is closed (a transaction it had open is rolled
  back in the child's memory only: the parent's locks are its own) and each store opens
  new connections on demand.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

FORK_WAIT = 5.0
"""Seconds a fork waits for statements in flight before it goes ahead anyway."""


class ForkGate:
    """Counts the threads using SQLite; a fork closes it until they are done.

    Re-entrant per thread: a thread already inside (in a transaction) passes again even
    while a fork waits, so that it can finish and leave.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (in a forked child: nothing is in flight there)."""
        self._changed = threading.Condition()
        self._depth = threading.local()
        self._active = 0
        self._forking = False

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        if not depth:
            with self._changed:
                while self._forking:
                    self._changed.wait()
                self._active += 1
        self._depth.n = depth + 1

    def __exit__(self, *exc: object) -> None:
        self._depth.n -= 1
        if self._depth.n:
            return
        with self._changed:
            self._active -= 1
            if not self._active:
                self._changed.notify_all()

    def close(self, timeout: float = FORK_WAIT) -> None:
        """Let no new thread in; wait (up to ``timeout``) for those inside."""
        with self._changed:
            self._forking = True
            self._changed.wait_for(lambda: not self._active, timeout)

    def open(self) -> None:
        """Let threads in again."""
        with self._changed:
            self._forking = False
            self._changed.notify_all()


GATE = ForkGate()


class Rows:
    """The result of one statement, read whole inside the gate."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.rows = cursor.fetchall()
        self.lastrowid = cursor.lastrowid
        self.rowcount = cursor.rowcount

    def fetchone(self) -> Any:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        """Every row."""
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class GatedConnection(sqlite3.Connection):
    """A connection whose statements pass :data:`GATE` (``sqlite3.connect(factory=...)``)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Rows:  # type: ignore[override]
        """Run one statement and read its rows, inside the gate."""
        with GATE:
            return Rows(super().execute(sql, parameters))

    def executemany(self, sql: str, rows: Any, /) -> Rows:  # type: ignore[override]
        """Run one statement for each of ``rows``, inside the gate."""
        with GATE:
            return Rows(super().executemany(sql, rows))


class ForkAware(Protocol):
    """A store that can let go of the connections a forked child inherited."""

    def forget_connections(self) -> None: ...


_stores: weakref.WeakSet[Any] = weakref.WeakSet()


def track(store: ForkAware) -> None:
    """Have ``store`` drop its inherited connections in a forked child."""
    _stores.add(store)


def _in_child() -> None:
    GATE.reset()
    for store in list(_stores):
        store.forget_connections()


os.register_at_fork(before=GATE.close, after_in_parent=GATE.open, after_in_child=_in_child)
