"""Small SQLite helpers shared by the store's modules."""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from tracelet.storage.forking import GATE

NAN = math.nan


def nan_of(value: float | None) -> float:
    """A stored value back as a float (NULL is NaN)."""
    return NAN if value is None else value


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


def finite_or_none(value: Any) -> float | None:
    """Anomaly values: NaN is stored as NULL, like metric values."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


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
