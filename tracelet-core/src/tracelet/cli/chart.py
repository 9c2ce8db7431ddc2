"""Charts for ``tracelet plot``: runs and metrics drawn together, anomalies marked.

Metrics share a panel while their scales (the largest absolute finite value of each) are
within :data:`SCALE_RATIO` of each other; a metric of another scale (a learning rate beside
a loss) gets a panel of its own, one above the other, on the same steps.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from tracelet.exceptions import ConfigurationError

Series = tuple[Any, str, list[dict[str, Any]], list[dict[str, Any]]]
"""``(run, metric, history, anomalies)``: one metric of one run."""

SCALE_RATIO = 100.0
"""Metrics whose scales differ by more than this factor are drawn on separate panels."""

INSTALL = 'pip install "tracelet-core[plot]" (or pip install matplotlib)'


def pyplot() -> Any:
    """matplotlib's ``pyplot``, drawing off-screen; without matplotlib, a
    :class:`ConfigurationError` that says what to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError(f"tracelet plot needs matplotlib: {INSTALL}") from None
    return plt


def draw(series: Sequence[Series], smooth: float = 0.0, logy: bool = False) -> tuple[bytes, list]:
    """A PNG of ``series`` (see :func:`figure`), and the metrics of each of its panels."""
    plt = pyplot()
    chart = figure(series, smooth, logy)
    png = io.BytesIO()
    try:
        chart.savefig(png, format="png")
    finally:
        plt.close(chart)
    return png.getvalue(), panels(series)


def figure(series: Sequence[Series], smooth: float = 0.0, logy: bool = False) -> Any:
    """A matplotlib figure of each ``(run, metric, history, anomalies)``: one panel per
    scale (:func:`panels`), sharing the step axis.

    ``smooth`` is an exponential-moving-average factor in [0, 1) (TensorBoard's slider):
    the raw line stays faint behind the smoothed one. ``logy`` draws every panel on a log
    axis, leaving out values <= 0. Anomalies are red crosses (a NaN or infinity, which has
    no place on the axis, is a red vertical line).
    """
    groups = panels(series)
    height = 5.5 if len(groups) == 1 else 1.5 + 3.2 * len(groups)
    chart, grid = pyplot().subplots(
        len(groups), 1, sharex=True, squeeze=False, figsize=(10, height), dpi=110
    )
    several_runs = len({s[0].id for s in series}) > 1
    for axes, group in zip(grid[:, 0], groups, strict=True):
        for run, name, history, anomalies in (s for s in series if s[1] in group):
            label = f"{run.name}: {name}" if several_runs else name
            _line(axes, history, label, smooth)
            _mark(axes, anomalies)
        if logy:
            axes.set_yscale("log", nonpositive="mask")
        axes.set_ylabel(", ".join(group))
        axes.grid(alpha=0.3)
        axes.legend(loc="best")
    grid[-1, 0].set_xlabel("step")
    grid[0, 0].set_title(", ".join(dict.fromkeys(s[0].name for s in series)))
    chart.tight_layout()
    return chart


def panels(series: Sequence[Series], ratio: float = SCALE_RATIO) -> list[list[str]]:
    """The metric names of each panel, in the order given: a metric joins the first panel
    whose every scale is within ``ratio`` of its own (a scale of 0, a metric without finite
    values or only zeros, fits anywhere), else starts a panel."""
    scales: dict[str, float] = {}
    for _, name, history, _ in series:
        finite = [abs(p["value"]) for p in history if math.isfinite(p["value"])]
        scales[name] = max([scales.get(name, 0.0), *finite])
    groups: list[list[str]] = []
    for name, scale in scales.items():
        group = next((g for g in groups if all(_near(scale, scales[o], ratio) for o in g)), None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return groups


def _near(a: float, b: float, ratio: float) -> bool:
    low, high = sorted((a, b))
    return low == 0.0 or high / low <= ratio


def left_out(series: Sequence[Series]) -> list[tuple[Any, str, int]]:
    """``(run, metric, count)`` of each series with finite values <= 0, which a log axis
    leaves out."""
    found = []
    for run, name, history, _ in series:
        count = sum(1 for p in history if math.isfinite(p["value"]) and p["value"] <= 0)
        if count:
            found.append((run, name, count))
    return found


def _line(axes: Any, history: list[dict[str, Any]], label: str, smooth: float) -> None:
    steps = [p["step"] for p in history]
    values = [p["value"] for p in history]
    if smooth:
        (raw,) = axes.plot(steps, values, alpha=0.25, linewidth=1)
        axes.plot(steps, ema(values, smooth), color=raw.get_color(), label=label, linewidth=1.6)
    else:
        axes.plot(steps, values, label=label, linewidth=1.4)


def _mark(axes: Any, anomalies: list[dict[str, Any]]) -> None:
    finite = [a for a in anomalies if math.isfinite(a["value"])]
    if finite:
        axes.scatter(
            [a["step"] for a in finite],
            [a["value"] for a in finite],
            marker="x",
            color="red",
            s=60,
            zorder=3,
            label="anomaly",
        )
    for anomaly in anomalies:
        if not math.isfinite(anomaly["value"]):
            axes.axvline(anomaly["step"], color="red", alpha=0.6, linestyle="--")


def ema(values: list[float], factor: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing; NaN/inf are passed over."""
    smoothed, last, weight = [], 0.0, 0.0
    for value in values:
        if math.isfinite(value):
            last = factor * last + (1 - factor) * value
            weight = factor * weight + (1 - factor)
        smoothed.append(last / weight if weight else math.nan)
    return smoothed
