"""Point-by-point comparisons that say exactly what differs.

Each function returns a list of problems (empty: equal); :func:`require` turns them into
one ``AssertionError`` that lists the first few.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

SHOWN = 12
"""Most problems listed in one failure message."""


def require(problems: list[str], what: str) -> None:
    """Raise ``AssertionError`` listing ``problems`` (the first :data:`SHOWN`), if any."""
    if problems:
        shown = "\n  ".join(problems[:SHOWN])
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        raise AssertionError(f"{what}: {len(problems)} problem(s)\n  {shown}{more}")


def value_key(value: Any) -> Hashable:
    """A float as a dictionary key in which NaN equals NaN."""
    number = float(value)
    return "NaN" if math.isnan(number) else number


def compare_points(
    expected: Iterable[tuple[str, float, int, float]],
    actual: Iterable[tuple[str, float, int, float]],
    tolerance: float,
) -> list[str]:
    """Compare metric points as multisets of ``(name, value, step)``, each point's timestamp
    within ``tolerance`` seconds of its match."""
    want: dict[Hashable, list[float]] = defaultdict(list)
    got: dict[Hashable, list[float]] = defaultdict(list)
    for name, value, step, timestamp in expected:
        want[name, value_key(value), step].append(timestamp)
    for name, value, step, timestamp in actual:
        got[name, value_key(value), int(step)].append(float(timestamp))
    problems = []
    for key in sorted(want.keys() | got.keys(), key=repr):
        wanted, found = sorted(want.get(key, ())), sorted(got.get(key, ()))
        name, value, step = key
        point = f"{name!r} step {step} value {value}"
        if len(found) < len(wanted):
            problems.append(f"missing: {point} ({len(wanted) - len(found)} of {len(wanted)})")
        elif len(found) > len(wanted):
            extra = "unexpected" if not wanted else "duplicated"
            problems.append(f"{extra}: {point} (stored {len(found)}x, logged {len(wanted)}x)")
        else:
            for logged, stored in zip(wanted, found, strict=True):
                if abs(stored - logged) > tolerance:
                    problems.append(
                        f"timestamp of {point}: stored {stored!r}, logged {logged!r} "
                        f"(off by {stored - logged:+.6f} s, allowed {tolerance:g} s)"
                    )
    return problems


def compare_multisets(expected: Iterable[Hashable], actual: Iterable[Hashable]) -> list[str]:
    """Compare two collections of records, counting repeats."""
    want, got = Counter(expected), Counter(actual)
    problems = []
    for item in sorted(want.keys() | got.keys(), key=repr):
        shown = _short(item)
        if got[item] < want[item]:
            problems.append(f"missing: {shown} ({want[item] - got[item]} of {want[item]})")
        elif got[item] > want[item]:
            extra = "unexpected" if not want[item] else "duplicated"
            problems.append(f"{extra}: {shown} (stored {got[item]}x, logged {want[item]}x)")
    return problems


def compare_subset(
    expected: Mapping[str, Any], actual: Mapping[str, Any], *, typed: bool = True
) -> list[str]:
    """Every key of ``expected`` must be in ``actual`` with an equal value (of the same type
    when ``typed``); extra keys in ``actual`` are allowed."""
    problems = []
    for key, value in expected.items():
        if key not in actual:
            problems.append(f"missing: {key!r} (expected {_short(value)})")
            continue
        found = actual[key]
        if found != value or (typed and type(found) is not type(value)):
            problems.append(
                f"{key!r}: stored {_short(found)} ({type(found).__name__}), "
                f"expected {_short(value)} ({type(value).__name__})"
            )
    return problems


def _short(item: Any, limit: int = 160) -> str:
    text = repr(item)
    return (
        text if len(text) <= limit else f"{text[: limit - 30]}...{text[-20:]} ({len(text)} chars)"
    )
