"""``tracelet sync``: deliver to each backend the batches it did not get (or publish a run
into another backend), with a progress bar per backend on a terminal and tracelet's log lines
shown as progress lines, leaving standard error to the final one-line verdicts."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tracelet.analysis.query import QueryEngine
from tracelet.cli.output import stdout_is_terminal

if TYPE_CHECKING:
    from tracelet.records import DeliveryState


def sync(engine: QueryEngine, args: argparse.Namespace) -> int:
    """``tracelet sync [RUN] [--to NAME] [--option K=V] [--timeout S]``: deliver what
    backends did not get, or publish a run into another backend."""
    from rich.progress import Progress

    from tracelet.sync import parse_options, pending, sync_run

    if args.to and not args.run:
        raise ValueError("--to publishes one run: give it, as in `tracelet sync RUN --to NAME`")
    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise ValueError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    options = parse_options(args.options or [])
    runs = [engine.resolve(args.run).id] if args.run else list(pending(engine.store))
    live = [r.id for r in engine.store.list_runs(status="running")] if not args.run else []
    for run_id in live:
        if run_id not in runs and engine.store.undelivered(run_id):
            print(f"{run_id[:12]}: skipped, still being written (its own process delivers it)")
    if not runs:
        print(NOTHING_TO_SYNC)
        return 0
    deadline = time.monotonic() + args.timeout
    results = []
    with Progress(transient=True, disable=not stdout_is_terminal()) as bar, _logged_to(bar.console):
        watcher = SyncProgress(bar, args.timeout)
        for run_id in runs:
            for result in sync_run(
                engine.store,
                run_id,
                backends=args.backends,
                to=args.to,
                options=options,
                observer=watcher,
                deadline=deadline,
            ):
                results.append(result)
                if result.error is None:
                    bar.console.print(
                        f"{run_id[:12]} {result.backend}: delivered {result.delivered} "
                        "batch(es), 0 left, up to date",
                        soft_wrap=True,
                    )
    if not results:
        print(NOTHING_TO_SYNC)
    failures = [r for r in results if r.error is not None]
    for result in failures:
        why = f"not done at the {args.timeout:g} s --timeout" if result.timed_out else "failed"
        print(
            f"tracelet: error: backend {result.backend!r} {why}; {result.remaining} batch(es) "
            f"of run {result.run_id[:12]} left ({result.error})",
            file=sys.stderr,
        )
    return 1 if failures else 0


NOTHING_TO_SYNC = "nothing to sync: every backend has every batch"


@contextlib.contextmanager
def _logged_to(console: Any) -> Iterator[None]:
    """Tracelet's log lines (a backend unreachable, caught up) as progress lines on
    ``console``, not on standard error, which is left for the final one-line verdicts."""
    tracelet_logger = logging.getLogger("tracelet")
    handler = _ConsoleHandler(console)
    tracelet_logger.addHandler(handler)
    propagate, tracelet_logger.propagate = tracelet_logger.propagate, False
    try:
        yield
    finally:
        tracelet_logger.removeHandler(handler)
        tracelet_logger.propagate = propagate


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Any) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(record.getMessage(), soft_wrap=True, markup=False)


class SyncProgress:
    """Shows a sync as it goes: a bar per backend, a line when one fails or is retried."""

    HEARTBEAT = 10.0
    """Seconds between two lines saying a backend is still being retried."""

    def __init__(self, bar: Any, timeout: float) -> None:
        self.bar = bar
        self.timeout = timeout
        self.tasks: dict[tuple[str, str], Any] = {}
        self.said: dict[tuple[str, str], tuple[str, float]] = {}

    def __call__(self, run_id: str, state: DeliveryState) -> None:
        key = (run_id, state.backend)
        if key not in self.tasks:
            label = f"{run_id[:12]} -> {state.backend}"
            self.tasks[key] = self.bar.add_task(label, total=state.journaled)
        self.bar.update(self.tasks[key], completed=state.delivered, total=state.journaled)
        phase, when = self.said.get(key, ("", 0.0))
        now = time.monotonic()
        if state.phase.value == "retrying" and (
            phase != "retrying" or now - when >= self.HEARTBEAT
        ):
            self.bar.console.print(
                f"{run_id[:12]} {state.backend}: {state.describe()}; retrying for up to "
                f"{self.timeout:g} s (--timeout)",
                soft_wrap=True,
            )
            self.said[key] = (state.phase.value, now)
        elif phase != state.phase.value:
            self.said[key] = (state.phase.value, now)
