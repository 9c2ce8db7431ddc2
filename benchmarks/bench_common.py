"""Statistics shared by the benchmarks (run them from the repository root)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


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
