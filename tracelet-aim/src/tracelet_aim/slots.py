"""Where in Aim each point of a batch goes, so that a step logged twice loses nothing.

Aim keeps one value per sequence (name and context) and step: tracking a step again
replaces its value. :class:`Slots` gives each point the first repeat context
(:func:`names.with_repeat`) that no earlier point of the batch took and whose step Aim
holds nothing at, or holds this very point (same timestamp, and same value for a metric):
a batch delivered again after a failure lands exactly where it landed before, so delivery
stays exactly-once without any bookkeeping.

Most points are cheap: a step above the sequence's last step is free without a lookup.
Only a step at or below it (out of order, or repeated) is looked up in Aim, after
``before_read`` (a server answers a read only once it holds every write before it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from tracelet_aim.names import with_repeat

_FREE = object()


@functools.lru_cache(maxsize=1024)
def context_id(items: tuple[tuple[str, Any], ...]) -> int:
    """Aim's id of the context holding ``items`` (Aim copies the dict on every use)."""
    from aim.storage.context import Context

    return int(Context(dict(items)).idx)


def _same(a: Any, b: Any) -> bool:
    """Whether two stored identities are the same point (NaN equals NaN)."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


class Slots:
    """Chooses each point's context for one batch of one Aim run."""

    def __init__(self, run: Any, before_read: Callable[[], None]) -> None:
        self._tracker = run._tracker
        self._before_read = before_read
        self._placed: set[tuple[str, int, int]] = set()

    def place(self, name: str, context: dict[str, Any], step: int, identity: Any) -> dict:
        """The context for a point of sequence ``name`` at ``step``; ``identity`` is its
        ``(timestamp,)`` or ``(timestamp, value)``."""
        repeat = 0
        while True:
            chosen = with_repeat(context, repeat)
            key = (name, context_id(tuple(chosen.items())), step)
            if key not in self._placed:
                held = self._stored(*key, len(identity))
                if held is _FREE or _same(held, identity):
                    self._placed.add(key)
                    return chosen
            repeat += 1

    def _stored(self, name: str, context_id: int, step: int, size: int) -> Any:
        """The identity of what Aim holds at ``step`` of a sequence, or ``_FREE``."""
        info = self._tracker.sequence_infos.get((context_id, name))
        if info is None or not info.initialized or step >= info.count:
            return _FREE
        at = info.step_hash_fn(step)
        self._before_read()
        try:
            timestamp = info.time_view[at]
            return (timestamp, info.val_view[at]) if size == 2 else (timestamp,)
        except KeyError:
            return _FREE
