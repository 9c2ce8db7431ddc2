"""Streaming anomaly rules and their thresholds.

A rule holds the state of one metric and sees that metric's finite values one at a time, in
logged order, so a rule costs the same whether it runs live (:class:`LiveDetector`) or over
a stored run (:class:`AnomalyDetector`), and both find the same anomalies. NaN and infinite
values never reach a rule: the detector reports them itself (kind ``nan_or_inf``).

Every rule reports an excursion (a run of consecutive outlying points) once, at the point
that confirms it, and again only if it escalates from ``warning`` to ``critical``.
"""

from __future__ import annotations

import math
import re
import statistics
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, islice
from typing import Any

import attrs

from tracelet.exceptions import ConfigurationError

Finding = tuple[str, str, str]
"""What a rule reports for one point: ``(kind, severity, message)``."""

WARNING = "warning"
CRITICAL = "critical"
MAD_TO_SIGMA = 1.4826
"""Scales a median absolute deviation to a standard deviation (for normal noise)."""

_Check = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _number(minimum: float, *, strict: bool = False, integer: bool = False) -> _Check:
    """An attrs validator: an int (or a number) ``>= minimum`` (``> minimum`` if ``strict``)."""

    def check(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
        kinds = (int,) if integer else (int, float)
        ok = isinstance(value, kinds) and not isinstance(value, bool) and value == value
        if not ok or value < minimum or (strict and value == minimum):
            what = "an int" if integer else "a number"
            raise ConfigurationError(
                f"{type(instance).__name__}.{field.name} must be {what} "
                f"{'>' if strict else '>='} {minimum}, got {value!r}"
            )

    return check


def _regex(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
    """An attrs validator: a string that compiles as a regular expression."""
    try:
        re.compile(value)
    except (TypeError, re.error) as error:
        raise ConfigurationError(
            f"{type(instance).__name__}.{field.name} must be a regular expression, "
            f"got {value!r} ({error})"
        ) from None


def _flag(instance: Any, field: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{type(instance).__name__}.{field.name} must be a bool, got {value!r}"
        )


# -- thresholds ------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class NonFiniteThresholds:
    """NaN or infinite values: reported at once, as critical ``nan_or_inf`` anomalies.

    One anomaly per run of consecutive non-finite values of a metric.
    """

    enabled: bool = attrs.field(default=True, validator=_flag)
    """Whether the rule runs (default True)."""
    pattern: str = attrs.field(default="", validator=_regex)
    """Regular expression (``re.search``) naming the metrics checked; default ``""``: all."""


@attrs.frozen(kw_only=True)
class LossSpikeThresholds:
    """Loss spikes (kind ``loss_spike``): a point far above the loss's recent level.

    A point is an outlier when its robust z-score, ``(x - median) / (1.4826 * MAD)`` over
    the last ``window`` admitted points, exceeds ``z_threshold``, or when it exceeds
    ``max_ratio`` times the window's maximum. Both are computed on ``log(loss)``, where
    multiplicative noise has the same spread at every loss level, and on raw values while
    the window holds a value <= 0. Outliers stay out of the window, so a spike does not
    hide the next one; a level shift is let in after ``readmit_after`` outliers in a row.
    """

    enabled: bool = attrs.field(default=True, validator=_flag)
    """Whether the rule runs (default True)."""
    pattern: str = attrs.field(default=r"(?i)loss(?![-_/ ]?scal)", validator=_regex)
    """Metrics checked (``re.search``); default: names containing "loss" in any case, but
    not the mixed-precision loss scale (``loss_scale``), which doubles by design."""
    window: int = attrs.field(default=100, validator=_number(3, integer=True))
    """Points in the rolling window (default 100: enough for a stable median and MAD,
    short enough to follow a decaying loss)."""
    warmup: int = attrs.field(default=30, validator=_number(3, integer=True))
    """Points the window must hold before anything is flagged (default 30)."""
    z_threshold: float = attrs.field(default=6.0, validator=_number(0, strict=True))
    """Robust z-score above which a point is an outlier (default 6.0; Gaussian noise
    crosses 6 about once in a billion points, so the false alarms left come from an
    imprecise MAD of a short window and from trends, not from the noise itself)."""
    min_mad: float = attrs.field(default=0.05, validator=_number(0))
    """Floor on the MAD, in log units (default 0.05, about 5 %; relative to ``|median|``
    on raw values), so a flat, quiet loss needs a rise of at least
    ``exp(z_threshold * 1.4826 * min_mad)`` (1.56x by default) to be a spike."""
    max_ratio: float = attrs.field(default=3.0, validator=_number(1))
    """A point above ``max_ratio`` times the window's maximum is an outlier whatever its
    z-score (default 3.0), which catches spikes in very noisy losses."""
    patience: int = attrs.field(default=1, validator=_number(1, integer=True))
    """Consecutive outliers needed to report (default 1: a one-step spike is reported)."""
    readmit_after: int = attrs.field(default=10, validator=_number(1, integer=True))
    """Consecutive outliers after which they count as the new level and enter the window
    (default 10); the run of outliers is still reported once."""
    critical_ratio: float = attrs.field(default=10.0, validator=_number(1))
    """A spike at least this many times the rolling median is ``critical``, a smaller
    one a ``warning`` (default 10.0)."""

    def __attrs_post_init__(self) -> None:
        if self.warmup > self.window:
            raise ConfigurationError(
                f"LossSpikeThresholds.warmup ({self.warmup}) must be <= window ({self.window})"
            )


@attrs.frozen(kw_only=True)
class GradientThresholds:
    """Gradient-norm explosions and vanishing gradients.

    Explosion (kind ``gradient_explosion``): a z-score of ``log(norm)`` against an
    exponential moving mean and variance above ``z_threshold`` (``warning``, ``critical``
    from ``critical_ratio`` times the moving level), or a norm above ``max_norm``
    (``critical``). Outliers stay out of the averages until ``readmit_after`` in a row.
    Vanishing (kind ``vanishing_gradient``, ``warning``): a norm below ``vanishing_norm``
    for ``vanishing_patience`` consecutive points; such points never enter the averages.
    """

    enabled: bool = attrs.field(default=True, validator=_flag)
    """Whether the rule runs (default True)."""
    pattern: str = attrs.field(default=r"(?i)(?=.*grad)(?=.*norm)", validator=_regex)
    """Metrics checked (``re.search``); default: names containing both "grad" and "norm"
    in any case (``grad_norm``, ``grad/total_norm``, ``gradient_norm/layer1``)."""
    alpha: float = attrs.field(default=0.02, validator=_number(0, strict=True))
    """Weight of a new point in the moving mean and variance (default 0.02: a memory of
    about 50 points, long enough for a stable spread, short enough to follow drifts);
    at most 1."""
    warmup: int = attrs.field(default=30, validator=_number(2, integer=True))
    """Points averaged before the z-score is used (default 30); ``max_norm`` and the
    vanishing check apply from the first point."""
    z_threshold: float = attrs.field(default=6.0, validator=_number(0, strict=True))
    """z-score of ``log(norm)`` above which a point is an explosion (default 6.0)."""
    min_std: float = attrs.field(default=0.25, validator=_number(0))
    """Floor on the moving standard deviation, in log units (default 0.25), so only a
    jump of ``exp(z_threshold * min_std)`` (4.5x by default) or more can be an explosion:
    real gradient norms are heavy-tailed and 2-3x blips are routine."""
    max_norm: float = attrs.field(default=1e3, validator=_number(0, strict=True))
    """Absolute limit: a norm above it is a critical explosion (default 1000, far above
    the norms of healthy training, which are typically 0.1 to 100)."""
    critical_ratio: float = attrs.field(default=100.0, validator=_number(1))
    """An explosion at least this many times the moving level is ``critical``
    (default 100.0)."""
    readmit_after: int = attrs.field(default=10, validator=_number(1, integer=True))
    """Consecutive outliers after which they enter the averages as the new level
    (default 10); the run is still reported once."""
    vanishing_norm: float = attrs.field(default=1e-7, validator=_number(0))
    """A norm below this is vanishing (default 1e-7: a total gradient norm that small
    means no parameter is learning)."""
    vanishing_patience: int = attrs.field(default=5, validator=_number(1, integer=True))
    """Consecutive vanishing points needed to report (default 5, so a single zeroed
    step, e.g. one skipped by a mixed-precision scaler, is not reported)."""

    def __attrs_post_init__(self) -> None:
        if self.alpha > 1:
            raise ConfigurationError(f"GradientThresholds.alpha must be <= 1, got {self.alpha}")


@attrs.frozen(kw_only=True)
class MemoryThresholds:
    """Memory climbing toward the device's limit (kind ``memory_pressure``).

    A ``warning`` when a metric rises above ``warning``, ``critical`` above ``critical``;
    reported again only after it fell below ``warning - rearm_margin``.
    """

    enabled: bool = attrs.field(default=True, validator=_flag)
    """Whether the rule runs (default True)."""
    pattern: str = attrs.field(default=r"(?i)memory_percent$", validator=_regex)
    """Metrics checked (``re.search``); default: names ending with "memory_percent"
    (``system/memory_percent``, ``system/gpu0_memory_percent``)."""
    warning: float = attrs.field(default=90.0, validator=_number(0))
    """Percent above which memory is a warning (default 90: little headroom left for a
    longer batch or a fragmented allocator)."""
    critical: float = attrs.field(default=97.0, validator=_number(0))
    """Percent above which memory is critical (default 97: the next allocation is likely
    to fail)."""
    rearm_margin: float = attrs.field(default=5.0, validator=_number(0))
    """How far below ``warning`` memory must fall before it is reported again
    (default 5.0 points), so a value hovering at a level is reported once."""

    def __attrs_post_init__(self) -> None:
        if self.critical < self.warning:
            raise ConfigurationError(
                f"MemoryThresholds.critical ({self.critical}) must be >= warning ({self.warning})"
            )


@attrs.frozen(kw_only=True)
class DetectorConfig:
    """The thresholds of every rule; each part defaults to its own defaults."""

    nan_inf: NonFiniteThresholds = attrs.field(factory=NonFiniteThresholds)
    """NaN and infinities (:class:`NonFiniteThresholds`)."""
    loss: LossSpikeThresholds = attrs.field(factory=LossSpikeThresholds)
    """Loss spikes (:class:`LossSpikeThresholds`)."""
    gradient: GradientThresholds = attrs.field(factory=GradientThresholds)
    """Gradient explosions and vanishing gradients (:class:`GradientThresholds`)."""
    memory: MemoryThresholds = attrs.field(factory=MemoryThresholds)
    """Memory pressure (:class:`MemoryThresholds`)."""

    @classmethod
    def of(cls, config: DetectorConfig | Thresholds | None = None) -> DetectorConfig:
        """``config`` as a DetectorConfig: None (defaults), one, or the thresholds of one rule."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        for field in attrs.fields(cls):
            if isinstance(config, _PARTS[field.name]):
                return cls(**{field.name: config})
        raise TypeError(
            "config must be a DetectorConfig or the thresholds of one rule "
            f"(LossSpikeThresholds ...), not {type(config).__name__}"
        )


Thresholds = NonFiniteThresholds | LossSpikeThresholds | GradientThresholds | MemoryThresholds
"""The thresholds of one rule."""

_PARTS: dict[str, type] = {
    "nan_inf": NonFiniteThresholds,
    "loss": LossSpikeThresholds,
    "gradient": GradientThresholds,
    "memory": MemoryThresholds,
}


# -- rules -----------------------------------------------------------------------------


class _Rule:
    """What every rule offers: :meth:`update` one value, or :meth:`update_many` in order."""

    __slots__ = ()

    def update(self, x: float) -> Finding | None:
        """Take the next finite value; return a finding or None."""
        raise NotImplementedError

    def update_many(self, xs: Sequence[float]) -> Iterator[tuple[int, Finding]]:
        """:meth:`update` each of ``xs`` in order; yield ``(index, finding)`` for each
        finding (stop iterating to stop feeding)."""
        update = self.update
        for index, x in enumerate(xs):
            finding = update(x)
            if finding is not None:
                yield index, finding


BLOCK = 128
"""Most points :meth:`LossSpikeRule.update_many` tries to admit at once (at most the
window: the bound needs a part of the window that every point of the block keeps)."""
MIN_ADMITTED = 16
"""Fewest points a partly failed block admits (each admission costs a sort afterwards)."""
MAX_EXACT_SPAN = 4096
"""Longest run of point-by-point updates after blocks kept failing (a very noisy loss)."""


class LossSpikeRule(_Rule):
    """The loss-spike rule for one metric (see :class:`LossSpikeThresholds`).

    The window is kept three ways: in logged order (``_values``, with ``_value_logs``) and
    sorted (``_sorted``, ``_logs``, for the median). :meth:`update_many` admits whole
    blocks of points that provably cannot be outliers, checking them against a bound that
    holds for every window of the block, and leaves the sorted copies to be rebuilt when a
    point needs the exact test: the same findings as :meth:`update` point by point, at a
    fraction of the cost.
    """

    __slots__ = (
        "_dirty",
        "_logs",
        "_nonpositive",
        "_sorted",
        "_streak",
        "_value_logs",
        "_values",
        "metric",
        "t",
    )

    def __init__(self, metric: str, thresholds: LossSpikeThresholds) -> None:
        self.metric = metric
        self.t = thresholds
        self._values: deque[float] = deque(maxlen=thresholds.window)
        self._value_logs: deque[float] = deque(maxlen=thresholds.window)
        """``log`` of each value in ``_values`` (0.0 for a value <= 0, never read then)."""
        self._sorted: list[float] = []
        self._logs: list[float] = []
        self._dirty = False
        """Whether ``_sorted`` and ``_logs`` lag behind ``_values`` (after a block)."""
        self._nonpositive = 0
        self._streak = 0

    def update(self, x: float) -> Finding | None:
        """Take the next finite value; return a finding when it confirms a spike."""
        t = self.t
        if self._dirty:
            self._rebuild()
        if len(self._values) < t.warmup:
            self._admit(x)
            return None
        use_logs = self._nonpositive == 0 and x > 0
        window = self._logs if use_logs else self._sorted
        y = math.log(x) if use_logs else x
        center = _median(window)
        floor = t.min_mad if use_logs else t.min_mad * abs(center)
        top = self._sorted[-1]
        outlier = top > 0 and x > t.max_ratio * top
        z = 0.0
        # The MAD is never below the floor, so a point this close cannot reach the z limit.
        if y - center > t.z_threshold * MAD_TO_SIGMA * floor:
            mad = max(statistics.median([abs(v - center) for v in window]), floor)
            if mad > 0:  # a window of equal values and no floor: only the ratio can judge
                z = (y - center) / (MAD_TO_SIGMA * mad)
                outlier = outlier or z > t.z_threshold
        if not outlier:
            self._streak = 0
            self._admit(x)
            return None
        self._streak += 1
        if self._streak > t.readmit_after:
            self._admit(x)
        if self._streak != t.patience:
            return None
        median = math.exp(center) if use_logs else center
        return self._finding(x, median, top, z)

    def update_many(self, xs: Sequence[float]) -> Iterator[tuple[int, Finding]]:
        """:meth:`update` each of ``xs`` in order, admitting blocks that cannot hold an
        outlier at once; yield ``(index, finding)``."""
        index, count = 0, len(xs)
        exact_until = 0  # after a block that failed its bound, go point by point a while,
        span = BLOCK  # longer each time in a row (a noisy loss), back to BLOCK on success
        while index < count:
            if index >= exact_until:
                admitted = self._admit_block(xs, index)
                if admitted:
                    index += admitted
                    span = BLOCK
                    continue
                exact_until = index + span
                span = min(span * 2, MAX_EXACT_SPAN)
            finding = self.update(xs[index])
            if finding is not None:
                yield index, finding
            index += 1

    def _admit_block(self, xs: Sequence[float], start: int) -> int:
        """Admit the points from ``xs[start]`` on that cannot be outliers, up to a block;
        return how many (0: the next point needs the exact test).

        Each point's window is a subset of U, the current window plus the block, and
        holds all of I, the part of the current window every one of them keeps. So its
        median is at least the lower-middle element of U (for the smallest window), and
        its maximum at least I's. A point below both limits derived from those bounds is
        not an outlier whatever its exact window, and it is admitted; by induction the
        windows are what the bound assumed.
        """
        t = self.t
        values = self._values
        held = len(values)
        if held < t.warmup or self._nonpositive:
            return 0
        block = xs[start : start + min(BLOCK, t.window)]
        if min(block) <= 0:
            return 0
        logs = list(map(math.log, block))
        union = sorted(chain(self._value_logs, logs[:-1]))
        low = union[(held - 1) // 2]  # held <= window: the smallest window holds them all
        kept_from = max(0, held + len(block) - 1 - t.window)
        top = max(islice(values, kept_from, None))
        # a margin of rounding, so the bound errs only towards the exact test
        log_limit = low + t.z_threshold * MAD_TO_SIGMA * t.min_mad - 1e-9 * (1 + abs(low))
        ratio_limit = t.max_ratio * top
        if max(logs) <= log_limit and max(block) <= ratio_limit:
            admitted = len(block)
        else:
            admitted = next(
                i
                for i, (y, x) in enumerate(zip(logs, block, strict=True))
                if y > log_limit or x > ratio_limit
            )
            if admitted < MIN_ADMITTED:  # not worth sorting the window again for
                return 0
        if admitted:  # the deques drop what leaves the window
            values.extend(block[:admitted])
            self._value_logs.extend(logs[:admitted])
            self._streak = 0
            self._dirty = True
        return admitted

    def _rebuild(self) -> None:
        """Sort the window again after blocks were admitted (all of it is > 0 then)."""
        self._sorted = sorted(self._values)
        self._logs = sorted(self._value_logs)
        self._dirty = False

    def _finding(self, x: float, median: float, top: float, z: float) -> Finding:
        t = self.t
        if z > t.z_threshold and median > 0:
            what = f"{x / median:.3g}x the rolling median {median:.4g} (robust z {z:.1f})"
        elif z > t.z_threshold:
            what = f"from the rolling median {median:.4g} (robust z {z:.1f})"
        else:
            what = f"{x / top:.3g}x the recent maximum {top:.4g}"
        if t.patience > 1:
            what += f", {t.patience} points in a row"
        severity = CRITICAL if median > 0 and x >= t.critical_ratio * median else WARNING
        return "loss_spike", severity, f"{self.metric} spiked to {x:.4g}, {what}"

    def _admit(self, x: float) -> None:
        values = self._values
        if len(values) == self.t.window:  # the deques drop their oldest on append
            old = values[0]
            old_log = self._value_logs[0]
            del self._sorted[bisect_left(self._sorted, old)]
            if old > 0:
                del self._logs[bisect_left(self._logs, old_log)]
            else:
                self._nonpositive -= 1
        values.append(x)
        insort(self._sorted, x)
        if x > 0:
            log = math.log(x)
            insort(self._logs, log)
            self._value_logs.append(log)
        else:
            self._nonpositive += 1
            self._value_logs.append(0.0)


class GradientRule(_Rule):
    """The gradient-norm rule for one metric (see :class:`GradientThresholds`)."""

    __slots__ = ("_count", "_low", "_mean", "_reported", "_streak", "_var", "metric", "t")

    def __init__(self, metric: str, thresholds: GradientThresholds) -> None:
        self.metric = metric
        self.t = thresholds
        self._count = 0
        self._mean = 0.0
        self._var = 0.0
        self._low = 0
        self._streak = 0
        self._reported = ""

    def update(self, x: float) -> Finding | None:
        """Take the next finite value; return a finding for an explosion or vanishing."""
        t = self.t
        if x < t.vanishing_norm:
            self._low += 1
            self._end_streak()
            if self._low != t.vanishing_patience:
                return None
            return (
                "vanishing_gradient",
                WARNING,
                f"{self.metric} stayed below {t.vanishing_norm:g} for {self._low} points"
                f" in a row (now {x:.3g})",
            )
        self._low = 0
        if x <= 0:  # only when vanishing_norm is 0: nothing to take the log of
            return None
        y = math.log(x)
        z = _z(y - self._mean, max(math.sqrt(self._var), t.min_std))
        above = x > t.max_norm
        if not above and (self._count < t.warmup or z <= t.z_threshold):
            self._end_streak()
            self._learn(y)
            return None
        self._streak += 1
        if self._streak > t.readmit_after:
            self._learn(y)
        level = math.exp(self._mean) if self._count else math.nan
        ratio = x / level
        severity = CRITICAL if above or ratio >= t.critical_ratio else WARNING
        if self._reported == CRITICAL or self._reported == severity:
            return None
        self._reported = severity
        if not self._count:
            return "gradient_explosion", severity, f"{self.metric} is {x:.4g}, above {t.max_norm:g}"
        what = f"{ratio:.3g}x its moving average {level:.4g}"
        if above:
            what = f"above the limit {t.max_norm:g} ({what})"
        elif self._count >= t.warmup:
            what += f" (z {z:.1f})"
        return "gradient_explosion", severity, f"{self.metric} jumped to {x:.4g}, {what}"

    def _end_streak(self) -> None:
        self._streak = 0
        self._reported = ""

    def _learn(self, y: float) -> None:
        """Fold ``y`` into the moving mean and variance (plain averages while warming up)."""
        self._count += 1
        a = max(self.t.alpha, 1.0 / self._count)
        d = y - self._mean
        self._mean += a * d
        self._var = (1.0 - a) * (self._var + a * d * d)


class MemoryRule(_Rule):
    """The memory-pressure rule for one metric (see :class:`MemoryThresholds`)."""

    __slots__ = ("_reported", "metric", "t")

    def __init__(self, metric: str, thresholds: MemoryThresholds) -> None:
        self.metric = metric
        self.t = thresholds
        self._reported = 0

    def update(self, x: float) -> Finding | None:
        """Take the next finite value; return a finding when memory crosses a level upward."""
        t = self.t
        if x > t.critical:
            level, severity, limit = 2, CRITICAL, t.critical
        elif x > t.warning:
            level, severity, limit = 1, WARNING, t.warning
        else:
            if x < t.warning - t.rearm_margin:
                self._reported = 0
            return None
        if level <= self._reported:
            return None
        self._reported = level
        return "memory_pressure", severity, f"{self.metric} at {x:.1f}%, above {limit:g}%"


Rule = LossSpikeRule | GradientRule | MemoryRule

RULES: dict[str, Callable[[str, Any], Rule]] = {
    "loss": LossSpikeRule,
    "gradient": GradientRule,
    "memory": MemoryRule,
}
"""The rule class of each part of :class:`DetectorConfig` but ``nan_inf``."""


def _z(deviation: float, scale: float) -> float:
    """``deviation / scale``; infinite (or 0) when the scale is 0."""
    if scale > 0:
        return deviation / scale
    return math.inf if deviation > 0 else 0.0


def _median(data: list[float]) -> float:
    """Median of already sorted ``data``."""
    n = len(data)
    mid = n // 2
    return data[mid] if n % 2 else (data[mid - 1] + data[mid]) / 2
