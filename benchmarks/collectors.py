"""What the built-in collectors cost: CPU time per second of run, and a busy loop's speed.

Run from the repository root::

    python benchmarks/collectors.py     # about 40 s on 2 cores

Prints one table:

1. The CPU time the collector thread spends per sample (the system collector: psutil's
   CPU, per-core, memory, swap, I/O and process counters, then logging the sample),
   measured with ``time.thread_time`` over 100 samples, and what that makes per second
   of run at the default interval (10 s) and at a 1 s interval. The one-shot collectors
   (environment: every installed package and variable; git) are timed once.
2. A busy training loop (a 256x256 NumPy matmul and ``log_metric("loss", ...)`` per step)
   for 8 s, with the settings a user gets (collectors on at the default interval, live
   detection on), and the same loop with the collectors off, in alternating 2 s rounds,
   each timed from 0.5 s after its run started (the one-shot collectors' cost is item 1).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import print_table

from tracelet.core.collecting import CollectorRunner

SAMPLES = 100
ROUNDS = 4
ROUND_SECONDS = 2.0
START_WAIT = 0.5
"""Seconds after start before a round is timed: the one-shot collectors (about 150 ms of
CPU, in the rows above) are done by then, so the rounds measure the steady state."""


def collector_cpu(root: Path) -> dict[str, list[float]]:
    """CPU seconds the collector thread spent on each sample, per collector."""
    import tracelet

    spent: dict[str, list[float]] = {}
    original = CollectorRunner._sample

    def timed(self: CollectorRunner, name: str, collector: object) -> None:
        begin = time.thread_time()
        original(self, name, collector)
        spent.setdefault(name, []).append(time.thread_time() - begin)

    CollectorRunner._sample = timed  # type: ignore[method-assign]
    try:
        settings = tracelet.TraceletSettings(
            store_path=str(root / ".tracelet"), metrics_interval=0.1
        )
        with tracelet.start_logging("collectors", project="bench", settings=settings):
            while len(spent.get("system", [])) < SAMPLES:
                time.sleep(0.1)
    finally:
        CollectorRunner._sample = original  # type: ignore[method-assign]
    return spent


def busy_loop(seconds: float, exp: object) -> int:
    """Steps of a matmul-and-log loop done in ``seconds``."""
    matrix = np.random.default_rng(0).random((256, 256))
    log = exp.log_metric  # type: ignore[attr-defined]
    steps, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        loss = float((matrix @ matrix).mean())
        log("loss", loss, steps)
        steps += 1
    return steps


def loop_rates(root: Path) -> dict[str, float]:
    import tracelet

    rates: dict[str, list[float]] = {"collectors on (default)": [], "collectors off": []}
    for index in range(ROUNDS):
        for label in rates:
            off = label == "collectors off"
            settings = tracelet.TraceletSettings(
                store_path=str(root / f".tracelet-{index}"),
                track_system=not off,
                track_env=not off,
                track_git=not off,
            )
            with tracelet.start_logging(label, project="bench", settings=settings) as exp:
                time.sleep(START_WAIT)  # the one-shot collectors are timed on their own
                rates[label].append(busy_loop(ROUND_SECONDS, exp) / ROUND_SECONDS)
    return {label: statistics.median(values) for label, values in rates.items()}


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        spent = collector_cpu(root / "cpu")
        rates = loop_rates(root / "loop")
    per_sample = statistics.median(spent["system"])
    rows = [("collector thread CPU time", "", "", "")]
    rows.append(("  system, per sample", f"{per_sample * 1e3:.2f} ms", "-", "-"))
    for interval in (10.0, 1.0):
        share = 100.0 * per_sample / interval
        rows.append(
            (f"  system at a {interval:g} s interval", f"{share:.3f}% of one core", "-", "-")
        )
    for name in ("env", "git"):
        if name in spent:
            rows.append((f"  {name}, once at start", f"{spent[name][0] * 1e3:.1f} ms", "-", "-"))
    base = rates["collectors off"]
    rows.append(("busy loop (256x256 matmul + log_metric)", "", "", ""))
    for label, rate in rates.items():
        change = "" if label == "collectors off" else f"  ({100.0 * (rate / base - 1):+.1f}%)"
        rows.append((f"  {label}", f"{rate:,.0f} steps/s{change}", "-", "-"))
    print(f"Python {sys.version.split()[0]}, {SAMPLES} system samples, {ROUNDS} rounds")
    print_table(rows)


if __name__ == "__main__":
    main()
