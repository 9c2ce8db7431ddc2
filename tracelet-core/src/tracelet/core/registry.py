"""The plugin registry: a pluggy plugin manager with Tracelet's hooks, built-ins and entry points.

Built-in plugins (the local store, the collectors, the artifact watcher) register exactly
like third-party ones; third-party plugins come from the entry-point group ``tracelet``.
pluggy is used as designed: hooks are called through ``pm.hook``, ``check_pending``
catches a misspelled hook at load, ``set_blocked`` serves ``TRACELET_DISABLE_PLUGINS``,
and ``TRACELET_DEBUG=1`` turns on pluggy's tracing.

A plugin that fails to import, whose hook is misspelled, or whose hook raises is reported
once and skipped: the run goes on with the others. Two plugins registering one name is a
ConfigurationError naming both.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from tracelet import hookspecs
from tracelet.exceptions import ConfigurationError, did_you_mean
from tracelet.plugins import (
    BackendPlugin,
    BackendRegistration,
    CollectorRegistration,
    FrameworkRegistration,
)
from tracelet.reporting import logger, report_once

if TYPE_CHECKING:
    from tracelet.settings import TraceletSettings

__all__ = [
    "PluginRegistry",
    "default_registry",
    "logger",
    "registry_for",
    "report_once",
    "unknown_backend",
]

BUILT_IN_PLUGINS = {
    "local": "tracelet.storage.backend",
    "collectors": "tracelet.collectors",
    "artifact_watch": "tracelet.artifact_watch",
    "output_capture": "tracelet.output_capture",
}
"""Plugin name to module, registered before any entry point (and disabled the same way)."""

KNOWN_BACKENDS = {
    "local": "tracelet-core",
    "mlflow": "tracelet-mlflow",
    "wandb": "tracelet-wandb",
    "clearml": "tracelet-clearml",
    "aim": "tracelet-aim",
}
"""Backends maintained with Tracelet, and the distribution that provides each."""

R = TypeVar("R", BackendRegistration, CollectorRegistration, FrameworkRegistration)
_HOOK_NAMES = sorted(name for name in vars(hookspecs) if name.startswith("tracelet_"))


class PluginRegistry:
    """Tracelet's plugin manager: ``manager`` is the pluggy ``PluginManager``."""

    def __init__(
        self,
        *,
        entry_points_group: str | None = hookspecs.PROJECT_NAME,
        disabled: Iterable[str] = (),
        debug: bool = False,
    ) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.disabled = frozenset(disabled)
        self.debug = debug
        self.failures: dict[str, str] = {}
        for name in self.disabled:
            self.manager.set_blocked(name)
        for name, module in BUILT_IN_PLUGINS.items():
            self._load(name, lambda module=module: importlib.import_module(module))
        if entry_points_group:
            for point in entry_points(group=entry_points_group):
                self._load(point.name, point.load)
        self._skip_unknown_hooks()
        if debug:
            self.manager.trace.root.setwriter(sys.stderr.write)
            self.manager.enable_tracing()

    # -- loading -------------------------------------------------------------------------

    def _load(self, name: str, load: Callable[[], Any]) -> None:
        if self.manager.is_blocked(name):
            return
        if self.manager.get_plugin(name) is not None:
            taken = self.manager.get_plugin(name)
            self._fail(name, f"the name is taken by {getattr(taken, '__name__', taken)!r}; skipped")
            return
        try:
            self.manager.register(load(), name=name)
        except Exception as error:
            self._fail(name, f"could not be loaded ({type(error).__name__}: {error}); skipped")

    def _skip_unknown_hooks(self) -> None:
        """``check_pending`` until it passes, unregistering each plugin it names."""
        while True:
            try:
                self.manager.check_pending()
                return
            except pluggy.PluginValidationError as error:
                name = self.manager.get_name(error.plugin) or repr(error.plugin)
                self.manager.unregister(error.plugin)
                self._fail(name, f"{_unknown_hook(error.plugin)} (plugin skipped)")

    def register(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (a module, or an instance with hook implementations).

        A function marked ``@hookimpl`` whose name is not a Tracelet hook is a
        ConfigurationError naming it (and the hook it was probably meant to be).
        """
        registered = self.manager.register(plugin, name=name)
        if registered is None:
            raise ConfigurationError(f"plugin {name!r} is disabled (TRACELET_DISABLE_PLUGINS)")
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError:
            self.manager.unregister(plugin)
            raise ConfigurationError(f"plugin {registered!r}: {_unknown_hook(plugin)}") from None
        return registered

    def unregister(self, name: str) -> None:
        """Remove the plugin registered as ``name``."""
        self.manager.unregister(name=name)

    def _fail(self, name: str, message: str) -> None:
        self.failures[name] = message
        report_once(f"tracelet plugin {name!r}", message)

    # -- calling hooks -------------------------------------------------------------------

    def call(self, hook_name: str, *, repeatable: bool = False, **kwargs: Any) -> list[Any]:
        """Call a hook through ``pm.hook``; an implementation that raises is reported once.

        The others still run: a ``repeatable`` hook (registration hooks, which do no work)
        is called again without the failed plugin; any other hook goes on with the
        implementations pluggy had not reached yet.
        """
        skipped: list[object] = []
        while True:
            if skipped:
                caller = self.manager.subset_hook_caller(hook_name, skipped)
            else:
                caller = getattr(self.manager.hook, hook_name)
            try:
                return caller(**kwargs)
            except Exception as error:
                impls = caller.get_hookimpls()
                failed = _raising_impl(impls, error)
                if failed is None:
                    raise
                self._fail(failed.plugin_name, f"{hook_name} raised {error!r}; skipped")
                reached = [failed] if repeatable else impls[impls.index(failed) :]
                skipped += [impl.plugin for impl in reached]

    def announce(self, hook_name: str, **kwargs: Any) -> None:
        """Call a lifecycle hook on every plugin, reporting (not raising) their failures."""
        self.call(hook_name, **kwargs)

    def _records(self, hook_name: str, record: type, kind: str) -> dict[str, Any]:
        """Every record ``hook_name`` returns, by name; a plugin returning anything but a
        list of ``record`` is reported once and unregistered, two records of one name are
        a ConfigurationError naming both plugins."""
        results = self.call(hook_name, repeatable=True)
        if not all(_records_of(result, record) for result in results):
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
                alone = self._call_alone(hook_name, impl)
                if not all(_records_of(result, record) for result in alone):
                    self._fail(
                        impl.plugin_name,
                        f"{hook_name} returned {alone[0]!r}, not a list of {record.__name__}; "
                        "skipped",
                    )
                    self.manager.unregister(impl.plugin)
            results = self.call(hook_name, repeatable=True)
        found: dict[str, Any] = {}
        for item in (item for result in results for item in result):
            if item.name in found and found[item.name] != item:
                owners = ", ".join(repr(o) for o in self._owners(hook_name, item.name))
                raise ConfigurationError(
                    f"two plugins ({owners}) register a {kind} named {item.name!r}; "
                    "uninstall one or name it in TRACELET_DISABLE_PLUGINS"
                )
            found[item.name] = item
        return found

    def _call_alone(self, hook_name: str, impl: pluggy.HookImpl) -> list[Any]:
        """What one implementation of a registration hook returns (nothing if it raises)."""
        others = [i.plugin for i in getattr(self.manager.hook, hook_name).get_hookimpls()]
        try:
            return self.manager.subset_hook_caller(
                hook_name, [p for p in others if p is not impl.plugin]
            )()
        except Exception:  # reported by call()
            return []

    def _owners(self, hook_name: str, name: str) -> list[str]:
        """The plugins whose ``hook_name`` returns a record named ``name``."""
        return [
            impl.plugin_name
            for impl in getattr(self.manager.hook, hook_name).get_hookimpls()
            if any(r.name == name for result in self._call_alone(hook_name, impl) for r in result)
        ]

    # -- what plugins provide ------------------------------------------------------------

    def backends(self) -> dict[str, BackendRegistration]:
        """Every registered backend by name."""
        return self._records("tracelet_register_backends", BackendRegistration, "backend")

    def collectors(self) -> dict[str, CollectorRegistration]:
        """Every registered collector by name."""
        return self._records("tracelet_register_collectors", CollectorRegistration, "collector")

    def frameworks(self) -> dict[str, FrameworkRegistration]:
        """Every registered framework integration by name."""
        return self._records(
            "tracelet_register_frameworks", FrameworkRegistration, "framework integration"
        )

    def select_backends(self, names: Sequence[str]) -> list[BackendRegistration]:
        """The registrations for ``names``; an unknown name raises ConfigurationError."""
        available = self.backends()
        selected = []
        for name in names:
            if name not in available:
                raise unknown_backend(name, available, self.disabled)
            if available[name] not in selected:
                selected.append(available[name])
        return selected

    def build_backend(self, name: str, options: Mapping[str, Any]) -> BackendPlugin:
        """A new backend ``name``, its ``options`` checked and given to ``initialize``.

        The one way backends are built: by runs, ``tracelet sync`` and the conformance kit.
        """
        (registration,) = self.select_backends([name])
        return registration.build(options)


def _records_of(result: object, record: type) -> bool:
    """Whether a registration hook's result is a list (or tuple) of ``record``."""
    return isinstance(result, list | tuple) and all(isinstance(r, record) for r in result)


def _raising_impl(impls: Sequence[pluggy.HookImpl], error: BaseException) -> Any:
    """The implementation whose frame raised ``error`` (the outermost one in its traceback).

    Frames are matched by code and, for methods, by ``self``: two plugins may be instances
    of one class.
    """
    trace = error.__traceback__
    while trace is not None:
        frame = trace.tb_frame
        for impl in impls:
            function = impl.function
            owner = getattr(function, "__self__", None)
            code = getattr(getattr(function, "__func__", function), "__code__", None)
            if frame.f_code is code and (owner is None or frame.f_locals.get("self") is owner):
                return impl
        trace = trace.tb_next
    return None


def _unknown_hook(plugin: object) -> str:
    """Which of ``plugin``'s hook implementations has no Tracelet hook of its name."""
    names = [
        name
        for name in dir(plugin)
        if name not in _HOOK_NAMES
        and hasattr(getattr(plugin, name, None), f"{hookspecs.PROJECT_NAME}_impl")
    ]
    if not names:
        return "it implements a hook Tracelet does not have"
    return "; ".join(
        f"{name!r} is not a Tracelet hook{did_you_mean(name, _HOOK_NAMES, most=1)}"
        for name in names
    )


def how_to_install(package: str) -> str:
    """Where a Tracelet distribution comes from, as commands that work as written."""
    return (
        f"from a Tracelet checkout: pip install ./{package} (or, with the wheels built into "
        f"dist/: pip install {package} --find-links dist)"
    )


def unknown_backend(
    name: str, available: Iterable[str], disabled: Iterable[str] = ()
) -> ConfigurationError:
    """The error for a backend nobody registered: what is installed, and what to install
    (or to re-enable, when its plugin is in ``disable_plugins``)."""
    installed = ", ".join(sorted(available)) or "none"
    package = KNOWN_BACKENDS.get(name)
    if name in disabled:
        fix = f"its plugin is disabled: remove {name!r} from disable_plugins"
    elif package:
        fix = f"install it {how_to_install(package)}"
    else:
        fix = f"check the spelling{did_you_mean(name, available)}, or install its plugin"
    return ConfigurationError(f"unknown backend {name!r} (installed: {installed}); {fix}")


_default: PluginRegistry | None = None


def registry_for(settings: TraceletSettings) -> PluginRegistry:
    """The process-wide registry as ``settings`` want it (disabled plugins, tracing)."""
    return default_registry(settings.disable_plugins, debug=settings.debug)


def default_registry(disabled: Iterable[str] = (), *, debug: bool = False) -> PluginRegistry:
    """The process-wide registry, built on first use (and rebuilt when its settings change)."""
    global _default
    if _default is None or _default.disabled != frozenset(disabled) or _default.debug != debug:
        _default = PluginRegistry(disabled=disabled, debug=debug)
    return _default
