"""Small SQLite helpers shared by the store's modules."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from typing import Any

from tracelet.storage.forking import GATE

NAN = math.nan
BUSY_TIMEOUT = 60.0
"""Seconds a statement waits for another connection's lock before it fails."""
_BUSY_CODES = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def nan_of(value: float | None) -> float:
    """A stored value back as a float (NULL is NaN)."""
    return NAN if value is None else value


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


def finite_or_none(value: Any) -> float | None:
    """Anomaly values: NaN is stored as NULL, like metric values."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "database is locked" (busy or locked, any extended code)."""
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _BUSY_CODES


def use_wal(con: sqlite3.Connection, timeout: float = BUSY_TIMEOUT) -> None:
    """Put ``con``'s database in WAL mode (a read once it is), waiting up to ``timeout``
    seconds for other connections.

    SQLite answers this switch with SQLITE_BUSY at once, without calling the busy handler,
    while another process opens the same new file (measured: about 1 in 40 new stores
    opened by 12 processes at once); so it is retried here as the busy handler would.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.05)


class transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception; the whole
    transaction holds the fork gate (:mod:`tracelet.storage.forking`)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        GATE.__enter__()
        try:
            self.con.execute("BEGIN IMMEDIATE")
        except BaseException:
            GATE.__exit__()
            raise
        return self.con

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        try:
            self.con.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            GATE.__exit__()
