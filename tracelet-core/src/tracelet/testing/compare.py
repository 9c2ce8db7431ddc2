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
    within ``tolerance`` seconds of its match. A point stored with another value than the
    one logged at its name and step is reported as one problem."""
    want: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    got: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for name, value, step, timestamp in expected:
        want[name, int(step), value_key(value)].append(timestamp)
    for name, value, step, timestamp in actual:
        got[name, int(step), value_key(value)].append(float(timestamp))
    problems = []
    missing: dict[tuple[str, int], list[Any]] = defaultdict(list)
    extra: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for key in sorted(want.keys() | got.keys(), key=lambda k: (str(k[0]), k[1], repr(k[2]))):
        wanted, found = sorted(want.get(key, ())), sorted(got.get(key, ()))
        name, step, value = key
        if len(found) < len(wanted):
            missing[name, step] += [value] * (len(wanted) - len(found))
        elif len(found) > len(wanted) and wanted:
            problems.append(
                f"duplicated: {name!r} step {step} value {value} "
                f"(stored {len(found)}x, logged {len(wanted)}x)"
            )
        elif len(found) > len(wanted):
            extra[name, step] += [value] * len(found)
        else:
            problems += [
                f"timestamp of {name!r} step {step} value {value}: stored {stored!r}, logged "
                f"{logged!r} (off by {stored - logged:+.6f} s, allowed {tolerance:g} s)"
                for logged, stored in zip(wanted, found, strict=True)
                if abs(stored - logged) > tolerance
            ]
    for (name, step), values in missing.items():
        stored = extra.pop((name, step), [])
        for value in values:
            if stored:
                problems.append(
                    f"value of {name!r} step {step}: stored {stored.pop(0)}, logged {value}"
                )
            else:
                problems.append(f"missing: {name!r} step {step} value {value}")
        extra[name, step] = stored
    problems += [
        f"unexpected: {name!r} step {step} value {value} (never logged)"
        for (name, step), values in extra.items()
        for value in values
    ]
    return problems


def compare_multisets(expected: Iterable[Hashable], actual: Iterable[Hashable]) -> list[str]:
    """Compare two collections of records, counting repeats."""
    want, got = Counter(expected), Counter(actual)
    problems = []
    for item in sorted(want.keys() | got.keys(), key=lambda i: [str(p) for p in i]):
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
