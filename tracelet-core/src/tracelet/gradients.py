"""Which gradient statistics a run keeps: the ``track_gradients`` and ``gradient_layers``
settings, in one place for ``Experiment.log_gradient_stats`` and the framework integrations.

A statistic named ``<layer>/<stat>`` (``encoder.0.weight/norm``) belongs to that layer; one
without a ``/`` (``total_norm``) describes the whole model and is kept whenever gradients are.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any


def layer_selected(layer: str, layers: Iterable[str]) -> bool:
    """Whether ``layer`` is among ``layers`` (names, prefixes ending in ``.``, or shell
    patterns such as ``encoder.*``); an empty ``layers`` selects every layer."""
    patterns = list(layers)
    if not patterns:
        return True
    return any(
        layer == p or (p.endswith(".") and layer.startswith(p)) or fnmatch.fnmatchcase(layer, p)
        for p in patterns
    )


def selected_stats(stats: Mapping[str, Any], layers: Iterable[str]) -> dict[str, Any]:
    """The statistics of ``stats`` to keep under ``gradient_layers`` = ``layers``."""
    patterns = list(layers)
    return {
        name: value
        for name, value in stats.items()
        if "/" not in name or layer_selected(name.rsplit("/", 1)[0], patterns)
    }
