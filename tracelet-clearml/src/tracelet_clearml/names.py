"""How Tracelet's names and values become ClearML's titles, series and numbers.

- A metric or image name is split on its last ``/``: ``train/loss`` becomes title
  ``train``, series ``loss``. A name without ``/`` is both: ``loss`` becomes title and
  series ``loss`` (ClearML's one-line chart named after the metric). So ``x/x`` and ``x``
  share a chart.
- ClearML's server cannot store NaN or infinities, and ClearML would report them as 0,
  hiding a diverged loss: NaN and ``+inf`` become the largest float
  (1.7976931348623157e308), ``-inf`` its negation.
- A histogram is a bar chart whose bars are labelled by their bins' edges, exactly
  (``"-1.0..0.5"``), so counts and edges read back whole.
- A text goes to the task's console log under a header that names it, its step and its
  length, so it reads back exactly: ``[tracelet] text "notes" at step 3 (11 characters):``.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Iterator

LARGEST = 1.7976931348623157e308
"""What NaN and +inf become (-inf becomes its negation)."""
PARAM_SECTION = "General"
"""The hyperparameter section holding every Tracelet parameter (ClearML's own default)."""
_TEXT_HEADER = re.compile(
    r'\[tracelet\] text ("(?:[^"\\]|\\.)*") at step (-?\d+) \((\d+) characters\):\n'
)


def title_series(name: str) -> tuple[str, str]:
    """``name`` as ClearML's (title, series)."""
    title, _, series = name.rpartition("/")
    return (title, series) if title else (name, name)


def name_of(title: str, series: str) -> str:
    """The name a (title, series) pair reads back as (the inverse of :func:`title_series`)."""
    return title if title == series else f"{title}/{series}"


def finite(value: float) -> float:
    """``value`` as ClearML can store it: NaN and +inf as the largest float, -inf negated."""
    if math.isfinite(value):
        return value
    return -LARGEST if value == -math.inf else LARGEST


def bin_labels(edges: tuple[float, ...]) -> list[str]:
    """A histogram's bins as ClearML bar labels, ``"<low>..<high>"``, exact (``repr``)."""
    return [f"{low!r}..{high!r}" for low, high in itertools.pairwise(edges)]


def edges_of(labels: list[str]) -> tuple[float, ...]:
    """The bin edges of :func:`bin_labels`'s labels."""
    pairs = [tuple(map(float, label.split(".."))) for label in labels]
    return (*(low for low, _ in pairs), pairs[-1][1]) if pairs else ()


def text_block(name: str, step: int, text: str) -> str:
    """A text as it is written to the console log."""
    return f"[tracelet] text {json.dumps(name)} at step {step} ({len(text)} characters):\n{text}"


def text_blocks(log: str) -> Iterator[tuple[str, int, str]]:
    """Every ``(name, step, text)`` written by :func:`text_block` into console output ``log``."""
    position = 0
    while (match := _TEXT_HEADER.search(log, position)) is not None:
        length = int(match[3])
        yield json.loads(match[1]), int(match[2]), log[match.end() : match.end() + length]
        position = match.end() + length
