"""What each ``tracelet`` command does: query the store, then render a table or JSON."""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import json
import logging
import math
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.analysis.query import QueryEngine
from tracelet.exceptions import NotFoundError
from tracelet.settings import TraceletSettings
from tracelet.storage.store import StoredRun

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
    runs = engine.list_runs(args.project, args.status, args.tag, args.param)
    if args.json:
        return emit_json(runs)
    table = new_table("id", "name", "project", "status", "started", "duration")
    for row in runs:
        table.add_row(
            row["run_id"][:12],
            row["run_name"],
            row["project_name"],
            row["status"],
            when(row["start_time"]),
            seconds(row["duration_s"]),
        )
    render(table if runs else "no runs match these filters")
    return 0


def show(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet show RUN``."""
    summary = engine.get_run_summary(args.run)
    deliveries = engine.store.deliveries(summary["run_id"])
    if args.json:
        summary["delivery"] = {d.backend: attrs.asdict(d) for d in deliveries}
        return emit_json(summary)
    head = new_table("run", summary["run_id"], show_header=False)
    for label, value in (
        ("name", summary["run_name"]),
        ("project", summary["project_name"]),
        ("status", summary["status"]),
        ("started", when(summary["start_time"])),
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
    metrics = new_table("metric", "last", "min", "max", "points", "last step")
    for name, m in summary["metrics"].items():
        metrics.add_row(
            name,
            number(m["last"]),
            number(m["min"]),
            number(m["max"]),
            f"{m['count']:,}",
            str(m["last_step"]),
        )
    params = new_table("parameter", "value")
    for key, value in summary["params"].items():
        params.add_row(key, str(value))
    render(head, metrics, params if summary["params"] else None)
    return 0


def compare(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet compare RUN RUN``."""
    result = engine.compare_runs(*args.runs, metrics=args.metrics)
    if args.json:
        return emit_json(result)
    first, second = result["run_1"]["run_name"], result["run_2"]["run_name"]
    table = new_table("metric", f"{first} (last)", f"{second} (last)", "difference")
    for name, sides in result["metrics"].items():
        a, b = sides["run_1"], sides["run_2"]
        table.add_row(
            name,
            number(a["last"]) if a else "-",
            number(b["last"]) if b else "-",
            number(sides["difference"], signed=True),
        )
    params = new_table("parameter", first, second)
    for key, (a, b) in result["params"].items():
        params.add_row(key, str(a), str(b))
    render(table, params if result["params"] else None)
    return 0


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
    """``tracelet plot RUN METRIC...``."""
    from tracelet.cli.chart import draw

    runs = [engine.resolve(ref.strip()) for ref in args.run.split(",") if ref.strip()]
    if not 0.0 <= args.smooth < 1.0:
        raise ValueError(f"--smooth must be in [0, 1), got {args.smooth}")
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
    out = args.out or f"{runs[0].name}-{'-'.join(args.metrics)}.png".replace("/", "_")
    draw(series, out, args.smooth)
    print(f"wrote {out}")
    return 0


def export(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet export RUN --format csv|json``."""
    run = engine.resolve(args.run)
    points = engine.store.metrics(run.id)
    if args.format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["metric", "step", "value", "timestamp"])
        writer.writerows((name, step, repr(value), ts) for name, value, step, ts in points)
        text = buffer.getvalue()
    else:
        document = engine.get_run_summary(run.id)
        document.pop("metrics")
        document["points"] = [
            {"metric": n, "step": s, "value": v, "timestamp": t} for n, v, s, t in points
        ]
        document["checkpoints"] = engine.store.checkpoints(run.id)
        document["anomalies"] = engine.store.anomalies(run.id)
        text = json.dumps(jsonable(document), indent=2) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
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
    deadline = time.monotonic() + args.timeout
    results = []
    with Progress(transient=True) as bar, _logged_to(bar.console):
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
        print("nothing to sync: every backend has every batch")
    failures = [r for r in results if r.error is not None]
    for result in failures:
        why = f"not done at the {args.timeout:g} s --timeout" if result.timed_out else "failed"
        print(
            f"tracelet: error: backend {result.backend!r} {why}; {result.remaining} batch(es) "
            f"of run {result.run_id[:12]} left ({result.error})",
            file=sys.stderr,
        )
    return 1 if failures else 0


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
}


# -- rendering ---------------------------------------------------------------------------


def new_table(*columns: str, show_header: bool = True) -> Any:
    """A rich table with these columns."""
    from rich.table import Table

    table = Table(show_header=show_header, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def render(*parts: Any) -> None:
    """Print tables and messages (None parts are skipped)."""
    from rich.console import Console

    console = Console(soft_wrap=False, width=max(100, Console().width))
    for part in parts:
        if part is not None:
            console.print(part)


def emit_json(data: Any) -> int:
    """Print ``data`` as JSON (NaN and infinities as strings); return 0."""
    print(json.dumps(jsonable(data), indent=2))
    return 0


def jsonable(data: Any) -> Any:
    """``data`` with non-finite floats spelled as strings, so any JSON parser reads it."""
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {str(k): jsonable(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [jsonable(v) for v in data]
    return data


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
