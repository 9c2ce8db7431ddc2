"""Run code when a module is imported: patch a library the moment it loads, without
importing it ourselves (importing torch or TensorBoard costs a second or more)."""

from __future__ import annotations

import importlib.abc
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tracelet.plugins import fork_safe, report_once

_lock = fork_safe(threading.RLock())
_waiting: dict[str, list[Callable[[ModuleType], None]]] = {}


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> Callable[[], None]:
    """Call ``callback(module)`` once module ``name`` is imported: now if it already is,
    else right after its import. Returns a function that cancels a call not made yet."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)  # (raising here raises to the caller, as any call does)
        return _nothing
    with _lock:
        _waiting.setdefault(name, []).append(callback)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)

    def cancel() -> None:
        with _lock:
            callbacks = _waiting.get(name, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                _waiting.pop(name, None)
            if not _waiting and _FINDER in sys.meta_path:
                sys.meta_path.remove(_FINDER)

    return cancel


def _nothing() -> None:
    return None


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the loader of a module someone waits for."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _waiting:
            return None
        spec = _found_by_others(self, fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _NotifyingLoader(spec.loader)
        return spec


def _found_by_others(finder: Any, fullname: str, path: Any, target: Any) -> Any:
    """The spec the other finders give (an editable install's own finder included)."""
    for other in list(sys.meta_path):
        find_spec = getattr(other, "find_spec", None)
        if other is finder or find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _NotifyingLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def __getattr__(self, name: str) -> Any:  # get_resource_reader, is_package ...
        return getattr(self.loader, name)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader  # leave no trace
        with _lock:
            callbacks = _waiting.pop(module.__name__, [])
            if not _waiting and _FINDER in sys.meta_path:
                sys.meta_path.remove(_FINDER)
        for callback in callbacks:
            try:
                callback(module)
            except Exception as error:  # never break the user's import
                report_once("tracelet torch", f"hook on import of {module.__name__}: {error!r}")


_FINDER = _PostImportFinder()
