"""Histograms: a distribution of values at a step, binned when logged.

``Experiment.log_histogram(name, values, step, bins=64)`` bins the finite values on the
training thread (NumPy when installed, plain Python otherwise) and journals only the
counts and bin edges: a million weights become 64 counts and 65 edges, so the journal and
every backend get a small record whatever the tensor's size. NaN and infinities are left
out of the bins and counted (``nonfinite``). Precomputed bins (``counts`` and ``edges``,
as from ``numpy.histogram``) are taken as they are.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

MAX_BINS = 512
"""The most bins a histogram may have (W&B's own limit)."""


def bin_values(values: Any, bins: int) -> tuple[tuple[float, ...], tuple[float, ...], int]:
    """``(counts, edges, nonfinite)`` of ``values`` (any iterable of numbers, a NumPy array
    or a tensor) in ``bins`` equal bins between their finite minimum and maximum. An array
    or a tensor is binned by NumPy as it is, never copied into Python floats."""
    check_bins(bins)
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - NumPy is present wherever tensors are
        flat = _floats(values)
        finite = [v for v in flat if math.isfinite(v)]
        _require_finite(len(finite), len(flat))
        return (*_python_bins(finite, bins), len(flat) - len(finite))
    array = np.asarray(_numbers(values, np), dtype=np.float64).ravel()
    finite = array[np.isfinite(array)]
    _require_finite(finite.size, array.size)
    counts, edges = np.histogram(finite, bins=bins)
    return (
        tuple(counts.astype(float).tolist()),
        tuple(edges.tolist()),
        int(array.size - finite.size),
    )


def _numbers(values: Any, np: Any) -> Any:
    """A tensor or a numeric array as an array; anything else as checked Python floats."""
    if hasattr(values, "detach"):  # a torch tensor: off the graph and the device
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return values
    return _floats(values)


def _require_finite(finite: int, total: int) -> None:
    if not finite:
        raise ValueError(f"a histogram needs at least one finite value; got {total} value(s)")


def check_bins(bins: Any) -> int:
    """``bins`` if it is an int from 1 to :data:`MAX_BINS`, else a ValueError saying so."""
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be an int from 1 to {MAX_BINS}, not {bins!r}")
    return bins


def check_bins_given(
    counts: Sequence[Any], edges: Sequence[Any]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Precomputed ``counts`` and ``edges`` as floats, or a ValueError naming the problem."""
    counts_f, edges_f = _floats(counts), _floats(edges)
    check_bins(len(counts_f))
    if len(edges_f) != len(counts_f) + 1:
        raise ValueError(
            f"a histogram needs one more edge than counts: got {len(counts_f)} counts and "
            f"{len(edges_f)} edges"
        )
    if not all(math.isfinite(e) for e in edges_f) or any(
        b < a for a, b in itertools.pairwise(edges_f)
    ):
        raise ValueError("histogram edges must be finite and in increasing order")
    if not all(math.isfinite(c) and c >= 0 for c in counts_f):
        raise ValueError("histogram counts must be finite and not negative")
    return counts_f, edges_f


def _floats(values: Any) -> tuple[float, ...]:
    """``values`` flattened to floats (other arrays and tensors through ``tolist``)."""
    if hasattr(values, "detach"):  # a torch tensor: off the graph and the device
        values = values.detach().cpu()
    if hasattr(values, "tolist") and not isinstance(values, list | tuple):
        values = values.tolist()
    if not isinstance(values, Iterable) or isinstance(values, str | bytes):
        raise TypeError(
            f"histogram values must be numbers in a list, tuple or array, not "
            f"{type(values).__name__}"
        )
    flat: list[float] = []
    _flatten_into(values, flat)
    return tuple(flat)


def _flatten_into(values: Iterable[Any], out: list[float]) -> None:
    for value in values:
        if isinstance(value, list | tuple):
            _flatten_into(value, out)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append(float(value))
        else:
            raise TypeError(f"histogram values must be numbers, not {type(value).__name__}")


def _python_bins(values: list[float], bins: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    low, high = min(values), max(values)
    if low == high:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / bins
    edges = (*(low + i * width for i in range(bins)), high)
    counts = [0.0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return tuple(counts), edges
