"""What each ``tracelet`` command does: query the store, then render a table or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import time
from collections.abc import Mapping
from typing import Any

import attrs

from tracelet.analysis.query import QueryEngine
from tracelet.cli.output import (
    emit_json,
    fitted_table,
    jsonable,
    new_table,
    number,
    refuse_existing,
    render,
    run_json,
    seconds,
    when,
    write_file,
)
from tracelet.cli.syncing import sync
from tracelet.exceptions import NotFoundError
from tracelet.settings import TraceletSettings
from tracelet.storage.store import StoredRun
from tracelet.ui.command import run_ui


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
