"""Tracelet into ClearML against ClearML's own ``Logger.report_scalar``, offline, read back.

Run from the repository root::

    python benchmarks/clearml_backend.py     # about a minute on 2 cores

ClearML runs offline (``CLEARML_OFFLINE_MODE=1``, its cache in a temporary folder): no
ClearML server can be started on these machines, and offline ClearML does the same
client-side work (its reporter writes the session's ``metrics.jsonl`` instead of sending
it). Prints one table:

1. Tracelet (``backend="clearml"``), 100,000 ``log_metric("loss", ...)`` calls with the
   settings a user gets: the caller's cost per call, ``stop_logging()``, end to end;
2. ``Logger.report_scalar("loss", "loss", v, step)`` directly, 100,000 calls, then
   ``Task.close()`` (with the same quiet configuration Tracelet applies: ClearML's default
   reporter subprocess makes ``close`` take seconds, sometimes minutes);
3. a small run, start to stop, in a fresh process with ClearML's defaults untouched: what
   a user waits for at the start and end of a run.

Every run is read back from its offline session and compared point for point. Exits 1
only when a run read back differs from what was logged.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from bench_common import (
    chunk_stats,
    distinct_loss,
    end_to_end_row,
    loss_read_back_error,
    median_p99_mean,
    print_table,
    read_back_row,
    speedup_row,
    timed_calls,
)

POINTS = 100_000
CHUNK = 1_000
SPEEDUP_TARGET = 10.0
START_STOP_TARGET_S = 2.0


def bench_tracelet(root: Path, values: list[float]) -> dict[str, Any]:
    import tracelet
    from tracelet_clearml.testing import ClearmlReadBack

    settings = tracelet.TraceletSettings(store_path=str(root / ".tracelet"))
    exp = tracelet.start_logging("tracelet", project="bench", backend="clearml", settings=settings)
    log = exp.log_metric

    def calls(start: int, stop: int) -> None:
        for step in range(start, stop):
            log("loss", values[step], step)

    gc.collect()
    began = time.perf_counter()
    try:
        per_call = timed_calls(calls, POINTS, CHUNK)
        logged = time.perf_counter()
    finally:
        tracelet.stop_logging()
    stopped = time.perf_counter()
    found = ClearmlReadBack(root / "cache" / "offline").metrics(exp.id)
    stored = [(v, s) for name, v, s, _ in found if name == "loss"]
    return {
        "calls": chunk_stats(per_call),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": loss_read_back_error(stored, values),
    }


def bench_clearml(root: Path, values: list[float]) -> dict[str, Any]:
    import json

    from clearml import Task
    from clearml.config import config_obj

    from tracelet_clearml.backend import QUIET_CONFIG

    config_obj.set_overrides(QUIET_CONFIG)
    task = Task.init(
        project_name="bench",
        task_name="clearml",
        auto_connect_frameworks=False,
        auto_resource_monitoring=False,
        auto_connect_streams=False,
        auto_connect_arg_parser=False,
        reuse_last_task_id=False,
    )
    report = task.get_logger().report_scalar

    def calls(start: int, stop: int) -> None:
        for step in range(start, stop):
            report("loss", "loss", values[step], step)

    gc.collect()
    began = time.perf_counter()
    per_call = timed_calls(calls, POINTS, CHUNK)
    logged = time.perf_counter()
    task.close()
    stopped = time.perf_counter()
    lines = (Path(task.get_offline_mode_folder()) / "metrics.jsonl").read_text().splitlines()
    stored = [
        (e["value"], e["iter"])
        for line in lines
        for e in json.loads(line)
        if e["type"] == "training_stats_scalar"
    ]
    return {
        "calls": chunk_stats(per_call),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": loss_read_back_error(stored, values),
    }


START_STOP = """
import time, tracelet
began = time.perf_counter()
exp = tracelet.start_logging("start-stop", backend="clearml")
exp.log_metric("loss", 0.5, 0)
assert exp.flush(60)
started = time.perf_counter()
exp.stop()
print(started - began, time.perf_counter() - started)
"""


def bench_start_stop(root: Path) -> tuple[float, float]:
    """Start (until ClearML holds the first point) and stop of a small run, fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(START_STOP)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        check=True,
    )
    start, stop = map(float, done.stdout.split()[-2:])
    return start, stop


def main() -> int:
    began = time.perf_counter()
    values = distinct_loss(POINTS)
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-clearml-") as tmp:
        root = Path(tmp)
        os.environ.update(CLEARML_OFFLINE_MODE="1", CLEARML_CACHE_DIR=str(root / "cache"))
        start_s, stop_s = bench_start_stop(root)
        ours = bench_tracelet(root, values)
        theirs = bench_clearml(root, values)
    import clearml

    read, what = "  read back from metrics.jsonl", f"{POINTS:,} points, values and steps"
    rows = [
        ("tracelet log_metric, backend clearml, loss", median_p99_mean(ours["calls"], 3), "-", "-"),
        speedup_row("  vs Logger.report_scalar", ours["calls"], theirs["calls"], SPEEDUP_TARGET),
        end_to_end_row(POINTS, ours, "stop_logging"),
        read_back_row(read, ours["error"], what),
        ("Logger.report_scalar, per call", median_p99_mean(theirs["calls"]), "-", "-"),
        end_to_end_row(POINTS, theirs, "Task.close"),
        read_back_row(read, theirs["error"], what),
        (
            "small run, ClearML defaults untouched",
            f"start {start_s:.2f} s (until ClearML holds the first point) + stop {stop_s:.2f} s",
            f"< {START_STOP_TARGET_S:.0f} s",
            "PASS" if start_s + stop_s < START_STOP_TARGET_S else "MISS",
        ),
    ]
    print(
        f"ClearML {clearml.__version__} offline, {POINTS:,} points, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print_table(rows)
    print(f"(whole benchmark: {time.perf_counter() - began:.0f} s)")
    return 1 if ours["error"] or theirs["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
