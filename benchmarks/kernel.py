"""Tracelet kernel benchmark: what ``log_metric`` costs the training loop with the settings a
user gets, beside a bare-Python floor measured in the same run; sustained journal rate;
import time.

Run from the repository root::

    python benchmarks/kernel.py

Every run of Tracelet uses the defaults: ``tracelet.start_logging("bench")`` in an empty
working directory (collectors on, live anomaly detection on, the 200,000-record buffer,
``flush_interval`` 0.5 s), logging a metric called "loss". Rows:

1. 1,000,000 calls of "loss", as fast as the loop goes;
2. 1,000,000 calls of 20 metric names a step (50,000 steps);
3. paced: 200,000 points/s for 5 s (1,000,000 calls, each at its scheduled time); for
   context, the floor's paced calls again beside a process that keeps a core busy (more
   than the journal writer does): the calls over 1 ms the machine's own scheduling makes.

``log_metric`` is the compiled hot path tracelet-core builds (``_hotpath.c``). Each row
also runs, for context, the pure-Python ``log_metric`` a user gets where tracelet-core
was installed without a C compiler (``Experiment._log_metric_checked``), in a run of its
own, its points read back too.

Every call is timed on its own (``perf_counter_ns`` around it), Tracelet's and the floor's
alike; the median, p99 and longest call are shown. The ratio compares the calls
themselves: the timing's own cost (the same two clock reads with nothing between) is taken
off both medians first. Prints one
table and exits 0; exits 1 only when a correctness check fails (the points read back from
the local store differ from those logged). Timing targets are informational. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from types import MethodType
from typing import Any

import attrs
from bench_common import percentile, print_table

import tracelet
from tracelet.core.experiment import Experiment
from tracelet.storage import LocalStore

CALLS = 1_000_000
NAMES_PER_STEP = 20
PACED_RATE = 200_000
JOURNAL_TARGET = 500_000
MEDIAN_TARGET = 3.0
PACED_MEDIAN_TARGET = 2.0
PACED_LONGEST_TARGET_US = 1_000.0
IMPORT_RUNS = 15
IMPORT_TARGET_MS = 100.0
HEAVY_MODULES = ("mlflow", "wandb", "clearml", "aim", "torch", "git")

LogFn = Callable[[str, float, int], None]


class Failure(Exception):
    """A correctness check failed."""


# -- what is logged ------------------------------------------------------------------------


@attrs.frozen
class Plan:
    """The calls of a row: value ``i`` of ``values`` as metric ``names[i % len(names)]`` at
    step ``i // len(names)``. Arrays, not lists of tuples: a list of a million objects
    would make every full garbage collection in the process (in the timed calls too) take
    tens of milliseconds, which is the benchmark's cost, not Tracelet's."""

    names: tuple[str, ...]
    values: array

    def __len__(self) -> int:
        return len(self.values)

    def points(self) -> Iterator[tuple[str, float, int]]:
        width = len(self.names)
        for i, value in enumerate(self.values):
            yield self.names[i % width], value, i // width


def make_values(count: int, seed: int) -> array:
    """A decaying, noisy loss (as live detection sees in training), reproducible."""
    rng = random.Random(seed)
    return array("d", (2.0 * 0.999999**i * (1 + rng.gauss(0.0, 0.02)) for i in range(count)))


def loss_plan(values: array) -> Plan:
    return Plan(("loss",), values)


def many_names_plan(values: array) -> Plan:
    return Plan(("loss", *(f"metric_{i:02d}" for i in range(1, NAMES_PER_STEP))), values)


# -- timing ------------------------------------------------------------------------------


def timed_calls(log: LogFn, plan: Plan, rate: float | None = None) -> tuple[array, float]:
    """Call ``log`` for every point of ``plan`` (at ``rate`` calls/s when given); return
    each call's nanoseconds and the seconds the whole loop took."""
    clock = time.perf_counter_ns
    took = array("q", bytes(8 * len(plan)))
    names, width = plan.names, len(plan.names)
    gap = 0 if rate is None else int(1e9 / rate)
    began = clock()
    due = began
    for i, value in enumerate(plan.values):
        name, step = names[i % width], i // width
        if gap:
            due += gap
            while clock() < due:
                pass
        start = clock()
        log(name, value, step)
        took[i] = clock() - start
    return took, (clock() - began) / 1e9


def summary(took: array) -> dict[str, float]:
    data = sorted(took)
    return {
        "median": percentile(data, 50) / 1e3,
        "p99": percentile(data, 99) / 1e3,
        "max": data[-1] / 1e3,
        "waits": sum(1 for t in took if t > PACED_LONGEST_TARGET_US * 1e3),
    }


class FloorLogger:
    """The floor: a Python method that appends one tuple to a deque."""

    def __init__(self) -> None:
        self.buffer: deque[tuple[str, float, int]] = deque()

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.buffer.append((name, value, step))


class StampedFloorLogger(FloorLogger):
    """For context: the same, with the time the point was logged, the record Tracelet
    queues (no check, no back-pressure)."""

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.buffer.append((name, value, step, time.time()))


def timer_only(plan: Plan, rate: float | None = None) -> array:
    """The same loop and timing with no call at all between the two clock reads: what the
    timing itself adds to every measured call."""
    clock = time.perf_counter_ns
    took = array("q", bytes(8 * len(plan)))
    gap = 0 if rate is None else int(1e9 / rate)
    due = clock()
    for i in range(len(plan)):
        if gap:
            due += gap
            while clock() < due:
                pass
        start = clock()
        took[i] = clock() - start
    return took


def floor_beside_a_busy_process(plan: Plan, rate: float) -> array:
    """The floor's paced calls while another process keeps a core busy all the time (more
    than Tracelet's journal writer does at this rate): how often the machine itself holds
    a call up."""
    spin = "print('spinning', flush=True)\nwhile True: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE)
    try:
        busy.stdout.readline()  # (its interpreter is up: from now on it spins)
        floor = FloorLogger()
        took, _ = timed_calls(floor.log_metric, plan, rate)
    finally:
        busy.kill()
        busy.wait()
    return took


@contextlib.contextmanager
def default_run() -> Iterator[tuple[Any, str]]:
    """A run with the defaults a user gets, in a fresh working directory."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        os.chdir(tmp)
        try:
            exp = tracelet.start_logging("bench", project="bench")
            yield exp, tmp
        finally:
            tracelet.stop_logging()
            os.chdir(before)


def read_back(store_path: str, run_id: str, plan: Plan) -> None:
    """Raise ``Failure`` unless the store holds exactly ``plan``'s points, in order."""
    store = LocalStore(os.path.join(store_path, ".tracelet"))
    try:
        got = [(n, v, s) for n, v, s, _ in store.metrics(run_id) if not n.startswith("system/")]
    finally:
        store.close()
    if len(got) != len(plan):
        raise Failure(f"read back {len(got):,} points, logged {len(plan):,}")
    for index, (point, expected) in enumerate(zip(got, plan.points(), strict=True)):
        if point != expected:
            raise Failure(f"point #{index}: read back {point!r}, logged {expected!r}")


def hot_path() -> str:
    """Which ``log_metric`` a default run calls."""
    if Experiment.log_metric is Experiment._log_metric_checked:
        return "in pure Python (tracelet-core built without a C compiler)"
    return "compiled"


def tracelet_calls(
    plan: Plan, rate: float | None, compiled: bool
) -> tuple[array, float, float, str]:
    """``plan`` logged in a default run, through the compiled ``log_metric`` or the
    pure-Python one; each call's ns, the loop's and stop's seconds, and a read-back error."""
    with default_run() as (exp, tmp):
        log = exp.log_metric if compiled else MethodType(Experiment._log_metric_checked, exp)
        took, loop_s = timed_calls(log, plan, rate)
        stop_began = time.perf_counter()
        tracelet.stop_logging()
        stop_s = time.perf_counter() - stop_began
        try:
            read_back(tmp, exp.id, plan)
        except Failure as failure:
            return took, loop_s, stop_s, str(failure)
    return took, loop_s, stop_s, ""


def measure(plan: Plan, rate: float | None = None) -> dict[str, Any]:
    """The floor, the timer, and Tracelet on ``plan``; Tracelet's points read back."""
    floor = FloorLogger()
    gc.collect()
    floor_took, _ = timed_calls(floor.log_metric, plan, rate)
    timer_took = timer_only(plan, rate)
    del floor
    gc.collect()
    stamped = StampedFloorLogger()
    stamped_took, _ = timed_calls(stamped.log_metric, plan, rate)
    del stamped
    gc.collect()
    neighboured_took = floor_beside_a_busy_process(plan, rate) if rate else None
    took, loop_s, stop_s, error = tracelet_calls(plan, rate, compiled=True)
    gc.collect()
    python_took, _, _, python_error = tracelet_calls(plan, rate, compiled=False)
    result = {
        "neighboured": summary(neighboured_took) if neighboured_took else None,
        "floor": summary(floor_took),
        "stamped": summary(stamped_took),
        "timer": summary(timer_took),
        "ours": summary(took),
        "python": summary(python_took),
    }
    timer = result["timer"]["median"]  # in both: compare the calls themselves
    ratio = (result["ours"]["median"] - timer) / (result["floor"]["median"] - timer)
    stamped_ratio = (result["ours"]["median"] - timer) / (result["stamped"]["median"] - timer)
    python_ratio = (result["python"]["median"] - timer) / (result["floor"]["median"] - timer)
    result.update(ratio=ratio, stamped_ratio=stamped_ratio, python_ratio=python_ratio)
    result.update(loop_s=loop_s, stop_s=stop_s, error=error or python_error)
    result["rate"] = len(plan) / (loop_s + stop_s)
    return result


# -- row 4: import time ----------------------------------------------------------------------


def run_python(code: str) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise Failure(f"python -c {code!r} failed:\n{result.stderr}")
    return elapsed


def import_cost() -> dict[str, Any]:
    run_python("pass")  # warm the file cache and the bytecode caches
    run_python("import tracelet")
    diffs, bare, imported = [], [], []
    for _ in range(IMPORT_RUNS):
        b = run_python("pass")
        i = run_python("import tracelet")
        bare.append(b)
        imported.append(i)
        diffs.append(i - b)
    check = (
        "import sys, tracelet\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "found = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "print(','.join(found))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise Failure(f"import check failed:\n{result.stderr}")
    heavy = [m for m in result.stdout.strip().split(",") if m]
    return {
        "diff_ms": statistics.median(diffs) * 1e3,
        "bare_ms": statistics.median(bare) * 1e3,
        "import_ms": statistics.median(imported) * 1e3,
        "heavy": heavy,
    }


# -- the table ---------------------------------------------------------------------------------


def fmt(stats: dict[str, float]) -> str:
    return f"median {stats['median']:.3f} us  p99 {stats['p99']:.3f}  max {stats['max']:,.0f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def call_rows(title: str, result: dict[str, Any], paced: bool) -> list[tuple[str, str, str, str]]:
    ours, floor = result["ours"], result["floor"]
    target = PACED_MEDIAN_TARGET if paced else MEDIAN_TARGET
    rows = [
        (title, fmt(ours), f"median <= {target:g}x floor", verdict(result["ratio"] <= target)),
        ("  floor (deque.append), same calls", fmt(floor), "-", "-"),
        ("  timing alone (no call)", fmt(result["timer"]), "-", "-"),
        ("  call over the floor's (timing taken off)", f"{result['ratio']:.1f}x", "-", "-"),
        ("  for context: floor with a timestamp", fmt(result["stamped"]), "-", "-"),
        ("  call over that one's (timing taken off)", f"{result['stamped_ratio']:.1f}x", "-", "-"),
        ("  for context: pure-Python log_metric", fmt(result["python"]), "-", "-"),
        ("  its call over the floor's", f"{result['python_ratio']:.1f}x", "-", "-"),
    ]
    if paced:
        waits = ours["waits"]
        rows.append(
            (
                "  calls over 1 ms (floor's)",
                f"{waits:,} ({floor['waits']:,}); longest {ours['max']:,.0f} us",
                f"longest < {PACED_LONGEST_TARGET_US:,.0f} us",
                verdict(ours["max"] < PACED_LONGEST_TARGET_US),
            )
        )
        neighboured = result["neighboured"]
        rows.append(
            (
                "  for context: floor beside a busy process",
                f"{neighboured['waits']:,} calls over 1 ms; longest {neighboured['max']:,.0f} us",
                "-",
                "-",
            )
        )
    else:
        rows.append(
            (
                "  journal rate (loop + stop_logging)",
                f"{result['rate']:,.0f} points/s ({result['loop_s']:.2f} s + "
                f"{result['stop_s']:.2f} s)",
                f">= {JOURNAL_TARGET:,} points/s",
                verdict(result["rate"] >= JOURNAL_TARGET),
            )
        )
    rows.append(
        (
            "  points read back",
            "MISMATCH (see below)" if result["error"] else f"{CALLS:,} of {CALLS:,}",
            "== logged",
            "FAIL" if result["error"] else "OK",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    began = time.perf_counter()
    values = make_values(CALLS, seed=20240601)
    rows: list[tuple[str, str, str, str]] = []
    failures: list[str] = []
    with default_run() as (exp, _):  # untimed warm-up: first allocations, lazy imports
        timed_calls(exp.log_metric, loss_plan(values[:100_000]))
    del exp
    for title, plan, rate in (
        ('log_metric("loss"), 1,000,000 calls', loss_plan(values), None),
        (f"{NAMES_PER_STEP} metric names a step, 1,000,000 calls", many_names_plan(values), None),
        (f"paced {PACED_RATE:,} points/s for 5 s", loss_plan(values), PACED_RATE),
    ):
        result = measure(plan, rate)
        rows += call_rows(title, result, paced=rate is not None)
        if result["error"]:
            failures.append(f"{title}: {result['error']}")

    # Import time.
    try:
        imp = import_cost()
    except Failure as error:
        failures.append(f"import: {error}")
        rows.append(("import tracelet", "failed (see below)", "-", "FAIL"))
    else:
        rows.append(
            (
                "import tracelet",
                f"+{imp['diff_ms']:.1f} ms ({imp['import_ms']:.1f} vs {imp['bare_ms']:.1f} ms)",
                f"<= {IMPORT_TARGET_MS:.0f} ms",
                verdict(imp["diff_ms"] <= IMPORT_TARGET_MS),
            )
        )
        rows.append(
            (
                "  heavy modules after import",
                ", ".join(imp["heavy"]) or "none",
                "none",
                verdict(not imp["heavy"]),
            )
        )

    print_table(rows)
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, cpu_count {cpus} ({usable} usable); "
        f"default settings; log_metric {hot_path()}; total {time.perf_counter() - began:.0f} s"
    )
    sys.stdout.flush()
    for failure in failures:
        print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
