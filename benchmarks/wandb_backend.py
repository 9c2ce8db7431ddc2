"""Tracelet into W&B against W&B's own ``run.log``, offline, every point read back.

Run from the repository root::

    python benchmarks/wandb_backend.py     # about 2 minutes on 2 cores

Logs 100,000 points four ways, each into its own offline W&B run under a temporary
``WANDB_DIR``, reads every run back from its ``.wandb`` file (``tracelet_wandb.run_file``)
and prints one table:

1. Tracelet (``backend="wandb"``), one metric ``loss``, 100,000 ``log_metric`` calls with
   the settings a user gets (collectors, live detection, buffer, flush timeout): the caller's
   cost per call, the time ``stop_logging()`` takes to deliver everything, end to end;
2. Tracelet, 20 metrics per step for 5,000 steps (``log_metric`` per point);
3. ``run.log({"loss": v}, step=s)``, one call per point;
4. ``run.log({20 metrics}, step=s)``, one call per step of 20 metrics.

W&B runs get the settings Tracelet gives its own (``console="off"``, W&B's system sampler
off). Exits 1 only when a run read back differs from what was logged; timing targets are
informational. See README.md.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_ERROR_REPORTING="false")

import wandb
from bench_common import (
    chunk_stats,
    distinct_loss,
    end_to_end_row,
    median_p99_mean,
    print_table,
    read_back_row,
    speedup_row,
    timed_calls,
)

import tracelet
from tracelet_wandb.run_file import ended, items_dict, records, session_files
from tracelet_wandb.testing import WandbReadBack

POINTS = 100_000
CHUNK = 1_000
NAMES = 20
SPEEDUP_TARGET = 100.0
METRIC = "loss"
READ_BACK = "  read back from the .wandb file"
READ_WHAT = f"{POINTS:,} points: names, values, steps"


def bench_tracelet(root: Path, values: list[float], names: int) -> dict[str, Any]:
    """Tracelet with default settings into W&B offline; ``names`` metrics per step."""
    folder = root / f"tracelet-{names}"
    folder.mkdir()
    settings = tracelet.TraceletSettings(store_path=str(folder / ".tracelet"))
    keys = [METRIC] if names == 1 else [f"metric_{i:02d}" for i in range(names)]
    exp = tracelet.start_logging(
        f"tracelet-{names}",
        project="bench",
        backend="wandb",
        config={"wandb": {"dir": str(folder)}},
        settings=settings,
    )
    log = exp.log_metric

    def calls(start: int, stop: int) -> None:
        for i in range(start, stop):
            log(keys[i % names], values[i], i // names)

    gc.collect()
    began = time.perf_counter()
    try:
        per_call = timed_calls(calls, POINTS, CHUNK)
        logged = time.perf_counter()
    finally:
        tracelet.stop_logging()
    stopped = time.perf_counter()
    found = WandbReadBack(folder / "wandb").metrics(exp.id)
    stored = [(name, value, step) for name, value, step, _ in found]
    expected = [(keys[i % names], values[i], i // names) for i in range(POINTS)]
    return {
        "calls": chunk_stats(per_call),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": _compare(sorted(stored), sorted(expected)),
    }


def bench_wandb(root: Path, values: list[float], names: int) -> dict[str, Any]:
    """``run.log`` directly: one call per point (``names`` 1) or per step of ``names``."""
    folder = root / f"wandb-{names}"
    folder.mkdir()
    settings = wandb.Settings(console="off", x_disable_stats=True)
    run = wandb.init(
        project="bench", dir=str(folder), mode="offline", reinit="create_new", settings=settings
    )
    keys = [METRIC] if names == 1 else [f"metric_{i:02d}" for i in range(names)]
    log = run.log

    def calls(start: int, stop: int) -> None:
        for step in range(start // names, stop // names):
            base = step * names
            log({keys[k]: values[base + k] for k in range(names)}, step=step)

    gc.collect()
    began = time.perf_counter()
    per_point = timed_calls(calls, POINTS, CHUNK)
    logged = time.perf_counter()
    run.finish()
    while not ended(run.settings.sync_file):  # wandb-core writes the file after finish
        time.sleep(0.01)
    stopped = time.perf_counter()
    stored = []
    for path in session_files(folder / "wandb", run.id):
        for record in records(path):
            if record.WhichOneof("record_type") == "history":
                row = items_dict(record.history.item)
                stored += [(k, row[k], row["_step"]) for k in keys if k in row]
    expected = [(keys[i % names], values[i], i // names) for i in range(POINTS)]
    per_call = [us * names for us in per_point]
    return {
        "calls": chunk_stats(per_call),
        "points": chunk_stats(per_point),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": _compare(sorted(stored), sorted(expected)),
    }


def _compare(stored: list[Any], expected: list[Any]) -> str:
    if len(stored) != len(expected):
        return f"read back {len(stored):,} points, logged {len(expected):,}"
    for index, (got, want) in enumerate(zip(stored, expected, strict=True)):
        if got != want:
            return f"point #{index}: read back {got}, logged {want}"
    return ""


def main() -> int:
    began = time.perf_counter()
    values = distinct_loss(POINTS)
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-wandb-") as tmp:
        root = Path(tmp)
        os.environ["WANDB_DIR"] = str(root)
        os.environ["WANDB_DATA_DIR"] = str(root / "data")
        os.environ["WANDB_CACHE_DIR"] = str(root / "cache")
        ours_one = bench_tracelet(root, values, 1)
        theirs_one = bench_wandb(root, values, 1)
        ours_many = bench_tracelet(root, values, NAMES)
        theirs_many = bench_wandb(root, values, NAMES)
    speedup_many = theirs_many["points"]["median"] / ours_many["calls"]["median"]
    rows = [
        (
            "tracelet log_metric, backend wandb, loss",
            median_p99_mean(ours_one["calls"], 3),
            "-",
            "-",
        ),
        speedup_row(
            "  vs run.log, one call per point",
            ours_one["calls"],
            theirs_one["calls"],
            SPEEDUP_TARGET,
        ),
        end_to_end_row(POINTS, ours_one, "stop_logging"),
        read_back_row(READ_BACK, ours_one["error"], READ_WHAT),
        (
            f"tracelet log_metric, {NAMES} metrics per step",
            median_p99_mean(ours_many["calls"], 3),
            "-",
            "-",
        ),
        (
            f"  vs run.log, one call per step of {NAMES}",
            f"{speedup_many:,.0f}x cheaper per point",
            "-",
            "-",
        ),
        end_to_end_row(POINTS, ours_many, "stop_logging"),
        read_back_row(READ_BACK, ours_many["error"], READ_WHAT),
        ("run.log({loss: v}, step=s), per call", median_p99_mean(theirs_one["calls"], 1), "-", "-"),
        end_to_end_row(POINTS, theirs_one, "finish (file written)"),
        read_back_row(READ_BACK, theirs_one["error"], READ_WHAT),
        (
            f"run.log({NAMES} metrics, step=s), per call",
            median_p99_mean(theirs_many["calls"], 1),
            "-",
            "-",
        ),
        ("  per point", median_p99_mean(theirs_many["points"], 2), "-", "-"),
        end_to_end_row(POINTS, theirs_many, "finish (file written)"),
        read_back_row(READ_BACK, theirs_many["error"], READ_WHAT),
    ]
    print(
        f"W&B {wandb.__version__} offline, {POINTS:,} points per row, Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print_table(rows)
    print(f"(whole benchmark: {time.perf_counter() - began:.0f} s)")
    failed = [r for r in (ours_one, ours_many, theirs_one, theirs_many) if r["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
