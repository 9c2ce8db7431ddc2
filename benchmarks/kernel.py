"""Tracelet kernel benchmark: the cost of ``log_metric``, sustained throughput, import time.

Run from the repository root::

    python benchmarks/kernel.py            # default: 5 rounds of rows 1-2
    python benchmarks/kernel.py --rounds 3

Prints one table and exits 0. Exits 1 only when a correctness check fails (the points read
back from the local store differ from the points logged, or ``import tracelet`` fails).
Timing targets are informational: a MISS never changes the exit code. See README.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from bench_common import chunk_stats

import tracelet
from tracelet.storage import LocalStore

CALLS = 1_000_000
CHUNK = 1_000
CHUNKS = CALLS // CHUNK
WARMUP_CHUNKS = 100
LOG_TARGET_US = 0.5
THROUGHPUT_NAMES = ("loss", "accuracy", "lr", "grad_norm")
THROUGHPUT_STEPS = CALLS // len(THROUGHPUT_NAMES)
THROUGHPUT_TARGET = 500_000
IMPORT_RUNS = 15
IMPORT_TARGET_MS = 100.0
HEAVY_MODULES = ("mlflow", "wandb", "clearml", "aim", "torch", "git")

LogFn = Callable[[str, float, int], None]


class Failure(Exception):
    """A correctness check failed."""


# -- helpers -----------------------------------------------------------------------------


def make_values(count: int, seed: int) -> list[float]:
    """Varying floats (different signs and magnitudes), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) * 10.0 ** rng.randint(-6, 6) for _ in range(count)]


def settings_for(store_path: str, **extra: Any) -> tracelet.TraceletSettings:
    return tracelet.TraceletSettings(
        store_path=store_path, track_system=False, track_git=False, track_env=False, **extra
    )


def time_chunks(log: LogFn, chunks: list[list[float]]) -> list[float]:
    """Call ``log("loss", value, step)`` for every value; per-call microseconds per chunk.

    Steps increase from 0. Each chunk's values are a ready list, so the timed loop does
    nothing but iterate and call.
    """
    clock = time.perf_counter_ns
    per_call: list[float] = []
    step = 0
    for values in chunks:
        start = clock()
        for s, v in enumerate(values, step):
            log("loss", v, s)
        elapsed = clock() - start
        per_call.append(elapsed / len(values) / 1_000.0)
        step += len(values)
    return per_call


def read_back(store_path: str, run_id: str) -> tuple[list[tuple[str, float, int]], float]:
    """Every point of the run as (name, value, step), and the seconds ``metrics`` took."""
    store = LocalStore(store_path)
    try:
        runs = store.list_runs()
        if [r.id for r in runs] != [run_id]:
            raise Failure(f"expected exactly run {run_id} in {store_path}, found {runs!r}")
        start = time.perf_counter()
        points = store.metrics(run_id)
        seconds = time.perf_counter() - start
    finally:
        store.close()
    return [(name, value, step) for name, value, step, _ts in points], seconds


def compare(got: list[tuple[str, float, int]], expected: list[tuple[str, float, int]]) -> None:
    """Raise ``Failure`` unless ``got`` is exactly ``expected`` (same order, same floats)."""
    if len(got) != len(expected):
        raise Failure(f"read back {len(got):,} points, logged {len(expected):,}")
    if got != expected:
        index = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if g != e)
        raise Failure(f"point #{index}: read back {got[index]!r}, logged {expected[index]!r}")


# -- rows 1 and 2: per-call cost -----------------------------------------------------------


class FloorLogger:
    """The floor: a Python method that appends one tuple to a deque."""

    def __init__(self) -> None:
        self.buffer: deque[tuple[str, float, int]] = deque()

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.buffer.append((name, value, step))


def floor_round(chunks: list[list[float]]) -> list[float]:
    floor = FloorLogger()
    gc.collect()
    per_call = time_chunks(floor.log_metric, chunks)
    if len(floor.buffer) != CALLS:
        raise Failure(f"floor buffer holds {len(floor.buffer):,} tuples, expected {CALLS:,}")
    return per_call


def tracelet_round(chunks: list[list[float]], values: list[float]) -> tuple[list[float], str]:
    """One round of 1,000,000 ``log_metric`` calls: per-call times, and "" or what was wrong
    with the points read back."""
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        exp = tracelet.start_logging(
            "bench", project="bench", settings=settings_for(tmp, buffer_size=2_000_000)
        )
        try:
            gc.collect()
            per_call = time_chunks(exp.log_metric, chunks)
        finally:
            tracelet.stop_logging()
        try:
            got, _ = read_back(tmp, exp.id)
            compare(got, [("loss", v, s) for s, v in enumerate(values)])
        except Failure as error:
            return per_call, str(error)
    return per_call, ""


# -- row 3: sustained throughput -------------------------------------------------------------


def sustained(values: list[float]) -> dict[str, Any]:
    """Log 4 metrics x 250,000 steps with the default buffer, stop, read everything back."""
    names = THROUGHPUT_NAMES
    n0, n1, n2, n3 = names
    steps = list(zip(*[iter(values)] * len(names), strict=True))
    expected = [
        (name, v, s) for s, row in enumerate(steps) for name, v in zip(names, row, strict=True)
    ]
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        exp = tracelet.start_logging("bench", project="bench", settings=settings_for(tmp))
        log = exp.log_metric
        gc.collect()
        start = time.perf_counter()
        for s, (a, b, c, d) in enumerate(steps):
            log(n0, a, s)
            log(n1, b, s)
            log(n2, c, s)
            log(n3, d, s)
        logged = time.perf_counter()
        tracelet.stop_logging()
        stopped = time.perf_counter()
        result: dict[str, Any] = {
            "rate": len(expected) / (stopped - start),
            "loop_s": logged - start,
            "stop_s": stopped - logged,
            "points": 0,
            "read_s": 0.0,
            "error": "",
        }
        try:
            got, result["read_s"] = read_back(tmp, exp.id)
            result["points"] = len(got)
            counts = Counter(name for name, _, _ in got)
            if counts != dict.fromkeys(names, THROUGHPUT_STEPS):
                raise Failure(f"points per metric: {dict(counts)}, each should be 250,000")
            first = names[0]
            compare([p for p in got if p[0] == first], [p for p in expected if p[0] == first])
            compare(got, expected)
        except Failure as error:
            result["error"] = str(error)
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


def fmt_stats(stats: dict[str, float]) -> str:
    return (
        f"median {stats['median']:.3f} us  p90 {stats['p90']:.3f}  "
        f"p99 {stats['p99']:.3f}  mean {stats['mean']:.3f}"
    )


def median_of_rounds(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_table(rows: list[tuple[str, str, str, str]]) -> None:
    header = ("benchmark", "result", "target", "verdict")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of rows 1-2, median taken (default 5)"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    values = make_values(CALLS, seed=20240601)
    chunks = [values[i : i + CHUNK] for i in range(0, CALLS, CHUNK)]
    rows: list[tuple[str, str, str, str]] = []
    failures: list[str] = []

    # Rows 1 and 2, alternating so that drift in machine load affects both alike, after an
    # untimed warm-up of both (first allocations, lazy imports, interpreter specialization).
    warm_floor = FloorLogger()
    time_chunks(warm_floor.log_metric, chunks[:WARMUP_CHUNKS])
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        exp = tracelet.start_logging("warmup", project="bench", settings=settings_for(tmp))
        time_chunks(exp.log_metric, chunks[:WARMUP_CHUNKS])
        tracelet.stop_logging()
    del warm_floor, exp
    floor_rounds: list[dict[str, float]] = []
    log_rounds: list[dict[str, float]] = []
    for _ in range(args.rounds):
        floor_rounds.append(chunk_stats(floor_round(chunks)))
        per_call, error = tracelet_round(chunks, values)
        log_rounds.append(chunk_stats(per_call))
        if error:
            failures.append(f"log_metric round {len(log_rounds)}: {error}")
    floor = median_of_rounds(floor_rounds)
    local = median_of_rounds(log_rounds)
    rows.append(("bare-Python floor (deque.append)", fmt_stats(floor), "-", "-"))
    rows.append(
        (
            "tracelet log_metric (local)",
            fmt_stats(local),
            f"median <= {LOG_TARGET_US:.2f} us",
            verdict(local["median"] <= LOG_TARGET_US),
        )
    )
    rows.append(
        (
            "  median of each round (us)",
            ", ".join(f"{r['median']:.3f}" for r in log_rounds),
            "-",
            "-",
        )
    )
    rows.append(
        (
            "  over the floor (median)",
            f"+{local['median'] - floor['median']:.3f} us/call "
            f"({local['median'] / floor['median']:.1f}x)",
            "-",
            "-",
        )
    )
    rows.append(
        (
            "  points read back, every round",
            f"{CALLS:,} per round" if not failures else "MISMATCH (see below)",
            "== logged",
            "FAIL" if failures else "OK",
        )
    )

    # Row 3.
    result = sustained(values)
    rows.append(
        (
            "sustained throughput into the local store",
            f"{result['rate']:,.0f} points/s",
            f">= {THROUGHPUT_TARGET:,} points/s",
            verdict(result["rate"] >= THROUGHPUT_TARGET),
        )
    )
    rows.append(
        (
            "  logging loop + stop_logging",
            f"{result['loop_s']:.2f} s + {result['stop_s']:.2f} s",
            "-",
            "-",
        )
    )
    if result["error"]:
        failures.append(f"sustained throughput: {result['error']}")
        read = "MISMATCH (see below)"
    else:
        read = f"{result['points']:,} points in {result['read_s']:.2f} s"
    rows.append(
        ("  read back (store.metrics)", read, "== logged", "FAIL" if result["error"] else "OK")
    )

    # Row 4.
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
        f"rows 1-2: median of {args.rounds} round(s); total {time.perf_counter() - began:.0f} s"
    )
    sys.stdout.flush()
    for failure in failures:
        print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
