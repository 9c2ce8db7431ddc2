"""Each metric of a run in one line: points, last value and step, min and max.

Kept per run and extended by the batches journaled since (a live run's page reads only
its new rows). Building it sorts the run's points by name (about 1.5 s a million, once);
a finished run that ``tracelet show`` has summarized is read from the store's own
summary table instead.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from tracelet.storage.sql import nan_of
from tracelet.ui.journal import BatchCursor, Span, rows_in, spans

_AGGREGATE = (
    "SELECT key, count(*), min(step), max(step), min(value), max(value), count(*) - count(value)"
    " FROM metrics WHERE id BETWEEN ? AND ? AND run = ? GROUP BY key"
)
_LAST = (  # SQLite takes the bare columns from the row of max(id)
    "SELECT key, max(id), value, step FROM metrics WHERE id BETWEEN ? AND ? AND run = ?"
    " GROUP BY key"
)
_NAMES = "SELECT DISTINCT key FROM metrics WHERE id BETWEEN ? AND ? AND run = ?"
_STORED = (
    "SELECT seq, key, count, last, first_step, last_step, min, max FROM metric_summaries"
    " WHERE run = ? AND seq = (SELECT max(seq) FROM batches WHERE run = ?)"
)


class RunMetrics:
    """The metric summaries of one run, kept up to date with its journal."""

    def __init__(self, run_pk: int) -> None:
        self.run_pk = run_pk
        self.cursor = BatchCursor(run_pk)
        self.metrics: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        """Held by the request that refreshes and reads these summaries."""

    def refresh(self, con: sqlite3.Connection) -> dict[str, dict[str, Any]]:
        """Take in the batches journaled since; return every metric's summary, by name."""
        if not self.cursor.batches:
            self._read_stored(con)
        ranges, restarted = self.cursor.follow(con)
        if restarted:
            self.metrics = {}
        for span in spans(ranges, rows_in(ranges)):
            self._add(con, span)
        return self.metrics

    def _read_stored(self, con: sqlite3.Connection) -> None:
        """Start from the store's own summary table where it is current."""
        rows = con.execute(_STORED, (self.run_pk, self.run_pk)).fetchall()
        for _, key, count, last, first_step, last_step, low, high in rows:
            self.metrics[key] = {
                "count": count,
                "last": nan_of(last),
                "step": last_step,
                "first_step": first_step,
                "last_step": last_step,
                "min": low,
                "max": high,
                "nan": None,
            }
        if rows:  # what the stored summary covers is read
            self.cursor.advance(con, upto=rows[0][0])

    def _add(self, con: sqlite3.Connection, span: Span) -> None:
        args = (*span, self.run_pk)
        for key, count, first_step, last_step, low, high, nan in con.execute(_AGGREGATE, args):
            found = self.metrics.setdefault(key, _empty())
            found["count"] += count
            found["first_step"] = _pick(min, found["first_step"], first_step)
            found["last_step"] = _pick(max, found["last_step"], last_step)
            found["min"] = _pick(min, found["min"], low)
            found["max"] = _pick(max, found["max"], high)
            if found["nan"] is not None:
                found["nan"] += nan
        for key, _, value, step in con.execute(_LAST, args):
            self.metrics[key]["last"] = nan_of(value)
            self.metrics[key]["step"] = step


class RunNames:
    """The names of one run's metrics, kept up to date with its journal (cheaper than
    :class:`RunMetrics`: no sort, about 0.15 s a million points, once)."""

    def __init__(self, run_pk: int) -> None:
        self.run_pk = run_pk
        self.cursor = BatchCursor(run_pk)
        self.names: set[str] = set()
        self.lock = threading.Lock()
        """Held by the request that refreshes and reads these names."""

    def refresh(self, con: sqlite3.Connection) -> list[str]:
        """Take in the batches journaled since; return every metric name, sorted."""
        ranges, restarted = self.cursor.follow(con)
        if restarted:
            self.names = set()
        for span in spans(ranges, rows_in(ranges)):
            self.names.update(key for (key,) in con.execute(_NAMES, (*span, self.run_pk)))
        return sorted(self.names)


def _empty() -> dict[str, Any]:
    return {
        "count": 0,
        "last": None,
        "step": None,
        "first_step": None,
        "last_step": None,
        "min": None,
        "max": None,
        "nan": 0,
    }


def _pick(choose: Any, a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else choose(a, b)
