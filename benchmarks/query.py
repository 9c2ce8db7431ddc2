"""How fast the query side answers on a large run: ``tracelet show`` on 1,000,000 points.

Run from the repository root::

    python benchmarks/query.py

Logs one run of 1,000,000 points (4 metrics x 250,000 steps) into a temporary store, then
times, five times each (median reported):

- ``tracelet show RUN --json`` as a user runs it (a new Python process, imports included),
  once on the fresh store (the per-metric summary is computed) and then again (the store
  keeps the summary of a finished run);
- ``QueryEngine.get_run_summary`` in-process (the query alone);
- ``QueryEngine.get_metric_history`` of one 250,000-point metric;
- ``tracelet list``.

Target: ``show`` under one second. Exits 1 if the summary's point count is wrong.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import tracelet
from tracelet.analysis.query import QueryEngine

NAMES = ("loss", "accuracy", "lr", "grad/total_norm")
STEPS = 250_000
ROUNDS = 5


def fill(store: Path) -> str:
    """Log the 1,000,000-point run; return its id."""
    settings = tracelet.TraceletSettings(
        store_path=str(store),
        track_system=False,
        track_env=False,
        track_git=False,
        checkpoint_interval=0,
        detect_anomalies=False,
    )
    with tracelet.start_logging("big", project="bench", settings=settings) as exp:
        for step in range(STEPS):
            for name in NAMES:
                exp.log_metric(name, step * 1e-6, step)
    return exp.id


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """Median seconds over ROUNDS calls, and the last result."""
    times, result = [], None
    for _ in range(ROUNDS):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def command(store: Path, *args: str) -> Callable[[], str]:
    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tracelet", "--store", str(store), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    return run


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / ".tracelet"
        start = time.perf_counter()
        run_id = fill(store)
        fill_s = time.perf_counter() - start
        engine = QueryEngine(store)
        first_start = time.perf_counter()
        command(store, "show", run_id, "--json")()
        first_show_s = time.perf_counter() - first_start
        show_s, shown = timed(command(store, "show", run_id, "--json"))
        summary_s, summary = timed(lambda: engine.get_run_summary(run_id))
        history_s, history = timed(lambda: engine.get_metric_history(run_id, "loss"))
        list_s, _ = timed(command(store, "list"))
        engine.close()
    points = json.loads(shown)["total_points"]
    rows = [
        (
            "tracelet show RUN, first (new process)",
            f"{first_show_s * 1000:.0f} ms",
            "< 1000 ms",
            "PASS" if first_show_s < 1 else "MISS",
        ),
        (
            "tracelet show RUN, again (summary kept)",
            f"{show_s * 1000:.0f} ms",
            "< 1000 ms",
            "PASS" if show_s < 1 else "MISS",
        ),
        ("  get_run_summary (in-process)", f"{summary_s * 1000:.0f} ms", "-", "-"),
        (
            "  points in the summary",
            f"{points:,}",
            "1,000,000",
            "OK" if points == len(NAMES) * STEPS == summary["total_points"] else "WRONG",
        ),
        (
            "get_metric_history (250,000 points)",
            f"{history_s * 1000:.0f} ms",
            "-",
            "OK" if len(history) == STEPS else "WRONG",
        ),
        ("tracelet list (new process)", f"{list_s * 1000:.0f} ms", "-", "-"),
        ("logging the run (for reference)", f"{fill_s:.2f} s", "-", "-"),
    ]
    widths = [max(len(r[i]) for r in [*rows, HEADER]) for i in range(4)]
    for row in [HEADER, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    print(f"python {sys.version.split()[0]}, median of {ROUNDS} rounds")
    return 0 if all(r[3] != "WRONG" for r in rows) else 1


HEADER = ("benchmark", "result", "target", "verdict")

if __name__ == "__main__":
    sys.exit(main())
