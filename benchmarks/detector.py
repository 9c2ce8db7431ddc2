"""Tracelet anomaly-detector benchmark: recall and false alarms on generated runs, and speed.

Run from the repository root::

    python benchmarks/detector.py

Generates training runs (fixed seed) with known injected anomalies, logs them through the
real local store, detects with ``AnomalyDetector`` at the default thresholds, and prints one
table. Exits 1 when a target is missed (recall, false alarms, offline == live). See README.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import tempfile
import time
from collections import Counter
from typing import Any

import attrs

import tracelet
from tracelet.analysis import AnomalyDetector, LiveDetector
from tracelet.storage import LocalStore

SEED = 20240917
RUNS = 50
STEPS = 5000
TOLERANCE = 5
"""A detection counts when it is within this many steps of the injected anomaly."""
RECALL_TARGET = 0.95
FALSE_ALARM_TARGET = 1.0
"""Most false alarms per 10,000 clean steps."""
LOSS_SIGMAS = (0.02, 0.05, 0.1, 0.2)
GRAD_SIGMAS = (0.05, 0.1, 0.2, 0.3)
MEMORY_EVERY = 10
"""System metrics are sampled every this many steps."""
KINDS = ("loss_spike", "nan_or_inf", "gradient_explosion", "vanishing_gradient", "memory_pressure")
EVENTS_PER_RUN = {"loss_spike": 5, "nan_or_inf": 2, "gradient_explosion": 2}
UNWATCHED_POINTS = 1_000_000


@attrs.define
class Event:
    """One injected anomaly: a hit lies in ``hit``; detections of its kind in ``span``
    (the steps it lasts, with the tolerance) are neither hits nor false alarms."""

    kind: str
    metric: str
    hit: tuple[int, int]
    span: tuple[int, int]
    detail: str = ""
    detected: bool = False


@attrs.define
class Run:
    """A generated run: its points ``(name, value, step)`` and injected events."""

    points: list[tuple[str, float, int]]
    events: list[Event]
    loss_sigma: float
    run_id: str = ""


# -- generation --------------------------------------------------------------------------


class Slots:
    """Free step ranges per channel, so injected anomalies do not overlap."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.taken: dict[str, list[tuple[int, int]]] = {}

    def take(self, channel: str, length: int, gap: int = 300) -> int:
        taken = self.taken.setdefault(channel, [])
        while True:
            start = self.rng.randrange(400, STEPS - length - 50)
            if all(start + length + gap <= lo or start >= hi + gap for lo, hi in taken):
                taken.append((start, start + length))
                return start


def loss_curve(rng: random.Random, sigma: float) -> list[float]:
    """Exponential decay to a floor, with plateaus, LR bumps, slow rises, LR drops, noise."""
    start, floor = rng.uniform(2.0, 8.0), rng.uniform(0.05, 1.5)
    tau = rng.uniform(300, 2500)
    plateau = (rng.randrange(800, 3500), rng.randrange(400, 1500)) if rng.random() < 0.5 else None
    bump = (rng.uniform(150, 900), rng.uniform(0.2, 0.6), rng.uniform(100, 300))
    rise = (rng.randrange(1000, 2500), rng.uniform(1.5, 2.0), rng.randrange(2000, 3500))
    has_bump, has_rise = rng.random() < 0.5, rng.random() < 0.4
    drops = [d for d in (int(STEPS * 0.6), int(STEPS * 0.85)) if rng.random() < 0.4]
    values, clock = [], 0.0
    for t in range(STEPS):
        if plateau is None or not plateau[0] <= t < plateau[0] + plateau[1]:
            clock += 1.0
        value = floor + (start - floor) * math.exp(-clock / tau)
        if has_bump:
            value *= 1.0 + bump[1] * math.exp(-(((t - bump[0]) / bump[2]) ** 2))
        if has_rise:
            value *= rise[1] ** min(1.0, max(0.0, (t - rise[0]) / rise[2]))
        value *= 0.85 ** sum(t >= d for d in drops)
        values.append(value * math.exp(rng.gauss(0.0, sigma)))
    return values


def grad_curve(rng: random.Random, sigma: float) -> list[float]:
    """Norms settling from an early high, slow drifts up, benign 1.3-2.5x blips, noise."""
    start, end = rng.uniform(1.0, 10.0), rng.uniform(0.2, 2.0)
    tau = rng.uniform(200, 2000)
    drift = rng.uniform(1.5, 3.0) if rng.random() < 0.5 else 1.0
    values = []
    for t in range(STEPS):
        value = (end + (start - end) * math.exp(-t / tau)) * drift ** (t / STEPS)
        if rng.random() < 0.005:
            value *= rng.uniform(1.3, 2.5)
        values.append(value * math.exp(rng.gauss(0.0, sigma)))
    return values


def memory_curve(rng: random.Random, base: float, jitter: float) -> list[float]:
    """A percent that fills up in the first steps, then steps and drifts, staying <= 86."""
    leak = rng.uniform(0.0, 4.0)
    level, values = base, []
    for t in range(0, STEPS, MEMORY_EVERY):
        if rng.random() < 0.01:
            level = min(84.0, max(base - 5, level + rng.uniform(-2.0, 2.0)))
        fill = min(1.0, (t + 10) / 100)
        value = (10.0 + (level - 10.0) * fill) + leak * t / STEPS + rng.gauss(0.0, jitter)
        values.append(min(86.0, value))
    return values


def make_run(rng: random.Random, index: int) -> Run:
    sigma = LOSS_SIGMAS[index % len(LOSS_SIGMAS)]
    loss_name = ("train/loss", "loss")[index % 2]
    grad_name = ("grad/total_norm", "grad_norm")[index % 3 % 2]
    loss = loss_curve(rng, sigma)
    grad = grad_curve(rng, GRAD_SIGMAS[(index // 4) % len(GRAD_SIGMAS)])
    warm = rng.randrange(200, 800)
    lr = [
        0.001 * min(1.0, (t + 1) / warm) * 0.5 * (1 + math.cos(math.pi * t / STEPS))
        for t in range(STEPS)
    ]
    acc = [min(0.99, 0.9 * (1 - math.exp(-t / 800)) + rng.gauss(0, 0.01)) for t in range(STEPS)]
    memory = {
        "system/gpu0_memory_percent": memory_curve(rng, rng.uniform(40, 82), 0.2),
        "system/memory_percent": memory_curve(rng, rng.uniform(20, 70), 1.0),
    }
    series = {loss_name: loss, grad_name: grad, "lr": lr, "train/accuracy": acc}
    slots = Slots(rng)
    events = []
    for _ in range(EVENTS_PER_RUN["loss_spike"]):
        step = slots.take("loss", 1)
        factor = math.exp(rng.uniform(math.log(4), math.log(20)))
        loss[step] *= factor
        events.append(Event("loss_spike", loss_name, *_windows(step, step), f"x{factor:.1f}"))
    for _ in range(EVENTS_PER_RUN["gradient_explosion"]):
        length = rng.choice((1, 1, 2, 3))
        step = slots.take("grad", length)
        factor = math.exp(rng.uniform(math.log(50), math.log(1000)))
        for t in range(step, step + length):
            grad[t] *= factor
        events.append(Event("gradient_explosion", grad_name, *_windows(step, step + length - 1)))
    if index % 2 == 0:
        length = rng.randrange(30, 300)
        step = slots.take("grad", length)
        for t in range(step, step + length):
            grad[t] = 0.0 if index % 6 == 0 else 10 ** rng.uniform(-12, -8)
        events.append(Event("vanishing_gradient", grad_name, *_windows(step, step + length - 1)))
    for _ in range(EVENTS_PER_RUN["nan_or_inf"]):
        name = rng.choice(list(series))
        length = rng.choice((1, 1, 2, 3))
        step = slots.take("loss" if name == loss_name else "grad" if name == grad_name else name, 3)
        bad = rng.choice((math.nan, math.inf, -math.inf))
        for t in range(step, step + length):
            series[name][t] = bad
        events.append(Event("nan_or_inf", name, *_windows(step, step + length - 1)))
    if index % 2 == 1:
        name = rng.choice(list(memory))
        climb, hold = rng.randrange(10, 60), rng.randrange(5, 30)  # in samples
        first = slots.take("memory", (climb + hold) * MEMORY_EVERY) // MEMORY_EVERY
        values, peak = memory[name], rng.uniform(97.5, 99.5)
        origin = values[first]
        for i in range(climb + hold):
            rising = origin + (peak - origin) * min(1.0, (i + 1) / climb)
            values[first + i] = min(99.9, rising + rng.gauss(0.0, 0.2))
        lo, hi = first * MEMORY_EVERY, (first + climb + hold) * MEMORY_EVERY
        events.append(Event("memory_pressure", name, (lo, hi + TOLERANCE), (lo, hi + TOLERANCE)))
    points = []
    for t in range(STEPS):
        points.extend((name, values[t], t) for name, values in series.items())
        if t % MEMORY_EVERY == 0:
            points.extend((name, values[t // MEMORY_EVERY], t) for name, values in memory.items())
    return Run(points, events, sigma)


def _windows(first: int, last: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return (first - TOLERANCE, first + TOLERANCE), (first - TOLERANCE, last + TOLERANCE)


# -- logging, detection, scoring ---------------------------------------------------------


def log_runs(runs: list[Run], store_path: str) -> float:
    settings = tracelet.TraceletSettings(
        store_path=store_path, track_system=False, track_git=False, track_env=False
    )
    start = time.perf_counter()
    for index, run in enumerate(runs):
        exp = tracelet.start_logging(f"run{index}", project="detector-bench", settings=settings)
        log = exp.log_metric
        for name, value, step in run.points:
            log(name, value, step)
        tracelet.stop_logging()
        run.run_id = exp.id
    return time.perf_counter() - start


def score(run: Run, found: list[dict[str, Any]]) -> Counter[str]:
    """Mark the run's detected events; return its false alarms by kind."""
    false = Counter()
    for anomaly in found:
        kind, metric, step = anomaly["kind"], anomaly["metric"], anomaly["step"]
        mine = [e for e in run.events if e.kind == kind and e.metric == metric]
        hits = [e for e in mine if e.hit[0] <= step <= e.hit[1]]
        for event in hits:
            event.detected = True
        if not hits and not any(e.span[0] <= step <= e.span[1] for e in mine):
            false[kind] += 1
    return false


def clean_steps(run: Run) -> int:
    """Steps outside every injected anomaly's span."""
    dirty = set()
    for event in run.events:
        dirty.update(range(max(0, event.span[0]), min(STEPS, event.span[1] + 1)))
    return STEPS - len(dirty)


def live_check(store: LocalStore, runs: list[Run], offline: dict[str, list]) -> tuple[bool, float]:
    """Feed every run's stored points to a LiveDetector in batches of 2,000; return whether
    it found exactly what the offline detector found, and the points per second."""
    same, points, seconds = True, 0, 0.0
    for run in runs:
        stored = store.metrics(run.run_id)
        batches = [stored[i : i + 2000] for i in range(0, len(stored), 2000)]
        live = LiveDetector(run.run_id)
        found = []
        start = time.perf_counter()
        for batch in batches:
            found.extend(live.observe(batch))
        seconds += time.perf_counter() - start
        points += len(stored)
        found.sort(key=lambda a: (a["step"], a["metric"], a["kind"]))
        same &= _essence(found) == _essence(offline[run.run_id])
    return same, points / seconds


def stored_check(store: LocalStore, runs: list[Run], offline: dict[str, list]) -> bool:
    """Whether the anomalies the dispatcher stored while logging are the offline ones."""
    return all(
        _essence(store.anomalies(run.run_id)) == _essence(offline[run.run_id]) for run in runs
    )


def _essence(anomalies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(a["step"], a["metric"], a["kind"], a["severity"], a["message"]) for a in anomalies]


def unwatched_speed() -> float:
    """Points per second for metrics no rule watches (besides the NaN check)."""
    names = ("lr", "train/accuracy", "throughput/tokens_per_s", "epoch")
    rng = random.Random(SEED)
    points = [
        (names[i % 4], rng.random(), i // 4, 1.7e9 + i * 1e-3) for i in range(UNWATCHED_POINTS)
    ]
    live = LiveDetector("speed")
    start = time.perf_counter()
    for i in range(0, len(points), 10_000):
        live.observe(points[i : i + 10_000])
    return len(points) / (time.perf_counter() - start)


# -- the table ---------------------------------------------------------------------------


def print_table(rows: list[tuple[str, ...]]) -> None:
    header = ("kind", "injected", "detected", "recall", "false alarms", "per 10k clean", "verdict")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS, help=f"runs (default {RUNS})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed (default {SEED})")
    args = parser.parse_args(argv)
    logging.getLogger("tracelet").setLevel(logging.ERROR)  # no warn-once lines in the table
    began = time.perf_counter()
    rng = random.Random(args.seed)
    runs = [make_run(rng, i) for i in range(args.runs)]
    false: Counter[str] = Counter()
    offline: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="tracelet-detector-") as tmp:
        log_seconds = log_runs(runs, tmp)
        with AnomalyDetector(tmp) as detector:
            start = time.perf_counter()
            for run in runs:
                offline[run.run_id] = detector.detect_all_anomalies(run.run_id)
            detect_seconds = time.perf_counter() - start
            same, live_rate = live_check(detector.store, runs, offline)
            stored = stored_check(detector.store, runs, offline)
    for run in runs:
        false.update(score(run, offline[run.run_id]))
    clean = sum(clean_steps(run) for run in runs)
    total_points = sum(len(run.points) for run in runs)
    events = [e for run in runs for e in run.events]
    rows, ok = [], same and stored

    def row(label: str, chosen: list[Event], alarms: int | None) -> None:
        """One line; a line with ``alarms`` None is a breakdown, with no target of its own."""
        nonlocal ok
        hits = sum(e.detected for e in chosen)
        recall = hits / len(chosen) if chosen else 1.0
        cells = [label, str(len(chosen)), str(hits), f"{recall:.3f}", "-", "-", "-"]
        if alarms is not None:
            rate = alarms / clean * 10_000
            good = recall >= RECALL_TARGET and rate <= FALSE_ALARM_TARGET
            ok &= good
            cells[4:] = [str(alarms), f"{rate:.2f}", "PASS" if good else "MISS"]
        rows.append(tuple(cells))

    for kind in KINDS:
        row(kind, [e for e in events if e.kind == kind], false[kind])
        if kind == "loss_spike":
            for sigma in LOSS_SIGMAS:
                chosen = [
                    e for r in runs if r.loss_sigma == sigma for e in r.events if e.kind == kind
                ]
                row(f"  loss noise sigma {sigma}", chosen, None)
    row("overall", events, sum(false.values()))
    print_table(rows)
    print(
        f"targets: recall >= {RECALL_TARGET} per kind and overall; <= {FALSE_ALARM_TARGET:g} false"
        f" alarm per 10,000 clean steps; a hit is within {TOLERANCE} steps of the injected step"
    )
    print(
        f"offline == LiveDetector.observe: {'yes' if same else 'NO'};"
        f" offline == stored live while logging: {'yes' if stored else 'NO'}"
    )
    print(
        f"speed:"
        f" offline detection {total_points / detect_seconds:,.0f} points/s (store read included);"
        f" LiveDetector.observe {live_rate:,.0f} points/s (this mix),"
        f" {unwatched_speed():,.0f} points/s (unwatched metrics)"
    )
    print(
        f"{args.runs} runs x {STEPS:,} steps, {clean:,} clean steps, {total_points:,} points"
        f" logged in {log_seconds:.1f} s; seed {args.seed};"
        f" total {time.perf_counter() - began:.0f} s"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
