"""Charts for ``tracelet plot``: several runs and metrics on one chart, anomalies marked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

Series = tuple[Any, str, list[dict[str, Any]], list[dict[str, Any]]]


def draw(series: Sequence[Series], out: str, smooth: float = 0.0) -> None:
    """Write a PNG of each ``(run, metric, history, anomalies)`` to ``out``.

    ``smooth`` is an exponential-moving-average factor in [0, 1) (TensorBoard's slider):
    the raw line stays faint behind the smoothed one. Anomalies are red crosses (a NaN or
    infinity, which has no place on the axis, is a red vertical line).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            'tracelet plot needs matplotlib: pip install "tracelet-core[plot]"'
        ) from None
    figure, axes = plt.subplots(figsize=(10, 5.5), dpi=110)
    for run, name, history, anomalies in series:
        steps = [p["step"] for p in history]
        values = [p["value"] for p in history]
        label = name if len({s[0].id for s in series}) == 1 else f"{run.name}: {name}"
        if smooth:
            (raw,) = axes.plot(steps, values, alpha=0.25, linewidth=1)
            axes.plot(steps, ema(values, smooth), color=raw.get_color(), label=label, linewidth=1.6)
        else:
            axes.plot(steps, values, label=label, linewidth=1.4)
        _mark(axes, anomalies)
    axes.set_xlabel("step")
    axes.set_ylabel(", ".join(dict.fromkeys(s[1] for s in series)))
    axes.set_title(", ".join(dict.fromkeys(s[0].name for s in series)))
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)


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
