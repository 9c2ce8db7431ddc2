"""The plugin registry: finds plugins, isolates their failures, and answers "which backend?".

Built-in plugins (the local store) register exactly like third-party ones, through the
hooks in :mod:`tracelet.hookspecs`; third-party plugins come from the entry-point group
``tracelet``. A plugin that fails to import, or whose hook raises, is reported once and
skipped: the run goes on with the others.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any, TypeVar

import pluggy

from tracelet import hookspecs
from tracelet.core.plugins import BackendRegistration, CollectorRegistration, FrameworkRegistration
from tracelet.exceptions import ConfigurationError

logger = logging.getLogger("tracelet")

DEFAULT_PLUGINS = ("tracelet.storage.backend", "tracelet.collectors", "tracelet.artifact_watch")
"""Modules registered in every registry, before any entry point."""

KNOWN_BACKENDS = {
    "local": "tracelet-core",
    "mlflow": "tracelet-mlflow",
    "wandb": "tracelet-wandb",
    "clearml": "tracelet-clearml",
    "aim": "tracelet-aim",
}
"""Backends maintained with Tracelet, and the distribution that provides each."""

R = TypeVar("R", BackendRegistration, CollectorRegistration, FrameworkRegistration)
_reported: set[tuple[str, str]] = set()


def report_once(subject: str, message: str) -> None:
    """Log a warning about ``subject`` unless this exact one was already logged."""
    if (subject, message) not in _reported:
        _reported.add((subject, message))
        logger.warning("%s: %s", subject, message)


class PluginRegistry:
    """A pluggy plugin manager with Tracelet's hooks, built-ins and entry points loaded."""

    def __init__(
        self, *, entry_points_group: str | None = "tracelet", disabled: Iterable[str] = ()
    ) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.disabled = set(disabled)
        self.failures: dict[str, str] = {}
        for module in DEFAULT_PLUGINS:
            self._register(module, lambda module=module: importlib.import_module(module))
        if entry_points_group:
            for point in entry_points(group=entry_points_group):
                self._register(point.name, point.load)

    def _register(self, name: str, load: Callable[[], Any]) -> None:
        if name in self.disabled or name.rsplit(".", 1)[-1] in self.disabled:
            return
        try:
            self.manager.register(load(), name=name)
        except Exception as error:
            self._fail(name, f"could not be loaded ({type(error).__name__}: {error}); skipped")

    def register(self, plugin: object, name: str | None = None) -> None:
        """Register a plugin object (a module, or an instance with hook implementations)."""
        self.manager.register(plugin, name=name)

    def _fail(self, name: str, message: str) -> None:
        self.failures[name] = message
        report_once(f"tracelet plugin {name!r}", message)

    def _collect(self, hook_name: str) -> list[R]:
        hook = getattr(self.manager.hook, hook_name)
        records: list[R] = []
        for impl in reversed(hook.get_hookimpls()):
            try:
                records.extend(impl.function() or ())
            except Exception as error:
                self._fail(impl.plugin_name, f"{hook_name} raised {error!r}; skipped")
        return records

    def backends(self) -> dict[str, BackendRegistration]:
        """Every registered backend by name."""
        found: dict[str, BackendRegistration] = {}
        for record in self._collect("tracelet_register_backends"):
            if record.name in found and found[record.name] != record:
                raise ConfigurationError(
                    f"two plugins register a backend named {record.name!r}; "
                    "uninstall one or disable it with TRACELET_DISABLE_PLUGINS"
                )
            found[record.name] = record
        return found

    def collectors(self) -> dict[str, CollectorRegistration]:
        """Every registered collector by name."""
        return {r.name: r for r in self._collect("tracelet_register_collectors")}

    def frameworks(self) -> dict[str, FrameworkRegistration]:
        """Every registered framework integration by name."""
        return {r.name: r for r in self._collect("tracelet_register_frameworks")}

    def select_backends(self, names: Sequence[str]) -> list[BackendRegistration]:
        """The registrations for ``names``; an unknown name raises ConfigurationError."""
        available = self.backends()
        selected = []
        for name in names:
            if name not in available:
                raise unknown_backend(name, available)
            if available[name] not in selected:
                selected.append(available[name])
        return selected

    def announce(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, reporting (not raising) their failures."""
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            try:
                impl.function(**{k: kwargs[k] for k in impl.argnames})
            except Exception as error:
                report_once(
                    f"tracelet plugin {impl.plugin_name!r}", f"{hook_name} raised {error!r}"
                )


def unknown_backend(name: str, available: Iterable[str]) -> ConfigurationError:
    """The error for a backend nobody registered: what is installed, and what to install."""
    installed = ", ".join(sorted(available)) or "none"
    package = KNOWN_BACKENDS.get(name)
    if package:
        fix = f"install it with: pip install {package}"
    else:
        fix = "check the spelling, or install the plugin that provides it"
    return ConfigurationError(f"unknown backend {name!r} (installed: {installed}); {fix}")


_default: PluginRegistry | None = None


def default_registry(disabled: Iterable[str] = ()) -> PluginRegistry:
    """The process-wide registry, built on first use (and rebuilt if ``disabled`` changes)."""
    global _default
    if _default is None or _default.disabled != set(disabled):
        _default = PluginRegistry(disabled=disabled)
    return _default
