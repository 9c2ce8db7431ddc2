"""The plugin interfaces: what a backend, a collector or a framework integration subclasses.

The base class owns what every plugin shares: its checked options (``config``), its
metadata (built from its registration, so the name is given once) and whether it is
started. Subclasses override ``start`` and ``stop`` only when they hold resources;
``started`` follows those calls by itself.
"""

from __future__ import annotations

import abc
import enum
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

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
    """Who a plugin is: name, version, kind, and what it does (built from its registration)."""

    name: str
    version: str
    type: PluginType
    description: str = ""
    author: str = ""
    dependencies: tuple[str, ...] = ()
    capabilities: frozenset[str] = frozenset()


def _tracking(method: Callable[[Any], None], started: bool) -> Callable[[Any], None]:
    """``method`` (a plugin's start or stop) wrapped to keep the plugin's ``started`` state:
    true once ``start`` returned, false once ``stop`` was called or ``start`` raised."""

    @functools.wraps(method)
    def tracked(self: PluginInterface) -> None:
        try:
            method(self)
        except BaseException:
            self._started = False
            raise
        self._started = started

    tracked.__tracelet_tracks_state__ = True  # type: ignore[attr-defined]
    return tracked


class PluginInterface(abc.ABC):
    """Base of every plugin: its options, its metadata, and its started/stopped state."""

    kind: ClassVar[PluginType]
    _started = False

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        """The plugin's options (backends) or the run's settings (collectors, frameworks)."""
        self.metadata = PluginMetadata(type(self).__name__, "", self.kind)
        """Set from the plugin's registration when Tracelet builds it."""
        self._started = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, started in (("start", True), ("stop", False)):
            method = cls.__dict__.get(name)
            if inspect.isfunction(method) and not hasattr(method, "__tracelet_tracks_state__"):
                setattr(cls, name, _tracking(method, started))

    def get_metadata(self) -> PluginMetadata:
        """The plugin's metadata: name, version and description from its registration."""
        return self.metadata

    @property
    def name(self) -> str:
        """The name the plugin was registered under."""
        return self.metadata.name

    @property
    def started(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not been called since."""
        return self._started

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Receive checked options (backends) or the run's settings; runs before ``start``.

        Override it only for checks that span several options (raise ConfigurationError):
        each option's name and type is already checked against the registration.
        """
        self.config = dict(config)

    @functools.partial(_tracking, started=True)  # noqa: B027 - optional, not abstract
    def start(self) -> None:
        """Acquire what the plugin needs (connections, threads); the default needs nothing."""

    @functools.partial(_tracking, started=False)  # noqa: B027 - optional, not abstract
    def stop(self) -> None:
        """Release what :meth:`start` acquired; the default holds nothing."""

    def get_status(self) -> dict[str, Any]:
        """A short description of the plugin's state, for diagnostics."""
        meta = self.metadata
        return {
            "name": meta.name,
            "type": meta.type.value,
            "version": meta.version,
            "started": self.started,
        }


class BackendPlugin(PluginInterface):
    """A tracking backend: turns each batch of a run into its tool's native calls.

    Every method but ``initialize`` and ``artifact_uri`` runs on the backend's own
    delivery thread, never on the training thread, so it may block on the network. Raise
    to have a call retried; raise :class:`~tracelet.plugins.PermanentBackendError` for a
    failure no retry can fix, :class:`~tracelet.plugins.RejectedBatchError` for a batch
    the tool refuses for good.
    """

    kind = PluginType.BACKEND

    @abc.abstractmethod
    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Create the run in the tool, or reopen it when ``resumed`` (same ``run.id``)."""

    @abc.abstractmethod
    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``. Raise to have it retried; delivering it twice must not duplicate."""

    @abc.abstractmethod
    def finish_run(self, status: RunStatus) -> None:
        """Record the run's final status in the tool."""

    def held_batches(self) -> int | None:
        """The last batch (its ``seq``) the tool itself holds of the run :meth:`start_run`
        just opened, where the tool can tell; None (the default) where it cannot. Behind
        the delivery's cursor, delivery goes on after it: a tool that lost batches it had
        accepted (W&B's service, killed with its training process before it wrote them)
        is sent them again."""
        return None

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """Where the tool files ``artifact_path`` (no I/O: called on the training thread)."""
        return f"{self.name}://{run.project}/{run.id}/{artifact_path}"


class CollectorPlugin(PluginInterface):
    """Samples something outside the training loop, on Tracelet's collector thread.

    With ``interval`` in seconds, each sample's values are logged as metrics
    ``<name>/<key>``; with ``interval = None`` it runs once at start and its values become
    parameters ``<name>/<key>`` (a :class:`TextFile` value becomes a text artifact).
    ``initialize`` receives the run's settings as a dict.
    """

    kind = PluginType.COLLECTOR
    interval: float | None = 10.0

    @abc.abstractmethod
    def collect(self) -> Mapping[str, Any]:
        """Take one sample: name to value (numbers for a periodic collector)."""


@attrs.frozen
class TextFile:
    """A one-shot collector's value kept as a text file artifact ``<name>/<filename>``
    (the uncommitted git diff), where a parameter would be the wrong place."""

    filename: str
    text: str


@runtime_checkable
class PendingValue(Protocol):
    """A metric value not known yet on the training thread (a GPU tensor being copied):
    Tracelet calls :meth:`result` on its dispatcher thread, before journaling the point."""

    def result(self) -> float:
        """The value, waiting for it if need be; raise if it can never be had."""
        ...


class FrameworkPlugin(PluginInterface):
    """Connects a framework's own logging (TensorBoard, Lightning) to an experiment.

    An integration attached mid-run (:meth:`~tracelet.Experiment.attach_framework`, as
    ``watch`` does) is detached at stop with the others.
    """

    kind = PluginType.FRAMEWORK

    @abc.abstractmethod
    def attach(self, experiment: Experiment) -> None:
        """Start routing the framework's records into ``experiment``."""

    @abc.abstractmethod
    def detach(self) -> None:
        """Undo :meth:`attach`, leaving the framework as it was."""

    def metric_value(self, value: Any) -> float | PendingValue | None:
        """``value`` (logged as a metric, not a plain number) as a float, or as a
        :class:`PendingValue` resolved off the training thread; None when it is not of
        this framework's kinds. Called on the training thread: it must not wait for a
        device. Only integrations that override it are asked."""
        return None
