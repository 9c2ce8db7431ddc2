"""Statistics and table rows shared by the benchmarks (run them from the repository root)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def percentile(sorted_data: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted data (``q`` in 0..100)."""
    pos = (len(sorted_data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(sorted_data) - 1)
    return sorted_data[low] + (sorted_data[high] - sorted_data[low]) * (pos - low)


def chunk_stats(per_call_us: list[float]) -> dict[str, float]:
    """Median, p90, p99 and mean of per-call costs."""
    data = sorted(per_call_us)
    return {
        "median": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "mean": statistics.fmean(data),
    }


def distinct_loss(count: int) -> list[float]:
    """A decaying loss, every value distinct (a point read back in the wrong place shows)."""
    return [2.0 * 0.99999**i + i * 1e-9 for i in range(count)]


def timed_calls(calls: Callable[[int, int], None], total: int, chunk: int) -> list[float]:
    """Run ``calls(start, stop)`` over ``range(total)`` in chunks; microseconds per item."""
    clock = time.perf_counter_ns
    per_item = []
    for start in range(0, total, chunk):
        begin = clock()
        calls(start, min(start + chunk, total))
        per_item.append((clock() - begin) / chunk / 1_000.0)
    return per_item


Row = tuple[str, ...]
BENCHMARK_HEADER: Row = ("benchmark", "result", "target", "verdict")


def print_table(rows: Sequence[Row], header: Row = BENCHMARK_HEADER) -> None:
    """Print ``rows`` under ``header``, each column as wide as its widest cell."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def median_p99_mean(stats: dict[str, float], digits: int = 2) -> str:
    """Per-call statistics (from :func:`chunk_stats`) in microseconds."""
    return (
        f"median {stats['median']:,.{digits}f} us  p99 {stats['p99']:,.{digits}f}  "
        f"mean {stats['mean']:,.{digits}f}"
    )


def end_to_end_row(points: int, result: dict[str, float], ending: str) -> Row:
    """The row of a logging loop (``loop_s``) and what ends it (``stop_s``), with the rate."""
    rate = points / (result["loop_s"] + result["stop_s"])
    text = (
        f"loop {result['loop_s']:.2f} s + {ending} {result['stop_s']:.2f} s = "
        f"{rate:,.0f} points/s end to end"
    )
    return (f"  logging loop + {ending}", text, "-", "-")


def read_back_row(label: str, error: str, what: str) -> Row:
    """The row saying whether a run read back from the tool equals what was logged."""
    if error:
        return (label, f"MISMATCH: {error}", "== logged", "FAIL")
    return (label, what, "== logged", "OK")


def speedup_row(label: str, ours: dict[str, float], theirs: dict[str, float], target: float) -> Row:
    """How many times cheaper a call through Tracelet is than the tool's own (medians of
    :func:`chunk_stats`), against ``target``."""
    speedup = theirs["median"] / ours["median"]
    verdict = "PASS" if speedup >= target else "MISS"
    return (label, f"{speedup:,.0f}x cheaper for the caller", f">= {target:.0f}x", verdict)


def loss_read_back_error(stored: list[tuple[float, int]], values: list[float]) -> str:
    """Why ``stored`` (value, step) pairs are not ``values`` logged at steps 0, 1, ...
    (empty when they are, in any order)."""
    expected = [(v, s) for s, v in enumerate(values)]
    if sorted(stored, key=lambda p: p[1]) != expected:
        return f"read back {len(stored):,} points, logged {len(expected):,}, or they differ"
    return ""
