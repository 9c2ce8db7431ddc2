"""A started run's machinery: the store and its lock, the orchestrator and its sinks, the
collectors and the framework integrations. :class:`~tracelet.core.experiment.Experiment`
is the public face; a :class:`RunSession` is what it owns between ``start`` and ``stop``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.core.collecting import CollectorRunner
from tracelet.core.orchestrator import Orchestrator
from tracelet.core.registry import PluginRegistry
from tracelet.exceptions import ConfigurationError, StoreError
from tracelet.plugins import BackendPlugin, FrameworkPlugin, bundle_name
from tracelet.records import DeliveryState, RunInfo, RunStatus
from tracelet.redaction import redact
from tracelet.reporting import report_once
from tracelet.settings import RunSettings, TraceletSettings
from tracelet.storage import LocalStore

if TYPE_CHECKING:
    from tracelet.core.experiment import Experiment
    from tracelet.storage.locks import RunLock


@attrs.frozen
class Resumed:
    """What a run started again (same id) takes over from its earlier sessions."""

    iteration: int = 0
    versions: Mapping[str, int] = attrs.field(factory=dict)
    """Artifact key to its latest version."""
    backends: frozenset[str] = frozenset()
    """Backends that already delivered to the run (they are told they resume it)."""


class RunSession:
    """Opens a run (store, lock, backends, orchestrator) and closes it again, once."""

    def __init__(self, registry: PluginRegistry, run: RunSettings, resume: str = "allow") -> None:
        self.registry = registry
        self.resume = resume
        """Whether the run may, must or must not be in the store already."""
        self.settings = run.settings
        self.backend_options = run.backend_options
        self._registrations = registry.select_backends(self.settings.backend)
        self.store: LocalStore | None = None
        self.orchestrator: Orchestrator | None = None
        self.backends: list[BackendPlugin] = []
        self._lock: RunLock | None = None
        self._collectors: CollectorRunner | None = None
        self.frameworks: list[FrameworkPlugin] = []
        """The framework integrations attached to the run."""

    # -- opening -------------------------------------------------------------------------

    def open(self, info: RunInfo, detector: Any = None) -> tuple[RunInfo, Resumed]:
        """Create (or reopen) the run ``info`` describes and start delivering it.

        Returns the run as stored (a resumed run keeps its name, project and creation time)
        and what it resumes. On failure, everything acquired is released again.
        """
        self.backends = self._build_backends()
        store = self.store = LocalStore(self.settings.store_path)
        try:
            if store.read_only:
                raise StoreError(
                    f"the local store at {store.path} is read-only; it can be read, but a run "
                    "needs a store it can write: choose another store_path"
                )
            self._lock = store.lock_run(info.id)
            info, resumed = self._create_run(store, info)
            orchestrator = self.orchestrator = Orchestrator(
                store,
                info,
                flush_interval=self.settings.flush_interval,
                buffer_size=self.settings.buffer_size,
                capture_samples=self.settings.capture_samples,
                media_bytes=int(self.settings.media_buffer_mb * 2**20),
                max_workers=self.settings.max_workers,
                # each call waits for its journaling anyway with async_writes off
                journal_process=self.settings.journal_process and self.settings.async_writes,
            )
            orchestrator.detector = detector  # the journal writer primes its rules
            for backend in self.backends:
                orchestrator.add_backend(backend, resumed=backend.name in resumed.backends)
            orchestrator.start()  # the journal writer's start-up included
        except BaseException:
            if self.orchestrator is not None:
                self.orchestrator.abort()
            if self._lock is not None:
                self._lock.release()
            store.close()
            raise
        return info, resumed

    def _build_backends(self) -> list[BackendPlugin]:
        """Build every selected backend; bad options raise, a broken plugin is skipped."""
        built = []
        for registration in self._registrations:
            options = self.backend_options.get(registration.name, {})
            try:
                built.append(registration.build(options))
            except ValueError:  # ConfigurationError included: the user's to fix
                raise
            except Exception as error:
                report_once(
                    f"tracelet backend {registration.name!r}",
                    f"could not be created ({error!r}); skipped",
                )
        return built

    def _create_run(self, store: LocalStore, info: RunInfo) -> tuple[RunInfo, Resumed]:
        stored = store.get_run(info.id)
        self._check_resume(store, info.id, stored is not None)
        if stored is not None:
            info = attrs.evolve(
                info, name=stored.name, project=stored.project, created_at=stored.created_at
            )
        info = attrs.evolve(info, store_path=str(store.path))
        snapshot = {"settings": redact(attrs.asdict(self.settings)), "backends": self._options()}
        store.create_run(info, backends=self.settings.backend, config=snapshot)
        if stored is None:
            return info, Resumed()
        versions: dict[str, int] = {}
        for artifact in store.artifacts(info.id):
            key = bundle_name(artifact) or artifact.artifact_path
            versions[key] = max(versions.get(key, 0), artifact.version)
        steps = store.last_step(info.id) + 1 if store.metric_names(info.id) else 0
        return info, Resumed(steps, versions, frozenset(store.cursors(info.id)))

    def _check_resume(self, store: LocalStore, run_id: str, stored: bool) -> None:
        if self.resume == "must" and not stored:
            raise ConfigurationError(
                f"resume='must': the store at {store.path} has no run {run_id!r} to continue; "
                "check the run id (`tracelet list`) and store_path, or use resume='allow'"
            )
        if self.resume == "never" and stored:
            raise ConfigurationError(
                f"resume='never': the store at {store.path} already has a run {run_id!r}; "
                "give a new run id, or use resume='allow' to continue it"
            )

    def _options(self) -> dict[str, dict[str, Any]]:
        """The backend options as the journal keeps them (secrets masked)."""
        return {
            r.name: r.stored_options(self.backend_options.get(r.name, {}))
            for r in self._registrations
        }

    def start_helpers(self, experiment: Experiment) -> None:
        """Start the collectors and attach the framework integrations."""
        self._collectors = CollectorRunner.build(
            experiment, self.registry.collectors(), attrs.asdict(self.settings)
        )
        self._collectors.start()
        self.frameworks = self._attach_frameworks(experiment, self.settings)

    def _attach_frameworks(
        self, experiment: Experiment, settings: TraceletSettings
    ) -> list[FrameworkPlugin]:
        attached = []
        chosen = settings.automagic_frameworks
        for name, registration in self.registry.frameworks().items():
            if chosen and registration.selectable and name not in chosen:
                continue
            try:
                plugin = registration.build(attrs.asdict(settings))
                plugin.attach(experiment)
            except Exception as error:
                report_once(f"tracelet framework {name!r}", f"could not attach ({error!r})")
                continue
            attached.append(plugin)
        return attached

    def attach(self, experiment: Experiment, framework: FrameworkPlugin) -> None:
        """Attach ``framework`` mid-run; it is detached at stop with the others."""
        if framework not in self.frameworks:
            framework.attach(experiment)
            self.frameworks.append(framework)

    def detach(self, framework: FrameworkPlugin) -> None:
        """Detach ``framework`` now (it was attached by :meth:`attach` or at start)."""
        if framework in self.frameworks:
            self.frameworks.remove(framework)
            framework.detach()

    def value_converters(self) -> list[Callable[[Any], Any]]:
        """The ``metric_value`` of the attached frameworks that override it."""
        default = FrameworkPlugin.metric_value
        return [f.metric_value for f in self.frameworks if type(f).metric_value is not default]

    # -- closing -------------------------------------------------------------------------

    def stop_helpers(self) -> None:
        """Detach the framework integrations and stop the collectors (their last records
        are still accepted)."""
        for framework in reversed(self.frameworks):
            try:
                framework.detach()
            except Exception as error:
                report_once(f"tracelet framework {framework.name!r}", f"detach: {error!r}")
        if self._collectors is not None:
            self._collectors.stop()

    def settle(self, deadline: float) -> None:
        """Journal what is queued and announce what live detection found in it (by
        ``deadline``, a ``time.monotonic()`` value)."""
        if self.orchestrator is not None and self.orchestrator.running:
            self.orchestrator.settle(deadline)

    def close(
        self, status: RunStatus, flush_timeout: float, deadline: float | None = None
    ) -> dict[str, int]:
        """Flush within ``flush_timeout`` (or by ``deadline``), record ``status``, release
        the store and lock.

        Returns, per backend, the batches it did not accept in time (kept in the store).
        """
        assert self.orchestrator is not None
        assert self.store is not None
        undelivered = self.orchestrator.stop(status, timeout=flush_timeout, deadline=deadline)
        try:
            self.store.finish_run(self.orchestrator.run.id, status)
        except sqlite3.Error as error:  # full, read-only or gone: the lock still goes
            report_once(
                f"tracelet run {self.orchestrator.run.id}",
                f"its final status {status.value!r} could not be recorded ({error}); the "
                f"store at {self.store.path} will show it as crashed",
            )
        if self._lock is not None:
            self._lock.release(remove=True)
        if self.orchestrator.journal_in_use:  # closing it under a statement could crash
            report_once(
                f"tracelet run {self.orchestrator.run.id}",
                f"a backend's delivery was still reading the store at {self.store.path} when "
                "the run stopped (a locked database?); its connections close at exit",
            )
        else:
            self.store.close()
        return undelivered

    def abandon(self) -> None:
        """In a forked child: let go of the parent's lock without touching it."""
        if self._lock is not None:
            self._lock.abandon()

    def delivery(self) -> dict[str, DeliveryState]:
        """Where each backend's delivery stands."""
        return self.orchestrator.delivery() if self.orchestrator is not None else {}
