"""Following one run's journal: the batches written since the last look, as rowid ranges.

The ``metrics`` table has no index but its rowid (the order points were journaled), and
each row of ``batches`` records the rowid range of its points. Reading a run is therefore
a set of rowid range scans; :func:`spans` cuts those ranges into pieces of about equal
size, which the dashboard aggregates one SQL statement each (a range scan needs no sort).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

Span = tuple[int, int]
"""An inclusive range of rowids of the ``metrics`` table."""


class BatchCursor:
    """Where a reader stands in one run's batches: the last ``seq`` it read, and how many."""

    def __init__(self, run_pk: int) -> None:
        self.run_pk = run_pk
        self.seq = 0
        self.batches = 0

    def advance(self, con: sqlite3.Connection, upto: int = 2**63 - 1) -> list[Span] | None:
        """The rowid ranges of the batches journaled since the last call (up to batch
        ``upto``), ascending, and move past them; None when the run's journal no longer
        continues what was read (a run removed and rewritten): then start over from
        :meth:`reset`."""
        rows = con.execute(
            "SELECT seq, first_metric, last_metric FROM batches"
            " WHERE run = ? AND seq > ? AND seq <= ? ORDER BY seq",
            (self.run_pk, self.seq, upto),
        ).fetchall()
        if not rows:
            return []
        (total,) = con.execute(
            "SELECT count(*) FROM batches WHERE run = ? AND seq <= ?", (self.run_pk, rows[-1][0])
        ).fetchone()
        if total != self.batches + len(rows):
            return None
        self.seq, self.batches = rows[-1][0], total
        return sorted((first, last) for _, first, last in rows if first is not None)

    def reset(self) -> None:
        """Read the run from its first batch again."""
        self.seq = self.batches = 0

    def follow(self, con: sqlite3.Connection) -> tuple[list[Span], bool]:
        """The rowid ranges of the batches journaled since the last call, and whether the
        reader must drop what it has read (the journal was rewritten: these ranges are
        then the whole run's)."""
        ranges = self.advance(con)
        if ranges is not None:
            return ranges, False
        self.reset()
        return self.advance(con) or [], True


def spans(ranges: Iterable[Span], size: int) -> list[Span]:
    """Cut rowid ``ranges`` (ascending) into spans of about ``size`` rowids.

    A gap between two ranges (rows of other runs journaled meanwhile) is bridged when it is
    smaller than ``size``, so that runs written side by side cost at most twice the scan
    and never one statement per batch; a larger gap (a run resumed much later) is skipped.
    """
    size = max(1, size)
    found: list[Span] = []
    low = high = None
    for first, last in ranges:
        if low is not None and high is not None and first - high - 1 > size:
            found += _chop(low, high, size)
            low = None
        if low is None:
            low = first
        high = last
    if low is not None and high is not None:
        found += _chop(low, high, size)
    return found


def _chop(low: int, high: int, size: int) -> list[Span]:
    return [(start, min(start + size - 1, high)) for start in range(low, high + 1, size)]


def rows_in(ranges: Iterable[Span]) -> int:
    """How many rowids ``ranges`` cover."""
    return sum(last - first + 1 for first, last in ranges)
