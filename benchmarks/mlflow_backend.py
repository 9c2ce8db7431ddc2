"""Tracelet into MLflow against MLflow's own logging calls, through one local ``mlflow server``.

Run from the repository root::

    python benchmarks/mlflow.py              # about 3-4 minutes on 2 cores
    python benchmarks/mlflow.py --rounds 1   # one round of rows 1 and 4, ~40 s less

Starts an ``mlflow server`` (SQLite store, local artifact root, a free port on 127.0.0.1) in a
temporary directory, logs 100,000 points of one metric ``loss`` (steps 0..99,999, varying
floats) into it four ways, each into its own MLflow experiment and run, reads every run back
with ``MlflowClient.get_metric_history``, prints one table and stops the server:

1. Tracelet (``backend="mlflow"``): the caller's cost per ``log_metric`` call, the time
   ``stop_logging()`` takes to deliver everything, end-to-end throughput;
2. ``mlflow.log_metric`` (synchronous): a 2,000-call subset, extrapolated to 100,000;
3. ``mlflow.log_metric(..., synchronous=False)``: per call, and the flush at ``end_run``;
4. ``MlflowClient.log_batch`` with 1,000 ``Metric`` objects per call.

Rows 1 and 4 are measured ``--rounds`` times (default 2), alternating, and their medians
compared: both are bound by the server's speed, which drifts with the machine's load.

Exits 1 only when a correctness check fails (a run read back from MLflow differs from what
was logged); timing targets are informational. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Read by MLflow's async logging thread: without it, every log_metric(synchronous=False) is
# sent as its own request and the flush at end_run takes minutes. 1 s is the smallest value
# (the variable is an integer): the queue is drained once a second into log_batch calls.
os.environ["MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"] = "1"
# Keep MLflow's "View run ... at: URL" lines (printed at every set_terminated) off the table.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
# No usage reports from the client or the server (which inherits this environment).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import mlflow
from bench_common import chunk_stats, print_table
from mlflow import MlflowClient
from mlflow.entities import Metric

import tracelet
from tracelet.storage import LocalStore
from tracelet_mlflow.backend import MlflowBackend
from tracelet_mlflow.testing import MlflowServer

POINTS = 100_000
CHUNK = 1_000
SYNC_CALLS = 2_000
SYNC_CHUNK = 100
BATCH = 1_000
FLUSH_TIMEOUT = 180.0
CALLER_TARGET_US = 0.5
THROUGHPUT_SHARE_TARGET = 1.3
SERVER_WORKERS = 4
"""``mlflow server``'s own default, as a team runs it."""
SPEEDUP_TARGET = 50.0
METRIC = "loss"


class Failure(Exception):
    """A correctness check failed."""


# -- the server ------------------------------------------------------------------------------


def make_values(count: int, seed: int) -> list[float]:
    """A decaying, noisy loss (as live detection sees in training; every float distinct,
    so a value read back in the wrong place shows), reproducible from ``seed``."""
    rng = random.Random(seed)
    return [2.0 * 0.99999**i * (1 + rng.gauss(0.0, 0.02)) for i in range(count)]


def time_chunks(log: Callable[..., Any], chunks: list[list[float]], **kwargs: Any) -> list[float]:
    """Call ``log("loss", value, step, **kwargs)`` for every value, steps from 0; per-call
    microseconds per chunk (the timed loop only iterates and calls, as in kernel.py)."""
    clock = time.perf_counter_ns
    per_call: list[float] = []
    step = 0
    for values in chunks:
        start = clock()
        if kwargs:
            for s, v in enumerate(values, step):
                log(METRIC, v, s, **kwargs)
        else:
            for s, v in enumerate(values, step):
                log(METRIC, v, s)
        elapsed = clock() - start
        per_call.append(elapsed / len(values) / 1_000.0)
        step += len(values)
    return per_call


def check_history(
    client: MlflowClient,
    run_id: str,
    values: list[float],
    timestamps_ms: list[int] | None = None,
) -> None:
    """Raise ``Failure`` unless the run's ``loss`` history is exactly ``values`` at steps
    0..len-1 (and, when given, exactly ``timestamps_ms``)."""
    history = sorted(client.get_metric_history(run_id, METRIC), key=lambda m: m.step)
    if len(history) != len(values):
        raise Failure(f"read back {len(history):,} points, logged {len(values):,}")
    for step, (metric, value) in enumerate(zip(history, values, strict=True)):
        if metric.step != step or metric.value != value:
            raise Failure(
                f"point #{step}: read back step {metric.step} value {metric.value!r}, "
                f"logged step {step} value {value!r}"
            )
        if timestamps_ms is not None and metric.timestamp != timestamps_ms[step]:
            raise Failure(
                f"step {step}: MLflow timestamp {metric.timestamp} ms, "
                f"local store {timestamps_ms[step]} ms"
            )


class SinkTimer:
    """Times the MLflow backend on Tracelet's sink thread: each ``MlflowBackend.log_batch``
    (one journaled batch) and, inside it, each ``MlflowClient.log_batch`` request it makes.

    It wraps the two methods while installed (the library is not changed); the wrappers add
    a few microseconds per batch and per request, against milliseconds per request.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # requests in flight are timed on several threads
        self.batches = 0
        self.batch_s = 0.0
        self.requests = 0
        self.request_s = 0.0
        self.request_cpu_s = 0.0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        timer = self
        original_log_batch = MlflowBackend.log_batch
        original_start = MlflowBackend.start

        def log_batch(backend, batch):
            begin = time.perf_counter()
            try:
                original_log_batch(backend, batch)
            finally:
                timer.batches += 1
                timer.batch_s += time.perf_counter() - begin

        def start(backend):
            original_start(backend)
            request = backend.client.log_batch

            def timed_request(*args, **kwargs):
                begin, cpu = time.perf_counter(), time.thread_time()
                try:
                    return request(*args, **kwargs)
                finally:
                    with timer.lock:
                        timer.requests += 1
                        timer.request_s += time.perf_counter() - begin
                        timer.request_cpu_s += time.thread_time() - cpu

            backend.client.log_batch = timed_request

        MlflowBackend.log_batch = log_batch
        MlflowBackend.start = start
        try:
            yield
        finally:
            MlflowBackend.log_batch = original_log_batch
            MlflowBackend.start = original_start


def fluent_run(url: str, experiment: str) -> str:
    """Point MLflow's fluent API at the server, start a run in ``experiment``; its id."""
    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(experiment)
    return mlflow.start_run(run_name=experiment).info.run_id


# -- the four ways -----------------------------------------------------------------------------


def warm_up(url: str) -> None:
    """First requests to a fresh server are slow (lazy imports, schema caches): untimed."""
    client = MlflowClient(url)
    run = client.create_run(client.create_experiment("warm-up"))
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[Metric(METRIC, 0.5, now, s) for s in range(BATCH)])
    client.get_metric_history(run.info.run_id, METRIC)
    client.set_terminated(run.info.run_id)


def bench_tracelet(url: str, values: list[float], chunks: list[list[float]]) -> dict[str, Any]:
    client = MlflowClient(url)
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        # The settings a user gets (collectors, live detection, buffer), but a flush
        # timeout long enough for the server to take all 100,000 points before stop returns.
        settings = tracelet.TraceletSettings(store_path=tmp, flush_timeout=FLUSH_TIMEOUT)
        sink = SinkTimer()
        with sink.installed():
            exp = tracelet.start_logging(
                "tracelet",
                project="bench",
                backend="mlflow",
                config={"mlflow": {"tracking_uri": url, "experiment_name": "tracelet"}},
                settings=settings,
            )
            gc.collect()
            start = time.perf_counter()
            try:
                per_call = time_chunks(exp.log_metric, chunks)
                logged = time.perf_counter()
            finally:
                tracelet.stop_logging()
            stopped = time.perf_counter()
        result: dict[str, Any] = {
            "calls": chunk_stats(per_call),
            "loop_s": logged - start,
            "stop_s": stopped - logged,
            "total_s": stopped - start,
            "sink": sink,
            "error": "",
        }
        store = LocalStore(tmp)
        try:
            timestamps = [round(ts * 1000) for _, _, _, ts in store.metrics(exp.id, METRIC)]
        finally:
            store.close()
    try:
        found = client.search_runs(
            [client.get_experiment_by_name("tracelet").experiment_id],
            filter_string=f"tags.`tracelet.run_id` = '{exp.id}'",
        )
        if len(found) != 1:
            raise Failure(f"{len(found)} MLflow runs carry tracelet.run_id {exp.id}")
        if len(timestamps) != POINTS:
            raise Failure(f"the local store holds {len(timestamps):,} points")
        check_history(client, found[0].info.run_id, values, timestamps)
        if found[0].info.status != "FINISHED":
            raise Failure(f"the MLflow run is {found[0].info.status}, not FINISHED")
    except Failure as error:
        result["error"] = str(error)
    return result


def bench_sync(url: str, values: list[float]) -> dict[str, Any]:
    subset = values[:SYNC_CALLS]
    chunks = [subset[i : i + SYNC_CHUNK] for i in range(0, SYNC_CALLS, SYNC_CHUNK)]
    run_id = fluent_run(url, "mlflow-sync")
    try:
        per_call = time_chunks(mlflow.log_metric, chunks)
    finally:
        mlflow.end_run()
    result: dict[str, Any] = {"calls": chunk_stats(per_call), "error": ""}
    try:
        check_history(MlflowClient(url), run_id, subset)
    except Failure as error:
        result["error"] = str(error)
    return result


def bench_async(url: str, values: list[float], chunks: list[list[float]]) -> dict[str, Any]:
    run_id = fluent_run(url, "mlflow-async")
    gc.collect()
    start = time.perf_counter()
    try:
        per_call = time_chunks(mlflow.log_metric, chunks, synchronous=False)
        logged = time.perf_counter()
    finally:
        mlflow.end_run()
    ended = time.perf_counter()
    result: dict[str, Any] = {
        "calls": chunk_stats(per_call),
        "loop_s": logged - start,
        "end_s": ended - logged,
        "total_s": ended - start,
        "error": "",
    }
    try:
        check_history(MlflowClient(url), run_id, values)
    except Failure as error:
        result["error"] = str(error)
    return result


def bench_log_batch(url: str, values: list[float], chunks: list[list[float]]) -> dict[str, Any]:
    """``Metric`` objects (timestamp taken per point, as a caller would) and ``log_batch``
    calls of 1,000 are both inside the timed loop."""
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("mlflow-log-batch")
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment("mlflow-log-batch")
    )
    run_id = client.create_run(experiment_id).info.run_id
    now = time.time
    gc.collect()
    start, cpu = time.perf_counter(), time.thread_time()
    step = 0
    for part in chunks:
        metrics = [Metric(METRIC, v, int(now() * 1000), s) for s, v in enumerate(part, step)]
        client.log_batch(run_id, metrics=metrics)
        step += len(part)
    total = time.perf_counter() - start
    cpu = time.thread_time() - cpu
    client.set_terminated(run_id)
    result: dict[str, Any] = {"total_s": total, "cpu_s": cpu, "error": ""}
    try:
        check_history(client, run_id, values)
    except Failure as error:
        result["error"] = str(error)
    return result


# -- the table ---------------------------------------------------------------------------------


def fmt_stats(stats: dict[str, float], digits: int = 3) -> str:
    return (
        f"median {stats['median']:,.{digits}f} us  p90 {stats['p90']:,.{digits}f}  "
        f"p99 {stats['p99']:,.{digits}f}  mean {stats['mean']:,.{digits}f}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def read_row(
    results: list[dict[str, Any]], points: int, what: str = ""
) -> tuple[str, str, str, str]:
    label = "  read back (get_metric_history)"
    if any(r["error"] for r in results):
        return (label, "MISMATCH (see below)", "== logged", "FAIL")
    each = " each run" if len(results) > 1 else ""
    return (label, f"{points:,} points{each}{what}", "== logged", "OK")


def median_of(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="rounds of rows 1 and 4, alternating ABBA..., median taken (default 2)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "Creating a new experiment"
    values = make_values(POINTS, seed=20240601)
    chunks = [values[i : i + CHUNK] for i in range(0, POINTS, CHUNK)]
    ours_rounds: list[dict[str, Any]] = []
    batch_rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-mlflow-") as root:
        server = MlflowServer(Path(root), workers=SERVER_WORKERS)
        try:
            server.start()
            warm_up(server.url)
            sync = bench_sync(server.url, values)
            # Rows 1 and 4 share the server's throughput, which drifts with machine load:
            # alternate them (log_batch, tracelet, tracelet, log_batch, ...).
            for round_ in range(args.rounds):
                pair = [
                    lambda: batch_rounds.append(bench_log_batch(server.url, values, chunks)),
                    lambda: ours_rounds.append(bench_tracelet(server.url, values, chunks)),
                ]
                for run in pair if round_ % 2 == 0 else reversed(pair):
                    run()
            fire = bench_async(server.url, values, chunks)
        except RuntimeError as error:  # the server would not start: nothing was measured
            print(f"error: {error}", file=sys.stderr)
            return 2
        finally:
            mlflow.end_run()
            server.stop()

    batch_rate = POINTS / median_of(batch_rounds, "total_s")
    ours_total = median_of(ours_rounds, "total_s")
    ours_rate = POINTS / ours_total
    ours_calls = {
        key: statistics.median(r["calls"][key] for r in ours_rounds)
        for key in ours_rounds[0]["calls"]
    }
    sync_us = sync["calls"]["median"]
    ours_us = ours_total / POINTS * 1e6
    sinks: list[SinkTimer] = [r["sink"] for r in ours_rounds]
    rounds_text = f" (median of {args.rounds})" if args.rounds > 1 else ""
    rows: list[tuple[str, str, str, str]] = [
        (
            "tracelet log_metric, backend mlflow",
            fmt_stats(ours_calls),
            f"median <= {CALLER_TARGET_US:.2f} us",
            verdict(ours_calls["median"] <= CALLER_TARGET_US),
        ),
        (
            "  logging loop + stop_logging",
            f"{median_of(ours_rounds, 'loop_s'):.2f} s + "
            f"{median_of(ours_rounds, 'stop_s'):.2f} s{rounds_text}",
            "-",
            "-",
        ),
        (
            "  of stop: MlflowBackend.log_batch",
            f"{statistics.median(t.batch_s for t in sinks):.2f} s, {sinks[0].batches} batches; "
            f"in its {sinks[0].requests} MlflowClient.log_batch requests "
            f"{statistics.median(t.request_s for t in sinks):.2f} s summed over the requests "
            f"in flight (their CPU {statistics.median(t.request_cpu_s for t in sinks):.2f} s)"
            f"{rounds_text}",
            "-",
            "-",
        ),
        (
            "  end-to-end throughput",
            f"{ours_rate:,.0f} points/s = {ours_rate / batch_rate:.2f}x sequential log_batch"
            f"{rounds_text}",
            f">= {THROUGHPUT_SHARE_TARGET:.1f}x sequential log_batch",
            verdict(ours_rate >= THROUGHPUT_SHARE_TARGET * batch_rate),
        ),
        (
            "  end-to-end vs sync log_metric",
            f"{sync_us / ours_us:,.0f}x faster ({ours_us:.1f} vs {sync_us:,.0f} us per point)",
            f">= {SPEEDUP_TARGET:.0f}x",
            verdict(sync_us / ours_us >= SPEEDUP_TARGET),
        ),
        read_row(ours_rounds, POINTS, ", steps, values, ms timestamps exact"),
        (
            f"mlflow.log_metric (sync), {SYNC_CALLS:,} calls",
            fmt_stats(sync["calls"], 0),
            "-",
            "-",
        ),
        (
            f"  {POINTS:,} points, EXTRAPOLATED",
            f"{sync_us * POINTS / 1e6:,.0f} s = {1e6 / sync_us:,.0f} points/s "
            f"(median x {POINTS:,})",
            "-",
            "-",
        ),
        read_row([sync], SYNC_CALLS),
        (
            "mlflow.log_metric(synchronous=False)",
            fmt_stats(fire["calls"], 1),
            "-",
            "-",
        ),
        (
            "  logging loop + end_run (flush)",
            f"{fire['loop_s']:.2f} s + {fire['end_s']:.2f} s",
            "-",
            "-",
        ),
        (
            "  end-to-end throughput",
            f"{POINTS / fire['total_s']:,.0f} points/s",
            "-",
            "-",
        ),
        read_row([fire], POINTS),
        (
            f"MlflowClient.log_batch, {BATCH:,} per call",
            f"{median_of(batch_rounds, 'total_s'):.2f} s for {POINTS:,} points = "
            f"{batch_rate:,.0f} points/s{rounds_text}",
            "-",
            "-",
        ),
        (
            "  caller thread CPU",
            f"{median_of(batch_rounds, 'cpu_s'):.2f} s{rounds_text}",
            "-",
            "-",
        ),
        read_row(batch_rounds, POINTS),
    ]
    if args.rounds > 1:
        rows.insert(
            1,
            (
                "  median of each round (us)",
                ", ".join(f"{r['calls']['median']:.3f}" for r in ours_rounds),
                "-",
                "-",
            ),
        )
        rows.insert(
            5,
            (
                "  each round: tracelet vs log_batch",
                "; ".join(
                    f"{POINTS / a['total_s']:,.0f} vs {POINTS / b['total_s']:,.0f}"
                    for a, b in zip(ours_rounds, batch_rounds, strict=True)
                )
                + " points/s",
                "-",
                "-",
            ),
        )
    print_table(rows)
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    print(
        f"mlflow {mlflow.__version__} server (SQLite, {SERVER_WORKERS} workers) on 127.0.0.1; "
        f"MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS=1; python {platform.python_version()}, "
        f"cpu_count {cpus} ({usable} usable); rows 1 and 4: {args.rounds} round(s); "
        f"total {time.perf_counter() - began:.0f} s"
    )
    sys.stdout.flush()
    named = [
        *((f"tracelet round {i}", r) for i, r in enumerate(ours_rounds, 1)),
        ("log_metric sync", sync),
        ("log_metric async", fire),
        *((f"log_batch round {i}", r) for i, r in enumerate(batch_rounds, 1)),
    ]
    failures = [f"{name}: {result['error']}" for name, result in named if result["error"]]
    for failure in failures:
        print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
