"""``Experiment``: one run, and everything a training loop logs into it.

Logging calls check their input at the call (so a mistake raises where it was made), then
append one record to the orchestrator's buffer and return. ``log_metric`` is the hot path:
a handful of class checks, one tuple, one append.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.core import process
from tracelet.core.artifact_logging import ArtifactLogging
from tracelet.core.collecting import CollectorRunner
from tracelet.core.orchestrator import Orchestrator
from tracelet.core.plugins import BackendPlugin, FrameworkPlugin
from tracelet.core.process import status_for
from tracelet.core.registry import PluginRegistry, default_registry, report_once
from tracelet.exceptions import ConfigurationError
from tracelet.media import PendingImage
from tracelet.records import CheckpointRequest, Params, RunInfo, RunStatus, Sample, Tags, Text
from tracelet.redaction import redact
from tracelet.settings import ExperimentConfig, TraceletSettings
from tracelet.storage import LocalStore
from tracelet.values import (
    MAX_STEP,
    check_name,
    check_run_id,
    check_step,
    check_text,
    flatten_params,
    to_metric_value,
)

if TYPE_CHECKING:
    from tracelet.storage.locks import RunLock

_time = time.time
_MAX_STEP = MAX_STEP


class Experiment(ArtifactLogging):
    """One tracked run: create it, ``start()`` it (or use ``with``), log, ``stop()``."""

    def __init__(
        self,
        name: str | None = None,
        config: ExperimentConfig | None = None,
        backend: list[str] | str | None = None,
        tags: list[str] | None = None,
        automagic: bool = False,
        automagic_config: Any = None,
        artifacts: bool = False,
        automagic_artifacts: bool = False,
        *,
        project: str | None = None,
        settings: TraceletSettings | None = None,
        backend_options: Mapping[str, Mapping[str, Any]] | None = None,
        run_id: str | None = None,
        registry: PluginRegistry | None = None,
        on_anomaly: Callable[[dict[str, Any]], object] | None = None,
        anomaly_config: Any = None,
    ) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"experiment name must be a str, not {type(name).__name__}")
        self.settings = settings if settings is not None else TraceletSettings.load()
        if backend is not None:
            self.settings = self.settings.replace(backend=backend)
        if project is not None:
            self.settings = self.settings.replace(project=project)
        self.config = config or ExperimentConfig(
            enable_automagic=automagic,
            enable_artifacts=artifacts,
            automagic_artifacts=automagic_artifacts,
        )
        self.automagic_config = automagic_config
        self._name = name or self.settings.experiment_name or _generated_name()
        self._tags = [
            check_name(t, "tag") for t in ([tags] if isinstance(tags, str) else tags or [])
        ]
        self._run_tags: dict[str, str] = dict.fromkeys(self._tags, "")
        self._backend_options = {k: dict(v) for k, v in (backend_options or {}).items()}
        self._id = uuid.uuid4().hex if run_id is None else check_run_id(run_id)
        self._created_at = _time()
        self._registry = registry
        self._on_anomaly = on_anomaly
        self._anomaly_config = anomaly_config
        self._iteration = 0
        self._status: RunStatus | None = None
        self._plugins: list[BackendPlugin] = []
        self._orchestrator: Orchestrator | None = None
        self._store: LocalStore | None = None
        self._lock: RunLock | None = None
        self._on_stop: list[Callable[[Experiment], None]] = []
        self._append: Callable[[Any], None] = self._not_running
        self._buffer: Any = ()
        self._capacity = 0
        self._stop_lock = threading.Lock()
        self._versions: dict[str, int] = {}
        self._info: RunInfo | None = None
        self._reader: LocalStore | None = None
        self._forked = False
        self._collectors: CollectorRunner | None = None
        self._frameworks: list[FrameworkPlugin] = []
        self._gradients: dict[str, float] = {}
        self.latest_system: dict[str, float] = {}
        """The latest system sample (set by the system collector)."""

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Experiment:
        """Create every backend and the run, and start accepting records."""
        if self._status is not None:
            raise RuntimeError(f"experiment {self._name!r} was already started")
        registry = self._registry or default_registry(self.settings.disable_plugins)
        registrations = registry.select_backends(self.settings.backend)
        plugins = [
            (r.name, _build(r.name, r.factory, self._backend_options.get(r.name, {})))
            for r in registrations
        ]
        self._plugins = [plugin for _, plugin in plugins if plugin is not None]
        self._store = LocalStore(self.settings.store_path)
        try:
            self._lock = self._store.lock_run(self._id)
            info, resumed_backends = self._create_run(self._store)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            self._store.close()
            raise
        self._info = info
        orchestrator = Orchestrator(
            self._store,
            info,
            flush_interval=self.settings.flush_interval,
            buffer_size=self.settings.buffer_size,
            capture_samples=self.settings.capture_samples,
        )
        if self.settings.detect_anomalies:
            from tracelet.analysis.detector import LiveDetector

            orchestrator.detector = LiveDetector(
                self._id, config=self._anomaly_config, on_anomaly=self._on_anomaly
            )
            orchestrator.detector.prime(self._recent_points(self._store))
        for name, plugin in plugins:
            if plugin is not None:
                orchestrator.add_backend(plugin, name, resumed=name in resumed_backends)
        self._orchestrator = orchestrator
        self._buffer, self._capacity = orchestrator.buffer, orchestrator.capacity
        self._append = orchestrator.buffer.append  # callers check capacity first
        orchestrator.start()
        self._status = RunStatus.RUNNING
        if self._run_tags:
            self._append(Tags(dict(self._run_tags)))
        process.watch()
        process.running.add(self)
        self._collectors = CollectorRunner.build(self, registry.collectors(), self._tracking())
        self._collectors.start()
        self._frameworks = self._attach_frameworks(registry)
        registry.announce("tracelet_run_started", experiment=self)
        return self

    def _attach_frameworks(self, registry: PluginRegistry) -> list[FrameworkPlugin]:
        """Attach every registered framework integration; a failing one is skipped."""
        attached = []
        chosen = self.settings.automagic_frameworks
        for name, registration in registry.frameworks().items():
            if chosen and registration.selectable and name not in chosen:
                continue
            try:
                plugin = registration.factory()
                plugin.initialize(attrs.asdict(self.settings))
                plugin.attach(self)
            except Exception as error:
                report_once(f"tracelet framework {name!r}", f"could not attach ({error!r})")
                continue
            attached.append(plugin)
        return attached

    def _tracking(self) -> dict[str, Any]:
        """The settings as collectors see them, switched off where ``config`` says so."""
        tracking = attrs.asdict(self.settings)
        tracking["track_system"] &= self.config.track_system_metrics
        tracking["track_env"] &= self.config.track_environment
        tracking["track_git"] &= self.config.track_git
        return tracking

    def _create_run(self, store: LocalStore) -> tuple[RunInfo, set[str]]:
        """Create (or reopen) the run; return it and the backends that already delivered
        to it (those are told they resume it)."""
        stored = store.get_run(self._id)
        if stored is not None:
            self._name, self._created_at = stored.name, stored.created_at
            self.settings = self.settings.replace(project=stored.project)
        info = RunInfo(
            id=self._id,
            name=self._name,
            project=self.settings.project,
            created_at=self._created_at,
            tags=tuple(self._tags),
            store_path=str(store.path),
        )
        snapshot = redact(
            {"settings": attrs.asdict(self.settings), "backends": self._backend_options}
        )
        store.create_run(info, backends=self.settings.backend, config=snapshot)
        if stored is None:
            return info, set()
        self._iteration = store.last_step(self._id)
        for artifact in store.artifacts(self._id):
            key = (
                artifact.name
                if artifact.artifact_path.startswith(f"{artifact.name}/")
                else (artifact.artifact_path)
            )
            self._versions[key] = max(self._versions.get(key, 0), artifact.version)
        return info, set(store.cursors(self._id))

    def _recent_points(self, store: LocalStore, batches: int = 64) -> list[Any]:
        """The metric points of the run's last ``batches`` batches (none for a new run), to
        give the live detector a resumed run's recent history."""
        last = store.last_seq(self._id)
        recent = store.read_batches(self._id, max(0, last - batches), last, limit=batches)
        return [point for batch in recent for point in batch.metrics]

    def stop(self, status: RunStatus | str = RunStatus.FINISHED) -> None:
        """Flush everything, finish the run with ``status``, and release its resources.

        Waits at most ``settings.flush_timeout`` seconds for backends; whatever a backend has
        not accepted by then stays in the local store (and is reported). Calling ``stop`` on
        a stopped experiment does nothing.
        """
        status = RunStatus.parse(status)
        with self._stop_lock:
            if self._status is not RunStatus.RUNNING or self._forked:
                return
            for framework in reversed(self._frameworks):
                try:
                    framework.detach()
                except Exception as error:
                    report_once(f"tracelet framework {framework.name!r}", f"detach: {error!r}")
            if self._collectors is not None:
                self._collectors.stop()
            self._append = self._not_running
            assert self._orchestrator is not None
            assert self._store is not None
            undelivered = self._orchestrator.stop(status, timeout=self.settings.flush_timeout)
            for backend, batches in undelivered.items():
                report_once(
                    f"tracelet run {self._id}",
                    f"backend {backend!r} did not accept {batches} batch(es) before the "
                    f"{self.settings.flush_timeout:g}s flush timeout; they are kept in the "
                    f"local store at {self._store.path}",
                )
            self._store.finish_run(self._id, status)
            if self._lock is not None:
                self._lock.release(remove=True)
            self._store.close()
            self._status = status
            process.running.discard(self)
        (self._registry or default_registry(self.settings.disable_plugins)).announce(
            "tracelet_run_finished", experiment=self, status=status
        )
        for callback in self._on_stop:
            callback(self)

    def end(self) -> None:
        """Alias of :meth:`stop`."""
        self.stop()

    def flush(self, timeout: float | None = None) -> bool:
        """Journal everything logged so far; wait up to ``timeout`` for every backend.

        Returns whether every backend is up to date (after ``stop``: at once, no waiting).
        """
        if self._orchestrator is None:
            return True
        if not self.is_running:
            return not self._orchestrator.undelivered()
        return self._orchestrator.flush(timeout)

    def __enter__(self) -> Experiment:
        if self._status is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> None:
        self.stop(status_for(kind))

    # -- logging -------------------------------------------------------------------------

    def log_metric(
        self, name: str, value: Any, iteration: int | None = None, *, step: int | None = None
    ) -> None:
        """Log one scalar. The step is ``iteration`` (or ``step=``), else the current iteration."""
        if value.__class__ is not float:
            value = to_metric_value(name, value)
        if name.__class__ is not str or not name:
            name = check_name(name)
        if iteration is None:
            iteration = self._iteration if step is None else step
        elif step is not None:
            raise TypeError(f"metric {name!r}: give the step once, as iteration or as step=")
        if iteration.__class__ is not int or not 0 <= iteration <= _MAX_STEP:
            iteration = check_step(iteration, name)
        if len(self._buffer) >= self._capacity:
            self._full()
        self._append((name, value, iteration, _time()))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several scalars at one step (the current iteration when ``step`` is None)."""
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a dict of name to value, not {type(metrics).__name__}"
            )
        step = self._iteration if step is None else check_step(step)
        points = [(check_name(n), to_metric_value(n, v), step, _time()) for n, v in metrics.items()]
        for point in points:
            self._put(point)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested dicts are flattened with ``/`` (``{"opt": {"lr": 1}}`` -> ``opt/lr``)."""  # noqa: E501
        self._put(Params(flatten_params(params)))

    def log_hyperparameter(self, name: str, value: Any) -> None:
        """Log one parameter."""
        self.log_params({check_name(name, "parameter"): value})

    def set_iteration(self, iteration: int) -> None:
        """Set the step used by logging calls that give none."""
        self._iteration = check_step(iteration)

    def step(self) -> int:
        """Finish the current step: advance by one, and write a checkpoint every
        ``checkpoint_interval`` steps. Returns the new step."""
        done = self._iteration
        self._iteration = done + 1
        interval = self.settings.checkpoint_interval
        if interval and self._iteration % interval == 0:
            self.checkpoint(done)
        return self._iteration

    def checkpoint(self, step: int | None = None) -> None:
        """Write a checkpoint of ``step`` (default: the current step) now.

        It gathers the metrics logged at that step, the latest gradient statistics and
        system sample, and the samples logged since the previous checkpoint.
        """
        step = self._step(step)
        self._put(CheckpointRequest(step, _time(), self._gradients, self.latest_system))

    def log_sample(self, sample: Any) -> None:
        """Keep a sample record (any JSON-able object) with the next checkpoint.

        At most ``capture_samples`` (the most recent) are kept per checkpoint.
        """
        try:
            data = json.dumps(sample, allow_nan=True)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"a sample must be JSON-able (dict, list, str, numbers): {error}"
            ) from None
        self._put(Sample(data, self._iteration, _time()))

    def log_gradient_stats(self, stats: Mapping[str, Any], step: int | None = None) -> None:
        """Log gradient statistics (``{"total_norm": 1.3, ...}``) as ``grad/...`` metrics; the
        latest are kept with each checkpoint."""
        values = {f"grad/{name}": value for name, value in stats.items()}
        self.log_metrics(values, step)
        self._gradients = {k: to_metric_value(k, v) for k, v in values.items()}

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        """Log a piece of text at ``step`` (default: the current iteration)."""
        if not isinstance(text, str):
            raise TypeError(f"text {name!r} must be a str, not {type(text).__name__}")
        check_text(text)
        self._put(Text(check_name(name, "text"), text, self._step(step), _time()))

    def log_image(self, name: str, image: Any, step: int | None = None) -> None:
        """Log an image: a NumPy array (HW, HWC or CHW), a tensor, a PIL image, PNG bytes or
        a path. The pixels are copied now and encoded off the training thread."""
        check_name(name, "image")
        self._put(PendingImage.snapshot(name, image, self._step(step), _time()))

    def capture_hyperparams(self) -> dict[str, Any]:
        """Log the caller's local variables that look like hyperparameters; return them.

        Public names bound to numbers, bools, short strings or short lists of those are
        kept (``lr = 0.01``, ``layers = [64, 32]``); modules, functions and objects are not.
        """
        from tracelet.automagic import hyperparameters_in

        caller = sys._getframe(1)
        found = hyperparameters_in(caller.f_locals)
        if found:
            self.log_params(found)
        return found

    def capture_model(self, model: Any) -> dict[str, Any]:
        """Log a description of ``model`` as ``model/...`` parameters; return it."""
        from tracelet.automagic import describe_model

        found = describe_model(model)
        self.log_params({"model": found})
        return found

    def capture_dataset(self, dataset: Any) -> dict[str, Any]:
        """Log a description of ``dataset`` as ``dataset/...`` parameters; return it."""
        from tracelet.automagic import describe_dataset

        found = describe_dataset(dataset)
        self.log_params({"dataset": found})
        return found

    def _put(self, record: Any) -> None:
        if len(self._buffer) >= self._capacity:
            self._full()
        self._append(record)

    def _full(self) -> None:
        if self._orchestrator is not None:
            self._orchestrator.wait_for_room()

    def _step(self, step: int | None) -> int:
        return self._iteration if step is None else check_step(step)

    def _disown(self) -> None:
        """In a forked child: the run belongs to the parent; logging here raises."""
        self._forked = True
        self._append = self._in_forked_child
        if self._lock is not None:
            self._lock.abandon()

    def _in_forked_child(self, record: object) -> None:
        raise RuntimeError(
            f"this process was forked from the one running experiment {self._name!r}; its "
            "records would be lost here. Log from the parent, or start a run in this process"
        )

    def _not_running(self, record: object) -> None:
        if self._status is None:
            raise RuntimeError(
                f"experiment {self._name!r} has not been started; call start() first"
            )
        raise RuntimeError(
            f"experiment {self._name!r} has stopped; start a new run to log more "
            "(tracelet.start_logging, or Experiment(run_id=...) to resume this one)"
        )

    # -- properties ----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The run's unique id (32 hex digits)."""
        return self._id

    experiment_id = id

    @property
    def name(self) -> str:
        """The run's name."""
        return self._name

    @property
    def project(self) -> str:
        """The project the run belongs to."""
        return self.settings.project

    @property
    def iteration(self) -> int:
        """The current step."""
        return self._iteration

    @property
    def created_at(self) -> dt.datetime:
        """When the run was created (UTC)."""
        return dt.datetime.fromtimestamp(self._created_at, tz=dt.UTC)

    @property
    def tags(self) -> list[str]:
        """The run's tags."""
        return list(self._tags)

    @property
    def backends(self) -> list[BackendPlugin]:
        """The backend plugins receiving this run (each has ``.name``)."""
        return list(self._plugins)

    @property
    def run_info(self) -> RunInfo:
        """What backends know about the run."""
        if self._info is None:
            raise RuntimeError(f"experiment {self._name!r} has not been started")
        return self._info

    @property
    def status(self) -> RunStatus | None:
        """The run's status; None before ``start``."""
        return self._status

    @property
    def is_running(self) -> bool:
        """Whether the run accepts records (in this process)."""
        return self._status is RunStatus.RUNNING and not self._forked

    @property
    def store(self) -> LocalStore:
        """The local store journaling this run (a reading handle after ``stop``)."""
        if self.is_running and self._store is not None:
            return self._store
        if self._reader is None:
            self._reader = LocalStore(self.settings.store_path)
        return self._reader

    def add_tags(self, tags: Iterable[str] | Mapping[str, str]) -> None:
        """Tag the run: bare tags (``["pytorch"]``) or key/value tags (``{"team": "ml"}``)."""
        if isinstance(tags, str):
            tags = [tags]
        values = dict(tags) if isinstance(tags, Mapping) else dict.fromkeys(tags, "")
        for key, value in values.items():
            check_name(key, "tag")
            if not isinstance(value, str):
                raise TypeError(f"tag {key!r}: value must be a str, not {type(value).__name__}")
        self._tags.extend(k for k, v in values.items() if not v and k not in self._tags)
        self._run_tags.update(values)
        if self.is_running:
            self._put(Tags(values))

    def __repr__(self) -> str:
        state = self._status.value if self._status else "not started"
        return f"<Experiment {self._name!r} id={self._id[:8]} project={self.project!r} {state}>"


def _build(
    name: str, factory: Callable[[], BackendPlugin], options: Mapping[str, Any]
) -> BackendPlugin | None:
    """Build and configure one backend; a bad option raises, a broken plugin is skipped."""
    try:
        plugin = factory()
        plugin.initialize(options)
    except ConfigurationError:
        raise
    except Exception as error:
        report_once(f"tracelet backend {name!r}", f"could not be created ({error!r}); skipped")
        return None
    return plugin


def _generated_name() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
