"""A real training loop, with and without tracking: what logging costs a user, in percent.

Run from the repository root (``pip install -r benchmarks/requirements.txt`` first)::

    python benchmarks/training_loop.py              # about 25 minutes on 2 cores
    python benchmarks/training_loop.py --rounds 1 --models mlp

Two small PyTorch models are trained on CPU for 2,000 steps each on random data: a LeNet-style
CNN (about 10 ms a step here) and a tiny MLP (about 1.5 ms a step: 700 steps/s, the worst
case for logging's share). The MLP runs twice: with PyTorch's default intra-op threads
(``mlp``: one per core, so the loop keeps every core of a small machine busy) and with
``torch.set_num_threads(1)`` (``mlp1``: a core left free, as on a GPU machine, whose loop
never fills every core). Each step computes 20 metrics (the loss and 19 others, as
``float``); every variant computes the same metrics, and only what it does with them
differs:

- no logging (the baseline);
- the floor: the step's points appended to a deque as ``(name, value, step, time)`` tuples,
  no tracker at all (what any Python logger costs at least);
- for context, the floor plus the least a background logger does: a thread that every
  0.5 s takes the queued points and serializes them (pickle), about 1 ms of Python: what
  any work off the training thread costs the loop on this machine (where the loop fills
  every core, PyTorch's intra-op threads wait for each other at every parallel operation,
  and any other thread that runs can delay them);
- Tracelet with the settings a user gets (``tracelet.init(project=...)``: the local store,
  collectors, live anomaly detection, the default buffer and flush timeout);
- peers, where installed: W&B offline (``wandb.log``), MLflow
  (``mlflow.log_metrics(..., synchronous=False)`` into a SQLite store), trackio
  (``trackio.log``). A peer that is not installed is a printed note, not an error.

Each variant runs ``--rounds`` times (default: 3 for the CNN, 9 for each MLP, whose loops are
short and noisier), in turns, after one untimed warm-up of the model. A round's overhead is
its loop time over the baseline's run in the same round (paired, so that a machine slowing
down between rounds counts against no variant); the table shows the median of the rounds'
overheads and a 95 % interval of that median (distribution-free: the order statistics a sign
test gives; the floor's row, which does almost nothing, shows what the machine's noise alone
reads; fewer than 6 rounds give a lower confidence, printed beside it). Tracelet's verdict
is PASS when the whole interval is within the 1 % target, MISS when all of it is over, and
UNSETTLED when the noise leaves both possible or the confidence is under 95 % (more
``--rounds`` narrow it). The loop column is the median
loop time, not paired, so it need not match the overhead exactly.

The CPU column is what the machine's noise does not blur: the CPU each variant's logging
used during the loop (medians over the rounds), where it ran: in its calls on the training
thread (``time.thread_time``), on the threads it started in the training process, and in
its child processes (W&B's service, Tracelet's journal writer), read from Linux's
per-thread schedstat (threads another variant left running are not counted); then their
total against the baseline's median loop. Where the loop fills every core (``mlp``), all
of it delays the loop; with a core free (``mlp1``), the calls do, and other work mostly
runs beside it. The time each tool takes to finish (``finish``/``end_run``) is shown apart:
work a tool leaves for then is not in the CPU column. Exits 1 only when Tracelet's points read back
from its store differ from what was logged. See README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import logging
import math
import os
import pickle
import platform
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from bench_common import print_table

STEPS = 2_000
MODELS = ("cnn", "mlp", "mlp1")
DEFAULT_ROUNDS = {"cnn": 3, "mlp": 9, "mlp1": 9}
METRICS = 20
TARGET_PERCENT = 1.0
SEED = 7

Logger = Callable[[dict[str, float], int], None]


class Failure(Exception):
    """A correctness check failed."""


# -- the training loop ---------------------------------------------------------------------


def make_model(kind: str) -> tuple[Any, Any, Any, Any]:
    """``mlp``: a 256-512-512-10 MLP on a batch of 64 vectors (about 1.5 ms a step here, far
    lighter than real training: the worst case for logging's share). ``cnn``: a LeNet-style
    CNN on a batch of 64 28x28 images (about 10 ms a step here)."""
    import torch
    from torch import nn

    use_threads(kind)
    torch.manual_seed(SEED)
    if kind.startswith("mlp"):
        model = nn.Sequential(
            nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
        )
        inputs = torch.randn(64, 256)
    else:
        model = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        inputs = torch.randn(64, 1, 28, 28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    targets = torch.randint(0, 10, (64,))
    return model, optimizer, inputs, targets


@functools.cache
def default_threads() -> int:
    """PyTorch's intra-op threads before this script changed them."""
    import torch

    return torch.get_num_threads()


def use_threads(kind: str) -> None:
    """PyTorch's intra-op threads for ``kind``: one for ``mlp1``, else its default."""
    import torch

    default = default_threads()  # (read before any change, whatever the models' order)
    torch.set_num_threads(1 if kind == "mlp1" else default)


def train(
    log: Logger | None, model_kind: str, steps: int = STEPS
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Train for ``steps``, computing 20 metrics a step; return the loop's seconds and the
    logging's CPU (:func:`cpu_used`), and the metrics (for checking what was logged)."""
    import torch

    model, optimizer, inputs, targets = make_model(model_kind)
    loss_fn = torch.nn.CrossEntropyLoss()
    logged: list[dict[str, float]] = []
    calls_ns = 0
    clock, cpu_clock = time.perf_counter, time.thread_time_ns
    before = background_cpu()
    started = clock()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        optimizer.step()
        value = loss.item()
        metrics = {"loss": value}
        metrics.update({f"metric_{i:02d}": value * i + step for i in range(1, METRICS)})
        if log is not None:
            called = cpu_clock()
            log(metrics, step)
            calls_ns += cpu_clock() - called
        logged.append(metrics)
    loop_s = clock() - started
    return {"loop_s": loop_s, **cpu_used(before, background_cpu(), calls_ns / 1e9)}, logged


# -- what logging costs in CPU -------------------------------------------------------------


OTHERS: set[tuple[int, int]] = set()
"""The threads and processes' threads, by ``(pid, tid)``, that the variants other than the
one running started and left running (W&B's service lives as long as this process):
:func:`background_cpu` leaves them out."""


def background_cpu() -> dict[tuple[int, int], int]:
    """CPU nanoseconds so far of each thread this process's Python code started (not the
    main thread, nor PyTorch's intra-op threads) and of each thread of its child processes
    (W&B's service, Tracelet's journal writer), by ``(pid, tid)``, from Linux's schedstat
    (nanoseconds, where ``/proc/<pid>/stat`` counts 10 ms ticks), those of
    :data:`OTHERS` left out; empty elsewhere."""
    import psutil

    me, main_thread = os.getpid(), threading.main_thread().native_id
    tasks = [(me, t.native_id) for t in threading.enumerate() if t.native_id != main_thread]
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(OSError):
            tasks += [(child.pid, int(tid)) for tid in os.listdir(f"/proc/{child.pid}/task")]
    used = {}
    for pid, tid in tasks:
        if (pid, tid) in OTHERS:
            continue
        with (
            contextlib.suppress(OSError, ValueError, TypeError),
            open(f"/proc/{pid}/task/{tid}/schedstat") as stat,
        ):
            used[pid, tid] = int(stat.read().split()[0])
    return used


def cpu_used(
    before: dict[tuple[int, int], int], after: dict[tuple[int, int], int], calls_s: float
) -> dict[str, float]:
    """Seconds of CPU a loop's logging used: in its calls on the training thread, on this
    process's other threads, and in child processes."""
    me = os.getpid()
    spent = {pid_tid: ns - before.get(pid_tid, 0) for pid_tid, ns in after.items()}
    threads = sum(ns for (pid, _), ns in spent.items() if pid == me) / 1e9
    processes = sum(ns for (pid, _), ns in spent.items() if pid != me) / 1e9
    return {"calls_s": calls_s, "threads_s": threads, "processes_s": processes}


# -- the variants --------------------------------------------------------------------------


@contextlib.contextmanager
def in_folder() -> Iterator[str]:
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-") as tmp:
        os.chdir(tmp)
        try:
            yield tmp
        finally:
            os.chdir(before)


def run_baseline(model: str) -> dict[str, float]:
    loop, _ = train(None, model)
    return {**loop, "finish_s": 0.0}


def floor_logger(queued: deque[tuple[str, float, int, float]]) -> Logger:
    """The least any Python logger does: the step's points, as tuples with a timestamp,
    appended to ``queued`` (no tracker at all)."""

    def log(metrics: dict[str, float], step: int) -> None:
        now = time.time()
        queued.extend([(name, value, step, now) for name, value in metrics.items()])

    return log


def run_floor(model: str) -> dict[str, float]:
    """The floor: the step's 20 points appended to a deque (:func:`floor_logger`)."""
    loop, _ = train(floor_logger(deque()), model)
    return {**loop, "finish_s": 0.0}


def run_floor_thread(model: str) -> dict[str, float]:
    """The floor, plus a thread that every 0.5 s takes the queued points and pickles them."""
    queued: deque[tuple[str, float, int, float]] = deque()
    stop = threading.Event()

    def serialize() -> None:
        while not stop.wait(0.5):
            pickle.dumps([queued.popleft() for _ in range(len(queued))])

    thread = threading.Thread(target=serialize, daemon=True)
    thread.start()
    try:
        loop, _ = train(floor_logger(queued), model)
    finally:
        stop.set()
        thread.join()
    return {**loop, "finish_s": 0.0}


def run_tracelet(model: str) -> dict[str, float]:
    import tracelet
    from tracelet.storage import LocalStore

    with in_folder() as tmp:
        exp = tracelet.init(project="bench")
        loop, logged = train(lambda metrics, step: tracelet.log(metrics, step), model)
        began = time.perf_counter()
        tracelet.finish()
        finish_s = time.perf_counter() - began
        store = LocalStore(os.path.join(tmp, ".tracelet"))
        try:
            got = [(n, v, s) for n, v, s, _ in store.metrics(exp.id) if not n.startswith("sys")]
        finally:
            store.close()
    expected = [(n, v, step) for step, metrics in enumerate(logged) for n, v in metrics.items()]
    if got != expected:
        raise Failure(f"Tracelet's store holds {len(got):,} points, {len(expected):,} logged")
    return {**loop, "finish_s": finish_s}


def run_wandb(model: str) -> dict[str, float]:
    import wandb

    with in_folder() as tmp:
        run = wandb.init(project="bench", mode="offline", dir=tmp, settings=wandb.Settings())
        loop, _ = train(lambda metrics, step: run.log(metrics, step=step), model)
        began = time.perf_counter()
        run.finish()
        return {**loop, "finish_s": time.perf_counter() - began}


def run_mlflow(model: str) -> dict[str, float]:
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)  # after import: MLflow sets its own
    with in_folder() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment("bench")
        with mlflow.start_run():
            loop, _ = train(
                lambda metrics, step: mlflow.log_metrics(metrics, step=step, synchronous=False),
                model,
            )
            began = time.perf_counter()
        return {**loop, "finish_s": time.perf_counter() - began}


def run_trackio(model: str) -> dict[str, float]:
    with in_folder() as tmp:
        os.environ["TRACKIO_DIR"] = tmp
        import trackio

        trackio.init(project="bench")
        loop, _ = train(lambda metrics, step: trackio.log(metrics, step=step), model)
        began = time.perf_counter()
        trackio.finish()
        return {**loop, "finish_s": time.perf_counter() - began}


VARIANTS: dict[str, tuple[Callable[[str], dict[str, float]], str | None]] = {
    "no logging (baseline)": (run_baseline, None),
    "floor: points appended to a deque": (run_floor, None),
    "context: floor + a thread pickling them each 0.5 s": (run_floor_thread, None),
    "tracelet, default settings": (run_tracelet, None),
    "W&B offline (wandb.log)": (run_wandb, "wandb"),
    "MLflow log_metrics(synchronous=False), SQLite": (run_mlflow, "mlflow"),
    "trackio (trackio.log)": (run_trackio, "trackio"),
}


# -- the table -----------------------------------------------------------------------------


HEADER = (
    "variant",
    "loop (median)",
    "overhead",
    "its interval",
    "CPU: calls + threads + processes",
    "finish",
    "target",
    "verdict",
)
LEVEL = 0.95
"""The confidence the interval of a median overhead is given at."""


def median_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """The distribution-free interval of the median of ``values`` (a sign test): the order
    statistics ``x(a)`` and ``x(n + 1 - a)`` for the largest ``a`` whose interval holds the
    median with at least ``level`` confidence, and that confidence. Too few values for
    ``level`` (fewer than 6 for 95 %) give their smallest to largest, at the lower
    confidence they have."""
    ordered, n = sorted(values), len(values)

    def confidence(a: int) -> float:  # 1 - 2 P(Bin(n, 1/2) < a)
        return 1.0 - 2.0 * sum(math.comb(n, k) for k in range(a)) / 2**n

    a = max((a for a in range(1, (n + 1) // 2 + 1) if confidence(a) >= level), default=1)
    return ordered[a - 1], ordered[n - a], confidence(a)


def verdict(low: float, high: float, confidence: float) -> str:
    """PASS when the whole interval is within the target, MISS when all of it is over, and
    UNSETTLED when the machine's noise leaves both possible (or the rounds are too few
    for the interval to have :data:`LEVEL` confidence)."""
    if confidence < LEVEL:
        return "UNSETTLED"
    if high <= TARGET_PERCENT:
        return "PASS"
    return "MISS" if low > TARGET_PERCENT else "UNSETTLED"


def table_rows(model: str, results: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per variant that ran: median loop time, the median of the rounds' overheads
    over the baseline run in the same round with its interval, and Tracelet's verdict."""
    bases = {r["round"]: r["loop_s"] for r in results["no logging (baseline)"]}
    base_loop = statistics.median(bases.values())
    rows = []
    for name, runs in results.items():
        if not runs:
            continue
        loops = [r["loop_s"] for r in runs]
        loop = statistics.median(loops)
        finish = statistics.median(r["finish_s"] for r in runs)
        overheads = sorted(100.0 * (r["loop_s"] / bases[r["round"]] - 1.0) for r in runs)
        overhead = statistics.median(overheads)
        is_ours = name.startswith("tracelet")
        is_base = name.startswith("no logging")
        low, high, confidence = median_interval(overheads)
        interval = f"{low:+.1f} to {high:+.1f} % ({confidence:.0%})"
        rows.append(
            (
                f"{model}: {name}",
                f"{loop:.2f} s ({STEPS / loop:,.0f} steps/s)",
                "-" if is_base else f"{overhead:+.1f} %",
                "-" if is_base else interval,
                "-" if is_base else cpu_cell(runs, base_loop),
                f"{finish:.2f} s",
                f"<= {TARGET_PERCENT:g} %" if is_ours else "-",
                verdict(low, high, confidence) if is_ours else "-",
            )
        )
    return rows


def cpu_cell(runs: list[dict[str, Any]], base_loop: float) -> str:
    """The median CPU of a variant's logging, in ms by where it ran, its total, and that
    total against the baseline's median loop."""
    parts = [1e3 * statistics.median(r[key] for r in runs) for key in CPU_PARTS]
    total = sum(parts)
    spent = " + ".join(f"{part:.0f}" for part in parts)
    return f"{spent} = {total:.0f} ms ({100 * total / (1e3 * base_loop):.1f} %)"


CPU_PARTS = ("calls_s", "threads_s", "processes_s")
"""Where a loop's logging ran: in its calls, on other threads, in other processes."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, help="runs of each variant (default: cnn 3, mlp and mlp1 9)"
    )
    parser.add_argument(
        "--models", nargs="+", choices=MODELS, default=list(MODELS), help="models (default: all)"
    )
    parser.add_argument(
        "--no-peers", action="store_true", help="only the baseline, the floors and Tracelet"
    )
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if importlib.util.find_spec("torch") is None:
        print("torch is not installed: pip install -r benchmarks/requirements.txt")
        return 1
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    variants = {
        name: run
        for name, (run, module) in VARIANTS.items()
        if (module is None or importlib.util.find_spec(module) is not None)
        and not (args.no_peers and module is not None)
    }
    notes = [
        f"{name}: not installed"
        for name, (_, module) in VARIANTS.items()
        if name not in variants and not args.no_peers
    ]
    rounds = {model: args.rounds or DEFAULT_ROUNDS[model] for model in args.models}
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    owners: dict[tuple[int, int], str] = {}  # which variant started each thread left running
    for model in args.models:
        train(None, model, steps=200)  # warm-up: first allocations, kernels, lazy imports
        results: dict[str, Any] = {name: [] for name in variants}
        for round_ in range(rounds[model]):
            for name, run in variants.items():
                if results[name] is None:
                    continue
                OTHERS.clear()
                OTHERS.update(task for task, owner in owners.items() if owner != name)
                running_before = set(background_cpu())
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # peers' banners
                        results[name].append({**run(model), "round": round_})
                except Failure as error:
                    failures.append(f"{model}, {name}: {error}")
                except Exception as error:  # a peer that breaks is a note, not a crash
                    notes.append(f"{model}, {name}: failed ({error!r})")
                    results[name] = None
                finally:  # what it left running is its own
                    owners.update(dict.fromkeys(set(background_cpu()) - running_before, name))
        rows += table_rows(model, results)
    print_table(rows, HEADER)
    for note in notes:
        print(f"note: {note}")
    print(
        f"{STEPS:,} steps x {METRICS} metrics a step; rounds: "
        f"{', '.join(f'{model} {count}' for model, count in rounds.items())}; "
        f"python {platform.python_version()}, {platform.system()} {platform.machine()}, "
        f"cpu_count {os.cpu_count()}; total {time.perf_counter() - began:.0f} s"
    )
    for failure in failures:
        print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
