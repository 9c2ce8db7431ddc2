"""How Tracelet's names and values become Aim's sequences, contexts, tags and objects.

- **Contexts.** A name whose first segment is a data subset (:data:`SUBSETS`) is tracked
  as the rest of the name in that subset's context: ``train/loss`` is Aim metric ``loss``
  with context ``{"subset": "train"}``, so Aim draws ``train/loss`` and ``val/loss`` as one
  metric in two contexts. Every other name is tracked whole in the empty context
  (``system/cpu_percent``, ``loss``). :func:`name_of` reverses it exactly.
- **Repeated steps.** Aim keeps one value per sequence and step. A point logged again at a
  step that already holds one goes to the same sequence with ``{"tracelet_repeat": n}``
  added to its context (n = 1, 2, ...), so no point is lost; the empty-repeat sequence
  holds each step's first value.
- **Tags** ``key: value`` become Aim tags ``key:value`` (a tag without a value: ``key``).
- **Histograms** become Aim distributions, which have equal-width bins: the counts and the
  range are kept; unequal edges read back as equal-width bins over the same range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SUBSETS = frozenset({"train", "val", "validation", "test", "eval"})
"""Name prefixes that become Aim's ``subset`` context."""
SUBSET = "subset"
REPEAT = "tracelet_repeat"
"""The context key of a point logged again at a step its sequence already holds."""


def sequence_of(name: str) -> tuple[str, dict[str, Any]]:
    """``name`` as Aim's sequence name and context (without any repeat)."""
    subset, slash, rest = name.partition("/")
    if slash and rest and subset in SUBSETS:
        return rest, {SUBSET: subset}
    return name, {}


def name_of(sequence: str, context: Mapping[str, Any]) -> str:
    """The Tracelet name of an Aim sequence (the inverse of :func:`sequence_of`)."""
    subset = context.get(SUBSET)
    return f"{subset}/{sequence}" if subset else sequence


def with_repeat(context: Mapping[str, Any], repeat: int) -> dict[str, Any]:
    """``context`` for the ``repeat``-th value at one step (0: the first, no key)."""
    return {**context, REPEAT: repeat} if repeat else dict(context)


def tag_name(key: str, value: str) -> str:
    """A Tracelet tag as an Aim tag name."""
    return f"{key}:{value}" if value else key


def tag_of(name: str) -> tuple[str, str]:
    """An Aim tag name as a Tracelet tag (the inverse of :func:`tag_name`)."""
    key, _, value = name.partition(":")
    return key, value


def equal_width_edges(low: float, high: float, bins: int) -> tuple[float, ...]:
    """The edges of ``bins`` equal-width bins from ``low`` to ``high``, as Aim computes them."""
    import numpy

    return tuple(float(e) for e in numpy.linspace(low, high, num=bins + 1))


def has_equal_width(edges: Sequence[float]) -> bool:
    """Whether ``edges`` are exactly the equal-width edges over their range."""
    return tuple(edges) == equal_width_edges(edges[0], edges[-1], len(edges) - 1)
