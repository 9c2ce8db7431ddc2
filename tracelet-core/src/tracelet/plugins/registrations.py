"""Registration records: what the registration hooks return, one frozen record per plugin.

A record names the plugin (the only place its name is given), says how to build it, and,
for a backend, declares its options. Tracelet builds plugins from records when a run
starts; the records themselves do no work.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from tracelet.plugins.interfaces import (
    BackendPlugin,
    CollectorPlugin,
    FrameworkPlugin,
    PluginInterface,
    PluginMetadata,
    PluginType,
)
from tracelet.plugins.options import Option, check_options
from tracelet.redaction import REDACTED, redact

_NAME = re.compile(r"[a-z][a-z0-9_-]*")


def _check_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(
            f"plugin name {value!r} must be lower-case letters, digits, '_' or '-', "
            "starting with a letter (it is what users type as backend=...)"
        )


def _option_records(options: Iterable[Option]) -> tuple[Option, ...]:
    if isinstance(options, str | Mapping):
        raise TypeError("options must be a list of tracelet.plugins.Option records")
    records = tuple(options)
    for option in records:
        if not isinstance(option, Option):
            raise TypeError(
                f"declare each option as tracelet.plugins.Option(name, type), not {option!r}"
            )
    names = [option.name for option in records]
    if len(set(names)) != len(names):
        raise ValueError(f"an option is declared twice in {names}")
    return records


def _metadata(record: Any, kind: PluginType) -> PluginMetadata:
    return PluginMetadata(record.name, record.version, kind, record.description)


def _built(record: Any, kind: PluginType, interface: type[PluginInterface]) -> Any:
    plugin = record.factory()
    if not isinstance(plugin, interface):
        raise TypeError(
            f"the factory of {kind.value} {record.name!r} returned {type(plugin).__name__}, "
            f"not a {interface.__name__}"
        )
    plugin.metadata = _metadata(record, kind)
    return plugin


@attrs.frozen
class BackendRegistration:
    """A backend: its name (``backend="name"``), its factory, and its typed options."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[], BackendPlugin]
    options: tuple[Option, ...] = attrs.field(default=(), converter=_option_records)
    description: str = ""
    version: str = ""

    @property
    def option_names(self) -> frozenset[str]:
        """The names of the declared options."""
        return frozenset(option.name for option in self.options)

    @property
    def secret_options(self) -> frozenset[str]:
        """The names of the options never stored (passwords, API keys)."""
        return frozenset(option.name for option in self.options if option.secret)

    def check_options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` checked against the declared options, defaults filled in."""
        return check_options(self.name, self.options, values)

    def stored_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` as the journal keeps them: secret options masked, URIs without
        their credentials (they still name the same place)."""
        return redact(
            {
                key: REDACTED if key in self.secret_options and value is not None else value
                for key, value in options.items()
            }
        )

    def build(self, options: Mapping[str, Any]) -> BackendPlugin:
        """A new backend, initialized with ``options`` once they are checked."""
        checked = self.check_options(options)
        plugin: BackendPlugin = _built(self, PluginType.BACKEND, BackendPlugin)
        plugin.initialize(checked)
        return plugin


@attrs.frozen
class CollectorRegistration:
    """A collector, switched on by the setting named ``setting`` (always on when None)."""

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[], CollectorPlugin]
    setting: str | None = None
    description: str = ""
    version: str = ""

    def build(self, settings: Mapping[str, Any]) -> CollectorPlugin:
        """A new collector, initialized with the run's settings."""
        plugin: CollectorPlugin = _built(self, PluginType.COLLECTOR, CollectorPlugin)
        plugin.initialize(settings)
        return plugin


@attrs.frozen
class FrameworkRegistration:
    """A framework integration.

    ``selectable`` integrations are attached only when ``automagic_frameworks`` is empty
    or names them; the others (built-in helpers) are always attached.
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[[], FrameworkPlugin]
    description: str = ""
    selectable: bool = True
    version: str = ""

    def build(self, settings: Mapping[str, Any]) -> FrameworkPlugin:
        """A new integration, initialized with the run's settings."""
        plugin: FrameworkPlugin = _built(self, PluginType.FRAMEWORK, FrameworkPlugin)
        plugin.initialize(settings)
        return plugin
