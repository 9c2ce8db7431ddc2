"""One pair of global ``torch.optim`` step hooks per process, shared by every listener.

Torch calls its global hooks while iterating over the dict that holds them, so removing a
hook from inside a step (a run stopped by an ``on_anomaly`` callback, or from another
thread) would raise inside the user's ``optimizer.step()``. The two hooks here are
registered once and never removed; listeners come and go by replacing an immutable tuple.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from tracelet.plugins import fork_safe, report_once

StepListener = Callable[[Any, tuple[Any, ...], dict[str, Any]], None]
"""Called with ``(optimizer, args, kwargs)`` of a ``step()`` call."""

_lock = fork_safe(threading.Lock())
_before: tuple[StepListener, ...] = ()
_after: tuple[StepListener, ...] = ()
_registered = False


def listen(before: StepListener | None = None, after: StepListener | None = None) -> None:
    """Call ``before`` ahead of every optimizer step and ``after`` once it is done."""
    global _before, _after
    with _lock:
        _register()
        if before is not None:
            _before = (*_before, before)
        if after is not None:
            _after = (*_after, after)


def stop_listening(before: StepListener | None = None, after: StepListener | None = None) -> None:
    """Stop calling the listeners given to :func:`listen` (safe from inside a step)."""
    global _before, _after
    with _lock:
        _before = tuple(listener for listener in _before if listener != before)
        _after = tuple(listener for listener in _after if listener != after)


def listeners() -> int:
    """How many listeners are registered (for diagnostics and tests)."""
    return len(_before) + len(_after)


def _register() -> None:
    global _registered
    if not _registered:
        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        register_optimizer_step_pre_hook(_call_before)
        register_optimizer_step_post_hook(_call_after)
        _registered = True


def _call_before(optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _call(_before, optimizer, args, kwargs)


def _call_after(optimizer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _call(_after, optimizer, args, kwargs)


def _call(
    listeners: tuple[StepListener, ...],
    optimizer: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    for listener in listeners:
        try:
            listener(optimizer, args, kwargs)
        except Exception as error:  # never into the user's optimizer.step()
            report_once("tracelet torch", f"optimizer step hook failed: {error!r}")
