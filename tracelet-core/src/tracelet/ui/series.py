"""Long metric histories, downsampled in SQL: min and max per bucket, so spikes survive.

A :class:`SeriesIndex` keeps, for one metric of one run, up to ``2 * INDEX_BUCKETS``
buckets over the run's journal: each one SQL aggregate over a range of rowids (count,
first and last step, finite min, max and sum, NaN and infinity counts). It is built once
(a million points in about a quarter of a second: range scans, no sort) and then extended
by the batches journaled since, so a live run's poll reads only its new rows.

A request for a range of steps is then answered from it: every point when the buckets
that touch the range hold no more than ``points`` of them; else, when at least ``points``
buckets touch it, those buckets merged down to ``points`` (the whole history, a live
poll: only a bucket cut by the range's edge is aggregated again, over its own rows);
otherwise a fresh SQL aggregate per bucket over just the rowids of that range (a zoom
reads only what it shows).
"""

from __future__ import annotations

import math
import sqlite3
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracelet.ui.journal import BatchCursor, Span, rows_in, spans

INDEX_BUCKETS = 2048
"""Buckets an index aims for; it holds between this many and twice as many."""
MIN_SPAN_ROWS = 256
"""Fewest rowids per bucket when an index is built (a short run needs no finer index)."""
STEP_MIN, STEP_MAX = -(2**63), 2**63 - 1
BIG = sys.float_info.max

_WHERE = "id BETWEEN :low AND :high AND run = :run AND key = :key AND step BETWEEN :first AND :last"
_QUICK = (
    "SELECT count(*), min(step), max(step), min(value), max(value), sum(value), count(value)"
    f" FROM metrics WHERE {_WHERE}"
)
"""A bucket's aggregate when all its values are finite (nearly always: twice as fast)."""
_FINITE = "CASE WHEN abs(value) <= :big THEN value END"
_FULL = (
    f"SELECT count(*), min(step), max(step), min({_FINITE}), max({_FINITE}), sum({_FINITE}),"
    f" count({_FINITE}), count(*) - count(value), count(CASE WHEN value > :big THEN 1 END),"
    " count(CASE WHEN value < -:big THEN 1 END),"
    f" min(CASE WHEN value IS NULL OR abs(value) > :big THEN step END) FROM metrics WHERE {_WHERE}"
)
"""A bucket's aggregate with NaN and infinities counted apart."""
_POINTS = f"SELECT step, value FROM metrics WHERE {_WHERE} ORDER BY id"


@dataclass(slots=True)
class Bucket:
    """One SQL aggregate over a range of rowids: the points of one metric in it."""

    first_id: int
    last_id: int
    count: int
    first_step: int
    last_step: int
    low: float | None
    """The smallest finite value (None when there is none)."""
    high: float | None
    total: float
    """The sum of the finite values."""
    finite: int
    nan: int
    posinf: int
    neginf: int
    odd_step: int | None
    """The first step whose value is NaN or infinite."""

    def merge(self, other: Bucket) -> Bucket:
        """This bucket and ``other`` (the next one) as one."""
        return Bucket(
            self.first_id,
            other.last_id,
            self.count + other.count,
            min(self.first_step, other.first_step),
            max(self.last_step, other.last_step),
            _pick(min, self.low, other.low),
            _pick(max, self.high, other.high),
            self.total + other.total,
            self.finite + other.finite,
            self.nan + other.nan,
            self.posinf + other.posinf,
            self.neginf + other.neginf,
            _pick(min, self.odd_step, other.odd_step),
        )


def _pick(choose: Any, a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else choose(a, b)


@dataclass(frozen=True, slots=True)
class StepRange:
    """The steps a request asks for: ``first`` to ``last``, both included."""

    first: int = STEP_MIN
    last: int = STEP_MAX

    @classmethod
    def of(cls, start: int | None, end: int | None, after: int | None) -> StepRange:
        """Steps from ``start`` to ``end`` (either open), and after ``after`` only."""
        first = STEP_MIN if start is None else start
        if after is not None:
            first = max(first, after + 1)
        return cls(first, STEP_MAX if end is None else end)

    def touches(self, bucket: Bucket) -> bool:
        """Whether ``bucket`` may hold points of this range."""
        return bucket.last_step >= self.first and bucket.first_step <= self.last

    def covers(self, bucket: Bucket) -> bool:
        """Whether every point of ``bucket`` is in this range."""
        return bucket.first_step >= self.first and bucket.last_step <= self.last


class SeriesIndex:
    """The bucket index of one metric of one run, kept up to date with its journal."""

    def __init__(self, run_pk: int, key: str) -> None:
        self.run_pk, self.key = run_pk, key
        self.cursor = BatchCursor(run_pk)
        self.buckets: list[Bucket] = []
        self.span_rows = 0
        self.lock = threading.Lock()
        """Held by the request that refreshes and reads this index."""

    def refresh(self, con: sqlite3.Connection) -> None:
        """Take in the batches journaled since the last refresh."""
        ranges, restarted = self.cursor.follow(con)
        if restarted:
            self.buckets, self.span_rows = [], 0
        if not ranges:
            return
        if not self.span_rows:
            self.span_rows = max(MIN_SPAN_ROWS, -(-rows_in(ranges) // INDEX_BUCKETS))
        for span in spans(ranges, self.span_rows):
            bucket = self._aggregate(con, span, StepRange())
            if bucket is not None:
                self.buckets.append(bucket)
        while len(self.buckets) > 2 * INDEX_BUCKETS:
            self.buckets = regroup(self.buckets, INDEX_BUCKETS)
            self.span_rows *= 2

    def read(self, con: sqlite3.Connection, steps: StepRange, points: int) -> dict[str, Any]:
        """The points of ``steps``, or at most ``points`` buckets of them (see the module);
        a bucket's min and max are always exact."""
        touched = [b for b in self.buckets if steps.touches(b)]
        if sum(b.count for b in touched) <= points:
            return points_payload(self._points(con, touched, steps))
        if len(touched) >= points:  # the index is fine enough: re-read only its edges
            parts = [b if steps.covers(b) else self._cut(con, b, steps) for b in touched]
            return buckets_payload(regroup([b for b in parts if b is not None], points))
        ranges = [(b.first_id, b.last_id) for b in touched]
        size = -(-rows_in(ranges) // points)
        found = (self._aggregate(con, span, steps) for span in spans(ranges, size))
        return buckets_payload([b for b in found if b is not None])

    def _aggregate(self, con: sqlite3.Connection, span: Span, steps: StepRange) -> Bucket | None:
        args = self._args(span, steps)
        count, first, last, low, high, total, valued = con.execute(_QUICK, args).fetchone()
        if not count:
            return None
        if valued == count and math.isfinite(low) and math.isfinite(high):
            return Bucket(*span, count, first, last, low, high, total, count, 0, 0, 0, None)
        count, first, last, low, high, total, *rest = con.execute(_FULL, args).fetchone()
        return Bucket(*span, count, first, last, low, high, total or 0.0, *rest)

    def _cut(self, con: sqlite3.Connection, bucket: Bucket, steps: StepRange) -> Bucket | None:
        """The part of ``bucket`` inside ``steps`` (None when empty), from its rows."""
        return self._aggregate(con, (bucket.first_id, bucket.last_id), steps)

    def _points(
        self, con: sqlite3.Connection, touched: Sequence[Bucket], steps: StepRange
    ) -> list[tuple[int, float | None]]:
        found: list[tuple[int, float | None]] = []
        for span in _joined(touched):
            found += con.execute(_POINTS, self._args(span, steps)).fetchall()
        found.sort(key=lambda point: point[0])
        return found

    def _args(self, span: Span, steps: StepRange) -> dict[str, Any]:
        low, high = span
        return {
            "low": low,
            "high": high,
            "run": self.run_pk,
            "key": self.key,
            "first": steps.first,
            "last": steps.last,
            "big": BIG,
        }


def _joined(buckets: Sequence[Bucket]) -> list[Span]:
    """The rowid ranges of ``buckets``, neighbours joined (one statement reads each)."""
    joined: list[Span] = []
    for b in buckets:
        if joined and joined[-1][1] + 1 >= b.first_id:
            joined[-1] = (joined[-1][0], b.last_id)
        else:
            joined.append((b.first_id, b.last_id))
    return joined


def regroup(buckets: Sequence[Bucket], most: int) -> list[Bucket]:
    """``buckets`` merged, neighbours with neighbours, into at most ``most`` (exact: counts
    add up, the min of mins and max of maxes stay)."""
    if len(buckets) <= most:
        return list(buckets)
    merged: list[Bucket] = []
    for index in range(most):
        group = buckets[index * len(buckets) // most : (index + 1) * len(buckets) // most]
        if group:
            bucket = group[0]
            for other in group[1:]:
                bucket = bucket.merge(other)
            merged.append(bucket)
    return merged


def points_payload(points: Sequence[tuple[int, float | None]]) -> dict[str, Any]:
    """Every point: ``step`` and ``value`` (null where not finite, listed in ``nonfinite``
    as ``[step, "nan" | "inf" | "-inf"]``)."""
    nonfinite = [[s, _kind(v)] for s, v in points if v is None or not math.isfinite(v)]
    return {
        "kind": "points",
        "total": len(points),
        "step": [s for s, _ in points],
        "value": [v if v is not None and math.isfinite(v) else None for _, v in points],
        "nonfinite": nonfinite,
    }


def buckets_payload(buckets: Sequence[Bucket]) -> dict[str, Any]:
    """One entry per bucket, in step order: its middle ``step``, ``first_step``,
    ``last_step``, ``count``, finite ``low``, ``high`` and ``mean`` (null when it has none),
    and ``nonfinite`` as ``[first odd step, kind, how many]`` per bucket that has any."""
    ordered = sorted(buckets, key=lambda b: (b.first_step + b.last_step, b.first_id))
    return {
        "kind": "buckets",
        "total": sum(b.count for b in ordered),
        "step": [(b.first_step + b.last_step) / 2 for b in ordered],
        "first_step": [b.first_step for b in ordered],
        "last_step": [b.last_step for b in ordered],
        "count": [b.count for b in ordered],
        "low": [b.low for b in ordered],
        "high": [b.high for b in ordered],
        "mean": [_mean(b) for b in ordered],
        "nonfinite": [_odd(b) for b in ordered if b.odd_step is not None],
    }


def _odd(bucket: Bucket) -> list[Any]:
    kind = "nan" if bucket.nan else "inf" if bucket.posinf else "-inf"
    return [bucket.odd_step, kind, bucket.nan + bucket.posinf + bucket.neginf]


def _mean(bucket: Bucket) -> float | None:
    mean = bucket.total / bucket.finite if bucket.finite else math.nan
    return mean if math.isfinite(mean) else None


def _kind(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"
