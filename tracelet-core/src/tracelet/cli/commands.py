"""What each ``tracelet`` command does: query the store, then render a table or JSON."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import datetime as dt
import functools
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.analysis.query import QueryEngine
from tracelet.exceptions import NotFoundError
from tracelet.settings import TraceletSettings
from tracelet.storage.store import StoredRun
from tracelet.ui.command import run_ui

if TYPE_CHECKING:
    from tracelet.records import DeliveryState


def run(args: argparse.Namespace) -> int:
    """Dispatch ``args.command``; return the exit status."""
    engine = QueryEngine(args.store or TraceletSettings.load().store_path)
    try:
        return COMMANDS[args.command](engine, args)
    finally:
        engine.close()


def list_runs(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet list``."""
    if not engine.store.list_runs():
        raise NotFoundError(f"the store at {engine.store.path} has no runs yet")
    runs = [
        run_json(row) for row in engine.list_runs(args.project, args.status, args.tag, args.param)
    ]
    if args.json:
        return emit_json(runs)
    rows = [
        [
            r["id"][:12],
            r["name"],
            r["project"],
            r["status"],
            when(r["created_at"]),
            seconds(r["duration_s"]),
        ]
        for r in runs
    ]
    table = fitted_table(LIST_COLUMNS, rows, optional=("duration", "started", "project", "status"))
    render(table if runs else "no runs match these filters")
    return 0


LIST_COLUMNS = ("id", "name", "project", "status", "started", "duration")
METRIC_COLUMNS = ("metric", "last", "min", "max", "points", "last step")


def show(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet show RUN``."""
    summary = run_json(engine.get_run_summary(args.run))
    deliveries = engine.store.deliveries(summary["id"])
    if args.json:
        summary["delivery"] = {d.backend: attrs.asdict(d) for d in deliveries}
        return emit_json(summary)
    head = new_table("", "", show_header=False)
    for label, value in (
        ("id", summary["id"]),
        ("name", summary["name"]),
        ("project", summary["project"]),
        ("status", summary["status"]),
        ("started", when(summary["created_at"])),
        ("duration", seconds(summary["duration_s"])),
        ("steps", str(summary["total_steps"])),
        ("points", f"{summary['total_points']:,}"),
        ("checkpoints", str(summary["checkpoints"])),
        ("anomalies", ", ".join(f"{k}: {n}" for k, n in summary["anomalies"].items()) or "none"),
    ):
        head.add_row(label, value)
    for delivery in deliveries:
        ended = summary["status"] != "running" and not delivery.finished
        note = ", final status not delivered yet" if ended and not delivery.pending else ""
        head.add_row(f"-> {delivery.backend}", delivery.describe() + note)
    rows = [
        [
            name,
            *(number(m[k]) for k in ("last", "min", "max")),
            f"{m['count']:,}",
            str(m["last_step"]),
        ]
        for name, m in summary["metrics"].items()
    ]
    metrics = fitted_table(METRIC_COLUMNS, rows, optional=("last step", "points", "min", "max"))
    params = new_table("parameter", "value")
    for key, value in summary["params"].items():
        params.add_row(key, str(value))
    render(head, metrics, params if summary["params"] else None)
    return 0


def compare(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet compare RUN RUN``."""
    result = compared(engine.compare_runs(*args.runs, metrics=args.metrics))
    if args.json:
        return emit_json(result)
    first, second = result["run_1"]["name"], result["run_2"]["name"]
    table = new_table("metric", f"{first} (last)", f"{second} (last)", "difference")
    for name, sides in result["metrics"].items():
        a, b = sides["run_1"], sides["run_2"]
        table.add_row(
            name,
            number(a["last"]) if a else MISSING,
            number(b["last"]) if b else MISSING,
            number(sides["difference"], signed=True),
        )
    params = new_table("parameter", first, second)
    for key, (a, b) in result["params"].items():
        params.add_row(key, str(a), str(b))
    render(table, params if result["params"] else None)
    return 0


MISSING = "missing"
"""A compared run's cell for a metric it does not have."""


def compared(result: dict[str, Any]) -> dict[str, Any]:
    """``compare_runs``'s result with the runs' fields named as in the API, and no
    difference (None, not NaN) where one run lacks the metric."""
    metrics = {
        name: {**sides, "difference": sides["difference"] if all_there(sides) else None}
        for name, sides in result["metrics"].items()
    }
    run_1, run_2 = run_json(result["run_1"]), run_json(result["run_2"])
    return {**result, "run_1": run_1, "run_2": run_2, "metrics": metrics}


def all_there(sides: Mapping[str, Any]) -> bool:
    """Whether both compared runs have the metric."""
    return sides["run_1"] is not None and sides["run_2"] is not None


def anomalies(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet anomalies RUN [--auto]``."""
    run = engine.resolve(args.run)
    if args.auto:
        from tracelet.analysis import AnomalyDetector

        detector = AnomalyDetector(engine.store)
        detector.store_anomalies(detector.detect_all_anomalies(run.id))
    found = engine.get_anomalies(run.id, args.kinds)
    if args.json:
        return emit_json(found)
    table = new_table("step", "metric", "kind", "severity", "value", "explanation")
    for a in found:
        table.add_row(
            str(a["step"]), a["metric"], a["kind"], a["severity"], number(a["value"]), a["message"]
        )
    hint = "" if args.auto else " (run with --auto to detect now)"
    render(table if found else f"no anomalies stored for {run.name!r}{hint}")
    return 0


def plot(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet plot RUNS METRIC...``: a PNG, one panel per scale; never overwrites a
    file unless ``--force``."""
    from tracelet.cli import chart

    if not 0.0 <= args.smooth < 1.0:
        raise ValueError(f"--smooth must be in [0, 1), got {args.smooth}")
    chart.pyplot()  # without matplotlib, say so before any work
    runs = [engine.resolve(ref.strip()) for ref in args.runs.split(",") if ref.strip()]
    out = args.out or f"{runs[0].name}-{'-'.join(args.metrics)}.png".replace("/", "_")
    refuse_existing(out, args.force)
    series = [
        (
            run,
            name,
            engine.get_metric_history(run.id, name),
            [a for a in engine.get_anomalies(run.id) if a["metric"] == name],
        )
        for run in runs
        for name in args.metrics
    ]
    png, panels = chart.draw(series, args.smooth, args.logy)
    write_file(out, png, args.force)
    for run, name, count in chart.left_out(series) if args.logy else []:
        print(
            f"tracelet: note: --logy leaves out {count} value(s) <= 0 of {name} ({run.name})",
            file=sys.stderr,
        )
    split = f" ({len(panels)} panels: {' | '.join(', '.join(p) for p in panels)})"
    print(f"wrote {out}{split if len(panels) > 1 else ''}")
    return 0


def export(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet export RUN --format csv|json``."""
    run = engine.resolve(args.run)
    if args.out:
        refuse_existing(args.out, args.force)
    points = engine.store.metrics(run.id)
    if args.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["metric", "step", "value", "timestamp"])
        writer.writerows((name, step, repr(value), ts) for name, value, step, ts in points)
        text = buffer.getvalue()
    else:
        document = run_json(engine.get_run_summary(run.id))
        document.pop("metrics")
        document["points"] = [
            {"metric": n, "step": s, "value": v, "timestamp": t} for n, v, s, t in points
        ]
        document["checkpoints"] = engine.store.checkpoints(run.id)
        document["anomalies"] = engine.store.anomalies(run.id)
        text = json.dumps(jsonable(document), indent=2) + "\n"
    if args.out:
        write_file(args.out, text, args.force)
        print(f"wrote {len(points):,} points to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def sync(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet sync [RUN] [--to NAME] [--option K=V] [--timeout S]``: deliver what
    backends did not get, or publish a run into another backend."""
    from rich.progress import Progress

    from tracelet.sync import parse_options, pending, sync_run

    if args.to and not args.run:
        raise ValueError("--to publishes one run: give it, as in `tracelet sync RUN --to NAME`")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise ValueError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    options = parse_options(args.options or [])
    runs = [engine.resolve(args.run).id] if args.run else list(pending(engine.store))
    live = [r.id for r in engine.store.list_runs(status="running")] if not args.run else []
    for run_id in live:
        if run_id not in runs and engine.store.undelivered(run_id):
            print(f"{run_id[:12]}: skipped, still being written (its own process delivers it)")
    if not runs:
        print(NOTHING_TO_SYNC)
        return 0
    deadline = time.monotonic() + args.timeout
    results = []
    with Progress(transient=True, disable=not stdout_is_terminal()) as bar, _logged_to(bar.console):
        watcher = SyncProgress(bar, args.timeout)
        for run_id in runs:
            for result in sync_run(
                engine.store,
                run_id,
                backends=args.backends,
                to=args.to,
                options=options,
                observer=watcher,
                deadline=deadline,
            ):
                results.append(result)
                if result.error is None:
                    bar.console.print(
                        f"{run_id[:12]} {result.backend}: delivered {result.delivered} "
                        "batch(es), 0 left, up to date",
                        soft_wrap=True,
                    )
    if not results:
        print(NOTHING_TO_SYNC)
    failures = [r for r in results if r.error is not None]
    for result in failures:
        why = f"not done at the {args.timeout:g} s --timeout" if result.timed_out else "failed"
        print(
            f"tracelet: error: backend {result.backend!r} {why}; {result.remaining} batch(es) "
            f"of run {result.run_id[:12]} left ({result.error})",
            file=sys.stderr,
        )
    return 1 if failures else 0


NOTHING_TO_SYNC = "nothing to sync: every backend has every batch"


@contextlib.contextmanager
def _logged_to(console: Any) -> Iterator[None]:
    """Tracelet's log lines (a backend unreachable, caught up) as progress lines on
    ``console``, not on standard error, which is left for the final one-line verdicts."""
    tracelet_logger = logging.getLogger("tracelet")
    handler = _ConsoleHandler(console)
    tracelet_logger.addHandler(handler)
    propagate, tracelet_logger.propagate = tracelet_logger.propagate, False
    try:
        yield
    finally:
        tracelet_logger.removeHandler(handler)
        tracelet_logger.propagate = propagate


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Any) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(record.getMessage(), soft_wrap=True, markup=False)


class SyncProgress:
    """Shows a sync as it goes: a bar per backend, a line when one fails or is retried."""

    HEARTBEAT = 10.0
    """Seconds between two lines saying a backend is still being retried."""

    def __init__(self, bar: Any, timeout: float) -> None:
        self.bar = bar
        self.timeout = timeout
        self.tasks: dict[tuple[str, str], Any] = {}
        self.said: dict[tuple[str, str], tuple[str, float]] = {}

    def __call__(self, run_id: str, state: DeliveryState) -> None:
        key = (run_id, state.backend)
        if key not in self.tasks:
            label = f"{run_id[:12]} -> {state.backend}"
            self.tasks[key] = self.bar.add_task(label, total=state.journaled)
        self.bar.update(self.tasks[key], completed=state.delivered, total=state.journaled)
        phase, when = self.said.get(key, ("", 0.0))
        now = time.monotonic()
        if state.phase.value == "retrying" and (
            phase != "retrying" or now - when >= self.HEARTBEAT
        ):
            self.bar.console.print(
                f"{run_id[:12]} {state.backend}: {state.describe()}; retrying for up to "
                f"{self.timeout:g} s (--timeout)",
                soft_wrap=True,
            )
            self.said[key] = (state.phase.value, now)
        elif phase != state.phase.value:
            self.said[key] = (state.phase.value, now)


def gc(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet gc``: remove finished runs older than their ``retention_days`` (the value
    each run was started with; the setting's today for runs that recorded none), or than
    ``--older-than`` days for every run."""
    if args.days is not None and (not math.isfinite(args.days) or args.days < 0):
        raise ValueError(f"--older-than must be a number of days >= 0, got {args.days}")
    default_days = TraceletSettings.load().retention_days
    now = time.time()

    def retention(run: StoredRun) -> float:
        if args.days is not None:
            return float(args.days)
        return float(run.config.get("settings", {}).get("retention_days", default_days))

    old = [
        r
        for r in engine.store.list_runs()
        if r.status.value != "running"
        and (r.ended_at or r.created_at) < now - retention(r) * 86_400
    ]
    backlog = [r for r in old if engine.store.undelivered(r.id)]
    if not args.force:
        for run in backlog:
            print(
                f"kept {run.id[:12]} {run.name!r}: a backend has not received all of it "
                "(tracelet sync, or gc --force)"
            )
        old = [r for r in old if r not in backlog]
    verb = "would remove" if args.dry_run else "removed"
    for run in old:
        if not args.dry_run:
            engine.store.delete_run(run.id)
        print(
            f"{verb} {run.id[:12]} {run.name!r} ({run.project}, {when(run.created_at)}, "
            f"kept {retention(run):g} days)"
        )
    limit = f"{args.days:g} days" if args.days is not None else "their retention_days"
    print(f"{verb} {len(old)} run(s) older than {limit} from {engine.store.path}")
    return 0


COMMANDS = {
    "list": list_runs,
    "show": show,
    "compare": compare,
    "anomalies": anomalies,
    "plot": plot,
    "export": export,
    "sync": sync,
    "gc": gc,
    "ui": run_ui,
}


# -- rendering ---------------------------------------------------------------------------


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
