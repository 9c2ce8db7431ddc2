"""Locks a forked child can take.

``fork()`` copies only the thread that calls it. A lock another thread held at that moment
stays held in the child, and nobody there will release it: the child's first use of it
waits forever (or, with a timeout, that long every time). A DataLoader worker forks while
Tracelet's threads deliver, import a tool, print or report; so every lock that a child may
take, and that threads the child does not have may hold, is made with :func:`fork_safe`.

The child gets such a lock new and unlocked (``_at_fork_reinit``, as the standard library
renews its own). Unlike ``logging``'s module lock it is not taken around the fork, which
would then wait for a backend's start or a flush; so what it guards may be half-changed in
the child. The locks made fork-safe here guard state a child may read as it is (a set, a
list of callbacks, kept text). Other fork rules: the local store's SQLite
connections (:mod:`tracelet.storage.forking`), the parent's run and its writer process
(:mod:`tracelet.core.process`, :mod:`tracelet.core.journal_link`).
"""

from __future__ import annotations

import os
import weakref
from typing import Any, TypeVar

LockT = TypeVar("LockT")
"""A ``threading.Lock``, ``RLock`` or ``Condition``."""

_locks: weakref.WeakSet[Any] = weakref.WeakSet()


def fork_safe(lock: LockT) -> LockT:
    """Return ``lock`` (a ``threading.Lock``, ``RLock`` or ``Condition``), made new and
    unlocked in every child this process forks while it exists (a module's lock, or an
    object's: it is held weakly).

    Not for a lock the forking thread itself holds across a ``fork()`` whose child goes on
    through the code that took it: that child would release a lock it does not hold. (The
    backend start lock, ``start_logging``'s and a run's stop lock are held around a tool's
    code; the one tool here that forks there, ClearML's monitor, ends its child with
    ``os._exit``.)"""
    if not callable(getattr(lock, "_at_fork_reinit", None)):
        raise TypeError(
            f"fork_safe takes a threading.Lock, RLock or Condition, not {type(lock).__name__}"
        )
    _locks.add(lock)
    return lock


def _renew_in_child() -> None:
    for lock in list(_locks):
        lock._at_fork_reinit()


if hasattr(os, "register_at_fork"):  # (not on Windows, which cannot fork)
    os.register_at_fork(after_in_child=_renew_in_child)
