"""tracelet-torch on the CPU: what ``watch`` adds to a training step, beside ``wandb.watch``,
and what a tensor-valued ``log_metric`` costs the caller, beside a float.

Run from the repository root::

    python benchmarks/torch_integration.py     # about two minutes on 2 cores

Prints one table:

1. A small CNN (two convolutions, one linear layer; batches of 32 images 3x32x32) trained
   with SGD, ``loss`` logged every step, with the settings a user gets (collectors and
   live detection on). Median step time without ``watch``, and with
   ``tracelet.watch(model, log_freq=N)`` (gradient and weight statistics, update ratios)
   at N = 100 and N = 1, in blocks of 100 steps taken in turn, 9 rounds, in one run (so
   the machine's drift falls on all alike). The same in a W&B run (offline) with
   ``wandb.log`` and ``wandb.watch(model, log="all", log_freq=N)`` when wandb is
   installed.
2. ``log_metric("loss", value)`` with a float, with ``tensor.item()``, a 0-d tensor, and
   a 0-d tensor that needs grad (the loss itself), 200,000 calls each.

Target: watch at log_freq 100 adds at most 3% to the step. Two cores cannot resolve 3%
directly (blocks differ by several percent), so the verdict is on the cost derived from
the hooks alone (log_freq 10**9: never sampling) plus a hundredth of a sample (log_freq
1); the direct measurement is shown too. Exits 1 only when the watched run's statistics
did not reach the store.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_common import chunk_stats, median_p99_mean, print_table, timed_calls

BLOCK = 100
"""Training steps per block."""
ROUNDS = 9
"""Blocks of each configuration."""
NEVER = 10**9
"""A log_freq that never samples in a run this short: what the hooks alone cost."""
FREQUENCIES = (NEVER, 100, 1)
CALLS = 200_000
WATCH_TARGET = 3.0
"""Most percent watch at log_freq 100 may add to a training step."""


def small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(32 * 8 * 8, 10),
    )


def training(model: torch.nn.Module) -> Callable[[Callable[[torch.Tensor], None]], float]:
    """A function running ``BLOCK`` training steps of ``model`` (logging the loss with the
    function it is given) and returning their mean time in seconds: the cost of a
    statistics step every ``log_freq`` is spread over the steps, as the user pays it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.randn(32, 3, 32, 32)
    labels = torch.randint(0, 10, (32,))

    def block(log: Callable[[torch.Tensor], None]) -> float:
        times = []
        for _ in range(BLOCK):
            begin = time.perf_counter()
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            log(loss)
            times.append(time.perf_counter() - begin)
        return statistics.fmean(times)

    return block


def alternating(
    block: Callable[[], float], watch: Callable[[int], None], unwatch: Callable[[], None]
) -> dict[int | None, float]:
    """Median step time without watch and with it at each of ``FREQUENCIES``: blocks of
    each, in turn, ``ROUNDS`` times (the machine's drift falls on all of them alike). A
    block is ``BLOCK`` steps, so a watch attached for one samples as often as log_freq."""
    times: dict[int | None, list[float]] = {None: [], **{f: [] for f in FREQUENCIES}}
    block()  # warm-up
    for _ in range(ROUNDS):
        for frequency in times:
            if frequency is not None:
                watch(frequency)
            times[frequency].append(block())
            if frequency is not None:
                unwatch()
    return {frequency: statistics.median(values) for frequency, values in times.items()}


def tracelet_steps(root: Path) -> dict[int | None, float]:
    import tracelet
    from tracelet.storage import LocalStore

    model = small_cnn()
    block = training(model)
    settings = tracelet.TraceletSettings(store_path=str(root / ".tracelet"))
    with tracelet.start_logging("cnn", project="bench", settings=settings) as exp:

        def log(loss: torch.Tensor) -> None:
            exp.log_metric("loss", loss)
            exp.step()

        result = alternating(
            lambda: block(log),
            lambda frequency: tracelet.watch(model, log_freq=frequency),
            lambda: tracelet.unwatch(model),
        )
    store = LocalStore(root / ".tracelet")
    try:
        if not store.metrics(exp.id, "grad/0.weight/norm"):  # (from the log_freq=1 blocks)
            raise SystemExit("watch's statistics did not reach the store")
    finally:
        store.close()
    return result


def wandb_steps(root: Path) -> dict[int | None, float]:
    import wandb

    model = small_cnn()
    block = training(model)
    run = wandb.init(
        project="bench", mode="offline", dir=str(root), settings=wandb.Settings(silent=True)
    )

    def log(loss: torch.Tensor) -> None:
        run.log({"loss": loss.item()})

    try:
        return alternating(
            lambda: block(log),
            lambda frequency: wandb.watch(model, log="all", log_freq=frequency),
            lambda: wandb.unwatch(model),
        )
    finally:
        run.finish()


def watch_rows(root: Path) -> list[tuple[str, ...]]:
    tools = {"tracelet": tracelet_steps}
    try:
        import wandb  # noqa: F401

        tools["wandb"] = wandb_steps
    except ImportError:
        pass
    rows = []
    for tool, measure in tools.items():
        median = measure(root / tool)
        base = median[None]
        added = {f: 100.0 * (median[f] / base - 1.0) for f in FREQUENCIES}
        rows.append((f"  {tool}, no watch", f"{base * 1e3:.2f} ms/step", "-", "-"))
        for frequency in FREQUENCIES:
            label = "hooks only, never sampling" if frequency == NEVER else f"log_freq={frequency}"
            result = f"{median[frequency] * 1e3:.2f} ms/step  ({added[frequency]:+.1f}%)"
            rows.append((f"  {tool}.watch {label}", result, "-", "-"))
        # At log_freq=100 the cost is the hooks' on every step plus a hundredth of a
        # sample's: a difference of 1-3% is below this machine's noise when measured
        # directly, so it is derived from the two that are not.
        derived = added[NEVER] + (added[1] - added[NEVER]) / 100
        target, verdict = "-", "-"
        if tool == "tracelet":
            target = f"<= {WATCH_TARGET:.0f}%"
            verdict = "PASS" if derived <= WATCH_TARGET else "MISS"
        label = f"  {tool}.watch log_freq=100, hooks + 1/100 sample"
        rows.append((label, f"{derived:+.1f}%", target, verdict))
    return rows


def tensor_rows(root: Path) -> list[tuple[str, ...]]:
    import tracelet

    settings = tracelet.TraceletSettings(store_path=str(root / ".tracelet"))
    plain = torch.tensor(0.5)
    graph = (torch.ones(3, requires_grad=True) * 0.5).mean()
    rows = []
    with tracelet.start_logging("values", project="bench", settings=settings) as exp:
        log = exp.log_metric
        for label, value in (("float", 0.5), ("0-d tensor", plain), ("tensor with grad", graph)):

            def calls(start: int, stop: int, value: object = value) -> None:
                for step in range(start, stop):
                    log("loss", value, step)

            stats = chunk_stats(timed_calls(calls, CALLS, 1_000))
            rows.append((f"  log_metric(loss, {label})", median_p99_mean(stats), "-", "-"))

        def items(start: int, stop: int) -> None:
            for step in range(start, stop):
                log("loss", plain.item(), step)

        stats = chunk_stats(timed_calls(items, CALLS, 1_000))
        rows.insert(1, ("  log_metric(loss, tensor.item())", median_p99_mean(stats), "-", "-"))
    return rows


def main() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rows = [("small CNN training step (CPU)", "", "", "")]
        rows += watch_rows(root / "watch")
        rows.append(("caller's cost per call", "", "", ""))
        rows += tensor_rows(root / "values")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {ROUNDS} rounds of {BLOCK} steps")
    print_table(rows)


if __name__ == "__main__":
    sys.exit(main())
