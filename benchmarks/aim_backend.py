"""Tracelet into Aim against Aim's own ``Run.track``, local repository and ``aim server``.

Run from the repository root::

    python benchmarks/aim_backend.py     # about two minutes on 2 cores

Prints one table:

1. Tracelet (``backend="aim"``, a local repository), 100,000 ``log_metric("loss", ...)``
   calls with the settings a user gets: the caller's cost per call, ``stop_logging()``, end
   to end;
2. ``Run.track(value, name="loss", step=step)`` directly into a local repository with
   Aim's defaults, 100,000 calls, then ``Run.close()``;
3. the same two against a real ``aim server`` on 127.0.0.1 with 10,000 points (Aim sends
   each point as one message; the server takes about a millisecond each).

Every run is read back with Aim's API and compared point for point. Exits 1 only when a
run read back differs from what was logged.
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    chunk_stats,
    distinct_loss,
    end_to_end_row,
    loss_read_back_error,
    median_p99_mean,
    print_table,
    read_back_row,
    speedup_row,
    timed_calls,
)

POINTS = 100_000
REMOTE_POINTS = 10_000
CHUNK = 1_000
SPEEDUP_TARGET = 10.0


def bench_tracelet(root: Path, values: list[float], options: dict[str, Any]) -> dict[str, Any]:
    import tracelet
    from tracelet_aim.testing import AimReadBack

    settings = tracelet.TraceletSettings(store_path=str(root / ".tracelet"))
    exp = tracelet.start_logging(
        "tracelet", project="bench", backend="aim", settings=settings, config={"aim": options}
    )
    log = exp.log_metric

    def calls(start: int, stop: int) -> None:
        for step in range(start, stop):
            log("loss", values[step], step)

    gc.collect()
    began = time.perf_counter()
    try:
        per_call = timed_calls(calls, len(values), CHUNK)
        logged = time.perf_counter()
    finally:
        tracelet.stop_logging()
    stopped = time.perf_counter()
    read = AimReadBack(options.get("remote_uri") or options["repo_path"])
    stored = [(v, s) for name, v, s, _ in read.metrics(exp.id) if name == "loss"]
    read.close()
    return {
        "calls": chunk_stats(per_call),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": loss_read_back_error(stored, values),
    }


def bench_aim(repo: str, values: list[float]) -> dict[str, Any]:
    """``Run.track`` with Aim's defaults (what a user of Aim alone writes)."""
    import aim
    from aim.sdk.index_manager import RepoIndexManager
    from aim.storage.context import Context

    remote = repo.startswith("aim://")
    opened = aim.Repo(repo) if remote else aim.Repo.from_path(repo, init=True)
    run = aim.Run(repo=opened, experiment="bench")
    track = run.track

    def calls(start: int, stop: int) -> None:
        for step in range(start, stop):
            track(values[step], name="loss", step=step)

    gc.collect()
    began = time.perf_counter()
    per_call = timed_calls(calls, len(values), CHUNK)
    logged = time.perf_counter()
    aim_hash = run.hash
    run.close()
    stopped = time.perf_counter()
    if not remote:
        RepoIndexManager.get_index_manager(opened).index(aim_hash)  # else invisible
    else:
        index = opened._get_index_tree("meta", 0).view(())
        meta = opened.request_tree("meta", aim_hash, read_only=True).subtree("meta")
        meta.subtree("chunks").subtree(aim_hash).finalize(index=index)
    steps, (stored_values, _, _) = (
        opened.get_run(aim_hash).get_metric("loss", Context({})).data.items_list()
    )
    return {
        "calls": chunk_stats(per_call),
        "loop_s": logged - began,
        "stop_s": stopped - logged,
        "error": loss_read_back_error(list(zip(stored_values, steps, strict=True)), values),
    }


def _rows(label: str, points: int, ours: dict, theirs: dict) -> list[tuple[str, ...]]:
    read, what = "  read back with Aim's API", f"{points:,} points, values and steps"
    return [
        (f"tracelet log_metric, backend aim, {label}", median_p99_mean(ours["calls"], 3), "-", "-"),
        speedup_row("  vs Run.track", ours["calls"], theirs["calls"], SPEEDUP_TARGET),
        end_to_end_row(points, ours, "stop_logging"),
        read_back_row(read, ours["error"], what),
        (f"Run.track, {label}, per call", median_p99_mean(theirs["calls"]), "-", "-"),
        end_to_end_row(points, theirs, "Run.close"),
        read_back_row(read, theirs["error"], what),
    ]


def main() -> int:
    from tracelet_aim.testing import AimServer

    began = time.perf_counter()
    values = distinct_loss(POINTS)
    with tempfile.TemporaryDirectory(prefix="tracelet-bench-aim-") as tmp:
        root = Path(tmp)
        ours = bench_tracelet(root / "t", values, {"repo_path": str(root / "repo-t")})
        theirs = bench_aim(str(root / "repo-a"), values)
        server = AimServer(root / "server")
        server.start()
        try:
            few = values[:REMOTE_POINTS]
            ours_remote = bench_tracelet(root / "tr", few, {"remote_uri": server.uri})
            theirs_remote = bench_aim(server.uri, few)
        finally:
            server.stop()
    import aim.__version__

    rows = _rows("local repo", POINTS, ours, theirs)
    rows += _rows("aim server", REMOTE_POINTS, ours_remote, theirs_remote)
    print(
        f"Aim {aim.__version__.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print_table(rows)
    print(f"(whole benchmark: {time.perf_counter() - began:.0f} s)")
    failed = [r["error"] for r in (ours, theirs, ours_remote, theirs_remote) if r["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
