"""Tracelet points grouped into W&B history rows, every point keeping its own step.

W&B's history is a sequence of rows; its ``_step`` only grows, a lower step is dropped and a
repeated one merges into the row before. So Tracelet numbers the rows itself (``_step`` is
a row counter that only grows, across resumed sessions too) and writes each row's Tracelet
step under ``tracelet/step``, which every metric uses as its x-axis (``define_metric``).
Out-of-order and repeated steps are then ordinary rows.

A row holds the points of one step logged within :data:`TIME_WINDOW` of its first point
(its ``_timestamp``), at most one per name; a point joins its step's latest row only if
that row comes after the row holding the name's previous point, so each name's points stay
in the order they were logged. Grouping depends on the batch alone: the same batch always
gives the same rows, which lets a batch cut off halfway resume at its first missing row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

TIME_WINDOW = 0.01
"""Seconds: points of one step logged further apart than this go to separate rows."""


@attrs.define
class Row:
    """One W&B history row: a Tracelet step, a timestamp and values by W&B key."""

    step: int
    timestamp: float
    values: dict[str, Any] = attrs.field(factory=dict)


def group_rows(entries: Iterable[tuple[str, Any, int, float]]) -> list[Row]:
    """``(key, value, step, timestamp)`` entries, in logged order, as history rows."""
    rows: list[Row] = []
    latest_of_step: dict[int, int] = {}
    latest_of_key: dict[str, int] = {}
    for key, value, step, timestamp in entries:
        index = latest_of_step.get(step)
        if (
            index is None
            or latest_of_key.get(key, -1) >= index
            or abs(timestamp - rows[index].timestamp) > TIME_WINDOW
        ):
            index = len(rows)
            rows.append(Row(step, timestamp))
            latest_of_step[step] = index
        rows[index].values[key] = value
        latest_of_key[key] = index
    return rows
