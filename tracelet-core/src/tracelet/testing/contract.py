"""What a backend author supplies to the kit: a read-back adapter and a description.

:class:`ReadBack` reads a run back out of the tool, keyed by the Tracelet run id.
:class:`BackendUnderTest` names the backend, its options and its adapter, and declares what
the tool does to the data on the way (timestamp resolution, infinity, string parameters,
truncation, name mapping). The kit's expectations follow from those declarations, and
nothing else is relaxed: every declared transformation must hold exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from tracelet.values import ParamValue


@runtime_checkable
class ReadBack(Protocol):
    """Reads one Tracelet run back from the tool, as the tool stores it.

    Every method takes the Tracelet run id (``experiment.id``, 32 hex digits). A reader for
    a kind of record the tool does not store raises ``NotImplementedError``: the tests that
    need it are skipped with that reason.
    """

    def metrics(self, run_id: str) -> Iterable[tuple[str, float, int, float]]:
        """Every stored metric point as ``(name, value, step, timestamp in seconds)``."""
        ...

    def params(self, run_id: str) -> Mapping[str, Any]:
        """The stored parameters: flattened name to value."""
        ...

    def tags(self, run_id: str) -> Mapping[str, str]:
        """The stored tags (extra tags the tool or the backend adds are allowed)."""
        ...

    def texts(self, run_id: str) -> Iterable[tuple[str, int, str]]:
        """Every stored text as ``(name, step, text)``."""
        ...

    def images(self, run_id: str) -> Iterable[tuple[str, int, bytes]]:
        """Every stored image as ``(name, step, PNG bytes)``."""
        ...

    def artifacts(self, run_id: str) -> Mapping[str, bytes]:
        """The stored artifact files: artifact path (``checkpoints/epoch1.pt``) to bytes."""
        ...

    def histograms(
        self, run_id: str
    ) -> Iterable[tuple[str, int, Sequence[float], Sequence[float]]]:
        """Every stored histogram as ``(name, step, counts, edges)``. Optional: an adapter
        without it (or raising ``NotImplementedError``) skips the histogram check."""
        ...

    def status(self, run_id: str) -> str:
        """The run's status: ``running``, ``finished``, ``failed`` or ``killed``."""
        ...

    def run_count(self, run_id: str) -> int:
        """How many runs the tool holds for this Tracelet run (a resumed run must stay 1)."""
        ...


def _same(name: str) -> str:
    return name


def _check_read_back(instance: Any, attribute: attrs.Attribute, value: Any) -> None:
    missing = [m for m in _READERS if not callable(getattr(value, m, None))]
    if missing:
        raise TypeError(f"read_back must implement tracelet.testing.ReadBack; missing: {missing}")


def _check_param_length(instance: BackendUnderTest, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and (
        not isinstance(value, int) or value <= len(instance.truncation_marker)
    ):
        raise ValueError(
            f"max_param_length must be None or an int longer than the truncation marker, "
            f"got {value!r}"
        )


_READERS = ("metrics", "params", "tags", "texts", "images", "artifacts", "status", "run_count")
"""The readers every adapter has (``histograms`` is optional)."""


@attrs.frozen
class BackendUnderTest:
    """The backend the kit checks, and what its tool does to the data.

    The defaults describe a perfect store (the local store): exact timestamps, infinity kept,
    typed parameters of any length, names unchanged.
    """

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    """The registered backend name, as users pass it in ``backend=[...]``."""
    options: Mapping[str, Any] = attrs.field(converter=dict)
    """The backend's options, given to every run as ``config={name: options}``."""
    read_back: ReadBack = attrs.field(validator=_check_read_back)
    """The adapter that reads runs back from the tool."""
    timestamp_resolution: float = attrs.field(
        default=0.0, kw_only=True, validator=attrs.validators.ge(0.0)
    )
    """Seconds: a stored timestamp may differ from the logged one by at most this much
    (``1e-3`` for a tool that keeps milliseconds; ``0.0``: exact)."""
    timestamps: bool = attrs.field(default=True, kw_only=True)
    """Whether the tool keeps each point's logged timestamp (False: it stamps points itself
    when they arrive, and only name, value and step are compared)."""
    infinity: float = attrs.field(default=math.inf, kw_only=True, validator=attrs.validators.gt(0))
    """What ``+inf`` reads back as (``-inf`` reads back as its negation)."""
    nan: float = attrs.field(default=math.nan, kw_only=True)
    """What NaN reads back as (NaN itself by default)."""
    equal_width_bins: bool = attrs.field(default=False, kw_only=True)
    """Whether the tool keeps only equal-width histogram bins: a histogram's counts read
    back exact, its edges as equal-width bins over its range (``numpy.linspace``)."""
    params_as_strings: bool = attrs.field(default=False, kw_only=True)
    """Whether the tool stores parameter values as text: then ``v`` reads back as ``str(v)``
    (``None`` as ``"None"``, ``True`` as ``"True"``). Otherwise type and value must match."""
    truncation_marker: str = attrs.field(default="", kw_only=True)
    """The text that ends a cut parameter value (counted within ``max_param_length``)."""
    max_param_length: int | None = attrs.field(
        default=None, kw_only=True, validator=_check_param_length
    )
    """The longest parameter value the tool keeps (None: no limit). A longer value must read
    back as its first ``max_param_length - len(truncation_marker)`` characters followed by
    ``truncation_marker``; the local store still holds the full value."""
    map_name: Callable[[str], str] = attrs.field(default=_same, kw_only=True)
    """Maps a name as logged (metric, parameter, tag, text or image name) to the name the
    tool stores (``"loss@train"`` -> ``"loss_train"``); the identity by default."""
    flush_timeout: float = attrs.field(default=60.0, kw_only=True, validator=attrs.validators.gt(0))
    """Seconds each run's ``stop`` waits for the backend; a run not fully delivered by then
    fails the test."""

    def stored_value(self, value: float) -> float:
        """The metric value the tool is expected to hold for ``value``."""
        if math.isinf(value):
            return math.copysign(self.infinity, value)
        return self.nan if math.isnan(value) else value

    def stored_param(self, value: ParamValue) -> ParamValue:
        """The parameter value the tool is expected to hold for ``value``."""
        if self.params_as_strings:
            value = str(value)
        limit = self.max_param_length
        if isinstance(value, str) and limit is not None and len(value) > limit:
            return value[: limit - len(self.truncation_marker)] + self.truncation_marker
        return value

    def stored_edges(self, edges: Sequence[float]) -> tuple[float, ...]:
        """The histogram edges the tool is expected to hold for ``edges``."""
        if not self.equal_width_bins:
            return tuple(edges)
        import numpy

        return tuple(float(e) for e in numpy.linspace(edges[0], edges[-1], len(edges)))

    def timestamp_tolerance(self) -> float:
        """How far a stored timestamp may be from the logged one, in seconds (infinite when
        the tool does not keep timestamps)."""
        if not self.timestamps:
            return math.inf
        # A resolution of 1 ms, converted back to seconds, also carries float rounding.
        return self.timestamp_resolution * 1.001
