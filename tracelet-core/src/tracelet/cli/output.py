"""How the ``tracelet`` commands write their results: rich tables fitted to the terminal's
width (or a wide one for a file or a pipe), JSON that any parser reads (non-finite floats as
strings, sets as sorted lists, runs with the API's field names), files that are never
overwritten without ``--force``, and numbers, dates and durations spelled for a table."""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import functools
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from tracelet.settings import TraceletSettings


def new_table(*columns: str, show_header: bool = True) -> Any:
    """A rich table with these columns; a cell too wide is folded onto more lines, never
    cut (a name or id must stay whole, to be copied)."""
    from rich.table import Table

    table = Table(show_header=show_header, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def fitted_table(columns: Sequence[str], rows: list[list[str]], optional: Sequence[str]) -> Any:
    """A table of ``rows`` that fits the output's width without folding a cell: the
    ``optional`` columns are left out, in that order, until it does (or none is left)."""
    from rich.cells import cell_len

    widths = {c: max([cell_len(c)] + [cell_len(r[i]) for r in rows]) for i, c in enumerate(columns)}
    kept = list(columns)
    for column in optional:
        if sum(widths[c] + 3 for c in kept) + 1 <= output_width():
            break
        kept.remove(column)
    table = new_table(*kept)
    for row in rows:
        table.add_row(*(cell for column, cell in zip(columns, row, strict=True) if column in kept))
    return table


def render(*parts: Any) -> None:
    """Print tables and messages (None parts are skipped)."""
    from rich.console import Console

    console = Console(soft_wrap=False, width=output_width())
    for part in parts:
        if part is not None:
            console.print(part)


WIDE = 200
"""Columns of output that goes to a file or a pipe (and no ``COLUMNS`` says otherwise):
wide enough for a table never to fold there."""


def output_width() -> int:
    """The terminal's columns (or ``COLUMNS``); :data:`WIDE` for a file or a pipe."""
    from rich.console import Console

    if stdout_is_terminal() or os.environ.get("COLUMNS", "").isdigit():
        return Console().width
    return WIDE


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def emit_json(data: Any) -> int:
    """Print ``data`` as JSON (NaN and infinities as strings, sets as sorted lists); 0."""
    print(json.dumps(jsonable(data), indent=2))
    return 0


def jsonable(data: Any) -> Any:
    """``data`` with non-finite floats spelled as strings and sets as sorted lists, so any
    JSON parser reads it."""
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, Mapping):
        return {str(k): jsonable(v) for k, v in data.items()}
    if isinstance(data, set | frozenset):
        return [jsonable(v) for v in _sorted(data)]
    if isinstance(data, list | tuple):
        return [jsonable(v) for v in data]
    return data


RUN_FIELDS = {
    "run_id": "id",
    "run_name": "name",
    "project_name": "project",
    "start_time": "created_at",
    "end_time": "ended_at",
}
"""The query engine's run keys (Tracer's storage names) to the API's (``StoredRun``,
``RunInfo``, ``Experiment``), which the command line uses in tables and JSON."""


FIRST_RUN_FIELDS = ("id", "name", "project", "status", "created_at", "ended_at", "duration_s")
"""A run's fields in JSON start with these, in the order of the ``list`` table."""


def run_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A run row or summary of the query engine with the API's field names (``id``,
    ``name``, ``project``, ``created_at``, ``ended_at`` ...) first, and its stored
    settings' sets as sorted lists."""
    named = {RUN_FIELDS.get(key, key): value for key, value in row.items()}
    first = {key: named.pop(key) for key in FIRST_RUN_FIELDS if key in named}
    if isinstance(named.get("config"), Mapping):
        named["config"] = _config_sets(named["config"])
    return {**first, **named}


def _config_sets(config: Mapping[str, Any]) -> dict[str, Any]:
    """A run's stored configuration with each set-valued setting as a sorted list (the
    store keeps a set as its text, ``"set()"`` or ``"{'a', 'b'}"``)."""
    settings = config.get("settings")
    if not isinstance(settings, Mapping):
        return dict(config)
    fixed = {k: _set_of(v) if k in _set_settings() else v for k, v in settings.items()}
    return {**config, "settings": fixed}


def _set_of(value: Any) -> Any:
    """A stored set (or its text) as a sorted list; anything else as it is."""
    if value == "set()":
        return []
    if isinstance(value, str) and value.startswith("{"):
        with contextlib.suppress(ValueError, SyntaxError, MemoryError, RecursionError):
            value = ast.literal_eval(value)
    return _sorted(value) if isinstance(value, set | frozenset | list) else value


@functools.cache
def _set_settings() -> frozenset[str]:
    """The settings whose value is a set."""
    defaults = TraceletSettings()
    return frozenset(
        field.name
        for field in attrs.fields(TraceletSettings)
        if isinstance(getattr(defaults, field.name), set | frozenset)
    )


def _sorted(values: Any) -> list[Any]:
    """``values`` sorted; by their text where they do not compare."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=repr)


def refuse_existing(path: str, force: bool) -> None:
    """Refuse to go on when ``path`` exists and ``force`` (``--force``) was not given."""
    if not force and os.path.lexists(path):
        raise FileExistsError(f"{path} exists; --force replaces it")


def write_file(path: str, data: str | bytes, force: bool) -> None:
    """Write ``data`` to ``path``, which must not exist unless ``force`` (created
    exclusively: a file that appeared meanwhile is not overwritten either)."""
    mode = ("w" if force else "x") + ("b" if isinstance(data, bytes) else "")
    text = {} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""}
    try:
        with open(path, mode, **text) as handle:
            handle.write(data)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; --force replaces it") from None


def number(value: float | None, signed: bool = False) -> str:
    """A metric value for a table."""
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:+.6g}" if signed else f"{value:.6g}"


def when(timestamp: float | None) -> str:
    """A local date and time."""
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def seconds(duration: float | None) -> str:
    """A duration such as ``1h 02m 03s``."""
    if duration is None:
        return "running"
    minutes, secs = divmod(int(duration), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"
