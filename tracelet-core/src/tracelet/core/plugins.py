"""What plugin authors subclass (the plugin interfaces) and return (registration records).

A backend plugin, for example::

    class MyBackend(BackendPlugin):
        @classmethod
        def get_metadata(cls) -> PluginMetadata:
            return PluginMetadata("mine", "1.0", PluginType.BACKEND, "Sends runs to Mine")

        def start(self): ...                       # connect (retried on failure)
        def start_run(self, run, resumed): ...     # create or reopen the run
        def log_batch(self, batch): ...           # deliver; raise to have it retried
        def finish_run(self, status): ...          # record the final status
        def stop(self): ...                        # release connections

    @tracelet.hookimpl
    def tracelet_register_backends():
        return [BackendRegistration("mine", MyBackend, options={"url"})]

The factory and ``initialize`` run when the run starts, on the thread that starts it
(raise ConfigurationError there for bad options); ``artifact_uri`` runs in
``log_artifact`` and must not do I/O. Every other backend method runs on that backend's
own sink thread, never on the training thread, so it may block; Tracelet retries failures
with backoff.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from tracelet.core.experiment import Experiment
    from tracelet.records import Batch, RunInfo, RunStatus


class PluginType(enum.StrEnum):
    """The kinds of plugin."""

    BACKEND = "backend"
    FRAMEWORK = "framework"
    COLLECTOR = "collector"


@attrs.frozen
class PluginMetadata:
    """Who a plugin is: name, version, kind, and what it does."""

    name: str
    version: str
    type: PluginType
    description: str = ""
    author: str = ""
    dependencies: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()


class PluginInterface(abc.ABC):
    """Base of every plugin: metadata, configuration, start and stop."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.started = False

    @classmethod
    @abc.abstractmethod
    def get_metadata(cls) -> PluginMetadata:
        """The plugin's metadata."""

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Receive the plugin's options; override to validate them (raise ConfigurationError)."""
        self.config = dict(config)

    @abc.abstractmethod
    def start(self) -> None:
        """Acquire what the plugin needs (connections, threads, hooks)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release everything :meth:`start` acquired."""

    def get_status(self) -> dict[str, Any]:
        """A short description of the plugin's state, for diagnostics."""
        meta = self.get_metadata()
        return {"name": meta.name, "type": meta.type.value, "version": meta.version}

    @property
    def name(self) -> str:
        """The plugin's name (from its metadata)."""
        return self.get_metadata().name


class BackendPlugin(PluginInterface):
    """A tracking backend: receives every batch of a run, on its own thread."""

    @abc.abstractmethod
    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Create the run in the tool, or reopen it when ``resumed`` (same ``run.id``)."""

    @abc.abstractmethod
    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``. Raise to have it retried; delivering it twice must not duplicate."""

    @abc.abstractmethod
    def finish_run(self, status: RunStatus) -> None:
        """Record the run's final status in the tool."""

    def start(self) -> None:
        """Acquire connections; override when the tool needs any (called on the sink thread)."""
        self.started = True

    def stop(self) -> None:
        """Release connections; override when :meth:`start` acquired any."""
        self.started = False

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """Where the tool files ``artifact_path``; override with the tool's own URI scheme."""
        return f"{self.name}://{run.project}/{run.id}/{artifact_path}"


class CollectorPlugin(PluginInterface):
    """Samples something outside the training loop, on its own background thread.

    With ``interval`` in seconds, each sample's values are logged as metrics
    ``<name>/<key>``; with ``interval = None`` it runs once at start and its values become
    parameters ``<name>/<key>``. ``initialize`` receives the run's settings as a dict.
    """

    interval: float | None = 10.0

    @abc.abstractmethod
    def collect(self) -> Mapping[str, Any]:
        """Take one sample: name to value (numbers for a periodic collector)."""


class FrameworkPlugin(PluginInterface):
    """Connects a framework's own logging to an experiment."""

    @abc.abstractmethod
    def attach(self, experiment: Experiment) -> None:
        """Start routing the framework's records into ``experiment``."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Undo :meth:`attach`, leaving the framework as it was."""


@attrs.frozen
class BackendRegistration:
    """A backend offered by a plugin: its name, its factory, and the options it accepts."""

    name: str
    factory: Callable[[], BackendPlugin]
    options: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    description: str = ""


@attrs.frozen
class CollectorRegistration:
    """A collector offered by a plugin, enabled by the setting named ``setting``."""

    name: str
    factory: Callable[[], CollectorPlugin]
    setting: str | None = None
    description: str = ""


@attrs.frozen
class FrameworkRegistration:
    """A framework integration offered by a plugin.

    ``selectable`` integrations are attached only when ``automagic_frameworks`` is empty
    or names them; the others (built-in helpers) are always attached.
    """

    name: str
    factory: Callable[[], FrameworkPlugin]
    description: str = ""
    selectable: bool = True
