"""What an open ``tracelet ui`` costs the training loop: kernel.py's paced row (200,000
``log_metric("loss", ...)`` calls a second for 5 s, the settings a user gets) without the
dashboard, and with ``tracelet ui`` serving the run's store while it is polled every
second.

Run from the repository root::

    python benchmarks/ui.py     # about 70 s on 2 cores

Three ways, in alternating rounds (``--rounds``, 2 by default), each a fresh run:

1. no dashboard;
2. ``tracelet ui`` (its own process, as a user starts it) and an HTTP client (another
   process) asking what the page asks: the whole ``loss`` history once, then every second
   the runs table and the points after the last step it has;
3. ``tracelet ui`` and the page itself, open on the run's live chart in headless Chromium
   (Debian's ``chromium`` driven by Playwright; skipped when either is missing).

Every call is timed on its own, as kernel.py times it (its code, imported); the rows show
the median, p99 and longest call over all rounds, and each round's median. The CPU time
of the dashboard's process and of its client is shown beside (the client's is not
Tracelet's: it is the browser a user has open). Exits 1 only when a run read back differs
from what was logged.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from array import array
from collections.abc import Iterator
from typing import Any

from bench_common import print_table
from kernel import (
    PACED_RATE,
    Failure,
    default_run,
    fmt,
    loss_plan,
    make_values,
    summary,
    timed_calls,
)

import tracelet
from tracelet.testing.browser import CHROMIUM, CHROMIUM_FLAGS
from tracelet.testing.servers import free_port

CALLS = PACED_RATE * 5
WARMUP = 100
"""Points of ``loss`` logged before the dashboard opens (the page opens on them)."""
POLL_SECONDS = 1.0
CHART_POINTS = 1200
"""Buckets the page asks for (about its chart's width in pixels)."""
WAYS = {
    "none": "no dashboard",
    "http": "tracelet ui + a client polling every 1 s",
    "page": "tracelet ui + the page (headless Chromium)",
}


# -- the clients (each in its own process) -----------------------------------------------------


def get_json(url: str) -> tuple[Any, float]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return json.loads(body), time.perf_counter() - began


def http_client(base: str, run_id: str, stop: threading.Event) -> dict[str, Any]:
    """What the page asks, without a browser: the history, then new points every second."""
    series = f"{base}api/runs/{run_id}/metrics/loss?points={CHART_POINTS}"
    poll = f"{base}api/runs/{run_id}/metrics/loss?points={CHART_POINTS // 10}"  # as the page
    first, _ = get_json(series)
    last = max(first["last_step"] if first["kind"] == "buckets" else first["step"], default=-1)
    print("ready", flush=True)
    latencies, fetched = [], 0
    while not stop.wait(POLL_SECONDS):
        _, took_runs = get_json(f"{base}api/runs")
        new, took = get_json(f"{poll}&after={last}")
        latencies += [took_runs, took]
        fetched += new["total"]
        steps = new["last_step"] if new["kind"] == "buckets" else new["step"]
        last = max([last, *steps])
    return {"polls": len(latencies) // 2, "latencies": latencies, "points": fetched}


def page_client(base: str, run_id: str, stop: threading.Event) -> dict[str, Any]:
    """The page itself, open on the run's live chart in headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        polls: list[str] = []
        live = lambda url: "/metrics/loss?" in url and "after=" in url  # noqa: E731
        page.on("request", lambda r: polls.append(r.url) if live(r.url) else None)
        page.goto(f"{base}#/charts?runs={run_id}&metrics=loss")
        page.wait_for_selector(".chart[data-state=ready]", timeout=60_000)
        print("ready", flush=True)
        while not stop.is_set():
            page.wait_for_timeout(200)
        total = int(page.locator(".chart").first.get_attribute("data-total") or 0)
        browser.close()
    return {"polls": len(polls), "latencies": [], "points": total}


def client_main(way: str, base: str, run_id: str) -> int:
    """``--client``: poll until standard input closes, then print what was seen (JSON)."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    client = http_client if way == "http" else page_client
    print(json.dumps(client(base, run_id, stop)), flush=True)
    return 0


# -- the dashboard beside a paced run ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` and its children so far."""
    import psutil

    process = psutil.Process(pid)
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


@contextlib.contextmanager
def dashboard(way: str, store: str, run_id: str) -> Iterator[dict[str, Any]]:
    """``tracelet ui`` on ``store`` and a client of ``way``, both ready; on exit, stopped,
    with their CPU seconds and the client's report in the yielded dict."""
    seen: dict[str, Any] = {}
    if way == "none":
        yield seen
        return
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "tracelet", "ui", "--store", store, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    client = None
    try:
        wait_for(base)
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", way, base, run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if client.stdout is None or client.stdout.readline().strip() != "ready":
            raise Failure(f"the {way} client did not start")
        cpu = {"server": cpu_seconds(server.pid), "client": cpu_seconds(client.pid)}
        began = time.perf_counter()
        yield seen
        seen["seconds"] = time.perf_counter() - began
        seen["server_cpu"] = cpu_seconds(server.pid) - cpu["server"]
        seen["client_cpu"] = cpu_seconds(client.pid) - cpu["client"]
        out, _ = client.communicate("", timeout=60)
        seen.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


def wait_for(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            get_json(base + "api/store")
            return
        time.sleep(0.1)
    raise Failure("tracelet ui did not answer")


def paced_round(way: str, values: array) -> dict[str, Any]:
    """One paced run (kernel.py's row 3) with the dashboard of ``way`` open beside it."""
    plan = loss_plan(values)
    gc.collect()
    with default_run() as (exp, tmp):
        for step in range(WARMUP):  # the page opens on a metric that exists
            exp.log_metric("loss", values[step], step)
        exp.flush()
        with dashboard(way, os.path.join(tmp, ".tracelet"), exp.id) as seen:
            took, _ = timed_calls(exp.log_metric, plan, PACED_RATE)
        tracelet.stop_logging()
        store = os.path.join(tmp, ".tracelet")
        error = ""
        try:
            read_back_loss(store, exp.id, plan)
        except Failure as failure:
            error = str(failure)
    return {"took": took, "seen": seen, "error": error}


def read_back_loss(store: str, run_id: str, plan: Any) -> None:
    """Raise ``Failure`` unless the run's ``loss`` is the warm-up, then ``plan``, in order."""
    from tracelet.storage import LocalStore

    local = LocalStore(store)
    try:
        got = [(n, v, s) for n, v, s, _ in local.metrics(run_id, "loss")][WARMUP:]
    finally:
        local.close()
    if got != list(plan.points()):
        raise Failure(f"read back {len(got):,} points of loss, logged {len(plan):,}")


# -- the table -----------------------------------------------------------------------------------


def way_rows(way: str, rounds: list[dict[str, Any]], base: float | None) -> list[tuple[str, ...]]:
    calls = array("q")
    for found in rounds:
        calls.extend(found["took"])
    stats = summary(calls)
    medians = ", ".join(f"{summary(r['took'])['median']:.3f}" for r in rounds)
    change = "" if base is None else f"  ({100 * (stats['median'] / base - 1):+.1f}%)"
    rows = [(f"  {WAYS[way]}", f"{fmt(stats)}{change}", f"rounds' medians {medians} us")]
    seen = [r["seen"] for r in rounds if r["seen"]]
    if seen:
        polls = sum(s["polls"] for s in seen)
        seconds = sum(s["seconds"] for s in seen)
        server = 100 * sum(s["server_cpu"] for s in seen) / seconds
        client = 100 * sum(s["client_cpu"] for s in seen) / seconds
        latencies = [t for s in seen for t in s["latencies"]]
        answered = ""
        if latencies:
            answered = f", median answer {1e3 * statistics.median(latencies):.1f} ms"
        rows.append(
            (
                "    the dashboard meanwhile",
                f"{polls} polls{answered}; tracelet ui {server:.1f}% of a core, "
                f"its client {client:.1f}%",
                "",
            )
        )
    return rows


def chromium_usable() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each way (default 2)")
    parser.add_argument("--client", nargs=3, metavar=("WAY", "URL", "RUN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        return client_main(*args.client)
    began = time.perf_counter()
    ways = ["none", "http", "page"] if chromium_usable() else ["none", "http"]
    values = make_values(CALLS, seed=20240601)
    with default_run() as (exp, _):  # untimed warm-up, as kernel.py
        timed_calls(exp.log_metric, loss_plan(values[:100_000]))
    results: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}
    for _ in range(args.rounds):
        for way in ways:
            results[way].append(paced_round(way, values))
    base = summary(array("q", [t for r in results["none"] for t in r["took"]]))["median"]
    rows: list[tuple[str, ...]] = [(f"paced {PACED_RATE:,} points/s for 5 s, per call", "", "")]
    for way in ways:
        rows += way_rows(way, results[way], None if way == "none" else base)
    if "page" not in ways:
        rows.append((f"  {WAYS['page']}", f"skipped: no {CHROMIUM} or no playwright", ""))
    print_table(rows, header=("benchmark", "result", "rounds"))
    print(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {args.rounds} rounds; "
        f"total {time.perf_counter() - began:.0f} s"
    )
    failures = [r["error"] for way in ways for r in results[way] if r["error"]]
    for failure in failures:
        print(f"CORRECTNESS FAILURE: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
