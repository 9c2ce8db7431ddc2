"""A small least-recently-used map of the server's per-run state (indexes, summaries)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class LruCache(Generic[T]):
    """Up to ``size`` values, each made by ``make(key)`` on first use; thread-safe."""

    def __init__(self, make: Callable[..., T], size: int) -> None:
        self._make = make
        self._size = size
        self._values: OrderedDict[Hashable, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, *key: Hashable) -> T:
        """The value of ``key`` (made now if new); the least recently used goes when full."""
        with self._lock:
            value = self._values.get(key)
            if value is None:
                value = self._values[key] = self._make(*key)
                while len(self._values) > self._size:
                    self._values.popitem(last=False)
            else:
                self._values.move_to_end(key)
            return value
