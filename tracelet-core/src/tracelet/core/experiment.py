"""``Experiment``: one run, and everything a training loop logs into it.

The public face of a run. Configuration is resolved once, in the constructor
(:func:`tracelet.settings.resolve_run`); between ``start`` and ``stop`` a
:class:`~tracelet.core.session.RunSession` owns the store, the orchestrator, the backends,
the collectors and the framework integrations. Logging calls check their input at the call
(so a mistake raises where it was made), then append one record to the orchestrator's
buffer and return. ``log_metric`` is the hot path: a handful of class checks, one tuple,
one append, compiled where tracelet-core was built with a C compiler (``_hotpath.c``, the
class's base), else in Python (``Experiment._log_metric_checked``, the same checks).

This module is longer than our usual 400 lines for one reason: ``Experiment`` is a run's
whole public surface as the spec lists it (some forty methods and properties). Each is a
few lines that check input and hand over to the session, the orchestrator's buffer or the
artifact logger; splitting the class would only scatter that surface.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.automagic import AutomagicConfig
from tracelet.core import process
from tracelet.core.artifact_logging import ArtifactLogger
from tracelet.core.collecting import CollectorRunner
from tracelet.core.orchestrator import Orchestrator
from tracelet.core.points import plain_names, step_points
from tracelet.core.process import status_for
from tracelet.core.registry import PluginRegistry, how_to_install, registry_for
from tracelet.core.session import RunSession
from tracelet.distributed import RankInfo, SamplePublisher, current_rank
from tracelet.forks import fork_safe
from tracelet.gradients import selected_stats
from tracelet.histograms import bin_values, check_bins_given
from tracelet.media import PendingImage
from tracelet.plugins import BackendPlugin, FrameworkPlugin, PendingValue
from tracelet.records import (
    CheckpointRequest,
    DeliveryPhase,
    DeliveryState,
    Histogram,
    Params,
    PendingMetric,
    RunInfo,
    RunStatus,
    Sample,
    Tags,
    Text,
)
from tracelet.redaction import redact_params
from tracelet.reporting import logger, report_once
from tracelet.settings import ExperimentConfig, TraceletSettings, resolve_run, run_identity
from tracelet.storage import LocalStore
from tracelet.values import (
    check_name,
    check_run_id,
    check_step,
    check_text,
    flatten_params,
    to_metric_value,
)

try:  # log_metric's fast path, compiled (optional: built where a C compiler was found)
    from tracelet.core._hotpath import HotPath
except ImportError:  # the pure-Python log_metric below does the same
    HotPath = object

if TYPE_CHECKING:
    from tracelet.artifacts import ArtifactResult, ArtifactType, TraceletArtifact

_time = time.time  # (the compiled log_metric reads the same clock itself)
_INLINE_STEP_MAX = 2**30 - 1
"""The largest step checked inline: the largest one-digit int (CPython's ints have 30-bit
digits), as only a comparison of two one-digit ints is specialised by CPython 3.11 (against
``MAX_STEP`` it is not: 10 ns a call). Larger steps go through ``check_step``."""
_FLOAT_ONLY = frozenset((float,))
MAX_CHECKED_NAMES = 10_000
"""Metric names remembered as checked (a set lookup on the hot path); then forgotten."""


class Experiment(HotPath):
    """One tracked run: create it, ``start()`` it (or use ``with``), log, ``stop()``.

    ``config`` (an :class:`ExperimentConfig`), ``automagic``, ``artifacts`` and
    ``automagic_artifacts`` are per-run synonyms of settings; ``options`` takes what
    ``start_logging``'s ``config=`` takes (settings, run keys, backend options in any form),
    ``backend_options`` the nested form only. ``run_id`` names the run: a run the store
    already holds is continued, its steps going on from its last one, as ``resume`` allows
    (``"allow"``, ``"must"``, ``"never"``; see :func:`tracelet.start_logging`).
    ``automagic_config`` (an
    :class:`~tracelet.automagic.AutomagicConfig`, or a dict of its fields) says what
    automagic capture looks at.
    """

    def __init__(
        self,
        name: str | None = None,
        config: ExperimentConfig | None = None,
        backend: list[str] | str | None = None,
        tags: list[str] | None = None,
        automagic: bool = False,
        automagic_config: AutomagicConfig | Mapping[str, Any] | None = None,
        artifacts: bool = False,
        automagic_artifacts: bool = False,
        *,
        project: str | None = None,
        settings: TraceletSettings | None = None,
        options: Mapping[str, Any] | None = None,
        backend_options: Mapping[str, Mapping[str, Any]] | None = None,
        run_id: str | None = None,
        resume: str | None = None,
        registry: PluginRegistry | None = None,
        on_anomaly: Callable[[dict[str, Any]], object] | None = None,
        anomaly_config: Any = None,
    ) -> None:
        if name is not None:
            if not isinstance(name, str):
                raise TypeError(f"experiment name must be a str, not {type(name).__name__}")
            name = check_text(name, "experiment name")  # (a plain str, sent to the writer)
        if config is not None and not isinstance(config, ExperimentConfig):
            raise TypeError(
                f"config must be an ExperimentConfig, not {type(config).__name__} "
                "(a dict of settings goes to tracelet.start_logging(config=...) or options=)"
            )
        self._registry = registry
        self.automagic_config = _automagic_config(automagic_config)
        """What automagic capture looks at (:class:`~tracelet.automagic.AutomagicConfig`)."""
        flags = {"enable_automagic": automagic, "enable_artifacts": artifacts}
        flags["automagic_artifacts"] = automagic_artifacts
        run = resolve_run(
            self._declared_options,
            settings=settings,
            config=options,
            experiment_config=config,
            backend_options=backend_options,
            arguments={
                "project": project,
                "backend": backend,
                "automagic_frameworks": self.automagic_config.frameworks,
                **{k: True for k, v in flags.items() if v},
            },
        )
        self.settings = run.settings
        self.config = config or ExperimentConfig(**flags)
        self._run = run
        keys = run.run_keys
        self._name = name or keys.get("run_name") or self.settings.experiment_name or _new_name()
        self._on_anomaly = on_anomaly or keys.get("on_anomaly")
        self._anomaly_config = anomaly_config or keys.get("anomaly_config")
        self._tags: list[str] = []
        self._run_tags: dict[str, str] = {}
        run_id, self._resume = run_identity(
            keys.get("run_id") if run_id is None else run_id,
            keys.get("resume") if resume is None else resume,
        )
        self._id = uuid.uuid4().hex if run_id is None else check_run_id(run_id)
        self._id_given = run_id is not None
        self._created_at = _time()
        self._iteration = 0
        self._status: RunStatus | None = None
        self._session: RunSession | None = None
        self._info: RunInfo | None = None
        self._artifacts: ArtifactLogger | None = None
        self._reader: LocalStore | None = None
        self._forked = False
        self._rank: RankInfo | None = None
        self._silent = False
        """On a rank other than zero (without ``log_all_ranks``): every call is a no-op."""
        self._publisher: CollectorRunner | None = None
        """On a silent rank: the system collector, its samples sent to rank zero."""
        self._stop_lock = fork_safe(threading.Lock())  # a forked child may stop it
        self._on_stop: list[Callable[[Experiment], object]] = []
        self._append: Callable[[Any], None] = self._not_running
        self._append_metric: Callable[[Any], None] = self._not_running
        self._extend_metrics: Callable[[list[Any]], None] | None = None
        """Queues a step's points at once (None: each goes through ``_append_metric``)."""
        self._put_step: Callable[[Mapping[str, float], int, float], bool] | None = None
        """Queues a step's checked points as one record if there is room (None: never)."""
        self._buffer: Any = ()
        self._capacity = 0
        self._gradients: dict[str, float] = {}
        self._checked_names: set[str] = set()
        self._value_converters: list[Callable[[Any], float | PendingValue | None]] = []
        """The attached frameworks' ``metric_value`` (tensors as metric values)."""
        self.latest_system: dict[str, float] = {}
        """The latest system sample (set by the system collector)."""
        self.add_tags([tags] if isinstance(tags, str) else tags or [])
        self.add_tags(keys.get("tags") or [])
        if keys.get("notes"):
            self.add_tags({"notes": str(keys["notes"])})

    def _declared_options(self, settings: TraceletSettings) -> dict[str, frozenset[str]]:
        self._registry = self._registry or registry_for(settings)
        return {r.name: r.option_names for r in self._registry.select_backends(settings.backend)}

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> Experiment:
        """Create every backend and the run, and start accepting records."""
        if self._status is not None:
            raise RuntimeError(f"experiment {self._name!r} was already started")
        assert self._registry is not None
        rank = self._rank = current_rank()
        if rank.distributed and self.settings.log_all_ranks:
            self._join_rank_group(rank)
        elif rank.distributed and not rank.is_zero:
            return self._start_silent(rank)
        session = RunSession(self._registry, self._run, self._resume)
        info = RunInfo(self._id, self._name, self.settings.project, self._created_at)
        info, resumed = session.open(info, self._live_detector())
        self._session, self._info = session, info
        self._name, self._created_at = info.name, info.created_at
        self.settings = self.settings.replace(project=info.project)
        self._iteration = resumed.iteration
        assert session.store is not None
        assert session.orchestrator is not None
        orchestrator = session.orchestrator
        self._buffer = orchestrator.buffer
        self._capacity = min(orchestrator.capacity, sys.maxsize)  # (a C Py_ssize_t)
        # Metric points: the hot path checks capacity, then appends a point, or queues a step
        # as one record (put_step; else its points at once). Other records are also counted
        # in bytes. Without async writes, each call journals before it returns.
        queued, tracked = self.settings.async_writes, self.settings.track_metrics
        self._append = orchestrator.put if queued else orchestrator.put_journaled
        append_metric = orchestrator.buffer.append if queued else self._append
        self._append_metric = append_metric if tracked else _dropped
        self._extend_metrics = orchestrator.buffer.extend if queued and tracked else None
        self._put_step = orchestrator.put_step if queued and tracked else None
        self._artifacts = ArtifactLogger(
            info, session.store, self._put, session.backends, resumed.versions
        )
        self._status = RunStatus.RUNNING
        if self._run_tags:
            self._append(Tags(dict(self._run_tags)))
        process.watch()
        process.running.add(self)
        session.start_helpers(self)
        self._value_converters = session.value_converters()
        self._registry.announce("tracelet_run_started", experiment=self)
        if self.settings.enable_automagic and self.automagic_config.hyperparameters:
            from tracelet.automagic import hyperparameters_in, users_namespace

            found = hyperparameters_in(users_namespace(), self.automagic_config)
            if found:
                self.log_params(found)
        return self

    def _join_rank_group(self, rank: RankInfo) -> None:
        """With ``log_all_ranks``: this rank's own run, named and tagged by its rank, in
        the group of the job's runs (``tracelet.group``: the run's name)."""
        group = self._name
        if not rank.is_zero and self._id_given:  # (each rank resumes its own run)
            self._id = check_run_id(f"{self._id}-rank{rank.rank}")
        self._name = f"{group}-rank{rank.rank}"
        self.add_tags({"tracelet.group": group, "tracelet.rank": str(rank.rank)})

    def _start_silent(self, rank: RankInfo) -> Experiment:
        """A rank other than zero: no run, no store; logging calls are cheap no-ops, and
        only system samples are taken, for rank zero's run."""
        self._silent = True
        logger.info(
            "tracelet: rank %d of %d (from %s) records nothing; rank 0 logs the run "
            "(log_all_ranks=True gives each rank a run of its own)",
            rank.rank,
            rank.world_size,
            rank.source,
        )
        self._info = RunInfo(self._id, self._name, self.settings.project, self._created_at)
        self._append = self._append_metric = _dropped
        self._capacity = sys.maxsize
        self._status = RunStatus.RUNNING
        assert self._registry is not None
        system = {k: v for k, v in self._registry.collectors().items() if k == "system"}
        publisher = SamplePublisher(rank)
        self._publisher = CollectorRunner.build(publisher, system, attrs.asdict(self.settings))
        self._publisher.start()
        process.running.add(self)
        return self

    def _live_detector(self) -> Any:
        if not self.settings.detect_anomalies:
            return None
        from tracelet.analysis.detector import LiveDetector

        return LiveDetector(self._id, config=self._anomaly_config, on_anomaly=self._on_anomaly)

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
            if self._silent:
                self._stop_silent(status)
                return
            assert self._session is not None
            assert self._registry is not None
            process.stopping.add(self)
            self._session.stop_helpers()
            timeout = self.settings.flush_timeout
            deadline = time.monotonic() + timeout
            self._session.settle(deadline)  # an on_anomaly callback may still log
            self._append = self._append_metric = self._not_running
            self._extend_metrics = self._put_step = None
            undelivered = self._session.close(status, timeout, deadline)
            failed = {n for n, s in self.delivery.items() if s.phase is DeliveryPhase.FAILED}
            for backend, batches in undelivered.items():
                if backend in failed:  # reported when it failed, with what to do
                    continue
                report_once(
                    f"tracelet run {self._id}",
                    f"backend {backend!r} did not accept {batches} batch(es) before the "
                    f"{self.settings.flush_timeout:g}s flush timeout; they are kept in the "
                    f"local store at {self.settings.store_path} (`tracelet sync` delivers them)",
                )
            self._status = status
            process.running.discard(self)
            process.stopping.discard(self)
        self._registry.announce("tracelet_run_finished", experiment=self, status=status)
        for callback in self._on_stop:
            callback(self)
        process.terminate_if_signalled()

    def _stop_silent(self, status: RunStatus) -> None:
        if self._publisher is not None:
            self._publisher.stop()
        self._append = self._append_metric = self._not_running
        self._status = status
        process.running.discard(self)
        for callback in self._on_stop:
            callback(self)

    def end(self) -> None:
        """Alias of :meth:`stop`."""
        self.stop()

    def on_stop(self, callback: Callable[[Experiment], object]) -> Callable[[Experiment], object]:
        """Call ``callback(experiment)`` once the run has stopped; returns ``callback``."""
        self._on_stop.append(callback)
        return callback

    def attach_framework(self, framework: FrameworkPlugin) -> FrameworkPlugin:
        """Attach a framework integration to the running run (``watch`` does); it is
        detached at stop, or by :meth:`detach_framework`. Returns ``framework``."""
        if not isinstance(framework, FrameworkPlugin):
            raise TypeError(
                f"attach_framework takes a tracelet.plugins.FrameworkPlugin, not "
                f"{type(framework).__name__}"
            )
        if self._silent and self.is_running:
            return framework  # (a rank that does not log: nothing to route)
        if self._status is not RunStatus.RUNNING or self._session is None:
            self._not_running(framework)
        assert self._session is not None
        self._session.attach(self, framework)
        self._value_converters = self._session.value_converters()
        return framework

    def detach_framework(self, framework: FrameworkPlugin) -> None:
        """Detach an integration attached by :meth:`attach_framework` (or at start)."""
        if self._session is not None:
            self._session.detach(framework)
            self._value_converters = self._session.value_converters()

    def watch(self, model: Any, **options: Any) -> Any:
        """Track ``model``'s per-layer gradient and weight statistics every ``log_freq``
        optimizer steps (needs ``tracelet-torch``; see ``docs/integrations/watch.md``)."""
        return _torch_integration("watch").watch(self, model, **options)

    def unwatch(self, model: Any = None) -> None:
        """Stop watching ``model`` (default: every watched model), removing every hook."""
        _torch_integration("unwatch").unwatch(self, model)

    def flush(self, timeout: float | None = None) -> bool:
        """Journal everything logged so far; wait up to ``timeout`` for every backend.

        Returns whether every backend is up to date (after ``stop``: at once, no waiting).
        """
        orchestrator = self._session.orchestrator if self._session else None
        if orchestrator is None:
            return True
        if not self.is_running:
            return not orchestrator.undelivered()
        return orchestrator.flush(timeout)

    def __enter__(self) -> Experiment:
        if self._status is None:
            self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: object, tb: object) -> None:
        self.stop(status_for(kind, error))

    # -- logging -------------------------------------------------------------------------

    def log_metric(
        self, name: str, value: Any, iteration: int | None = None, step: int | None = None
    ) -> None:
        """Log one scalar. The step is ``iteration`` (or ``step=``), else the current iteration."""
        # The hot path: every test below is the cheapest that lets a plain float, a name seen
        # before and an int step through (``step`` is not keyword-only: CPython 3.11 does
        # not specialise calls to functions with keyword-only parameters, 30 ns a call).
        if (
            value.__class__ is not float
            or name.__class__ is not str
            or name not in self._checked_names
        ):
            name, value = self._checked_metric(name, value)
            if value.__class__ is not float:  # a framework's pending value (a GPU tensor)
                self._log_pending(name, value, iteration, step)
                return
        if iteration is None:
            iteration = self._iteration if step is None else step
        elif step is not None:
            raise TypeError(f"metric {name!r}: give the step once, as iteration or as step=")
        if iteration.__class__ is not int or iteration < 0 or iteration > _INLINE_STEP_MAX:
            iteration = check_step(iteration, name)
        if len(self._buffer) >= self._capacity:
            self._full()
        append = self._append_metric  # (as self._append_metric(...), a call of an instance
        # attribute, its lookup is not specialised: 10-15 ns)
        append((name, value, iteration, _time()))

    _log_metric_checked = log_metric
    """``log_metric`` in Python: all of it where the compiled hot path is not built, else
    every call that path does not take (a new name, a tensor, a bad step, a full buffer)."""
    if HotPath is not object:
        log_metric = HotPath.log_metric  # the same fast path in C: half the cost a call

    def _checked_metric(self, name: Any, value: Any) -> tuple[str, float | PendingValue]:
        """Check a metric's value (converted to a float, or a framework's pending value)
        and a name not seen before."""
        if value.__class__ is not float:
            value = self._metric_value(name, value)
        if name.__class__ is not str or name not in self._checked_names:
            name = self._check_metric_name(name)
        return name, value

    def _metric_value(self, name: Any, value: Any) -> float | PendingValue:
        """A value that is not a plain float: a number, else what an attached framework
        makes of it (a tensor), else a TypeError naming the metric."""
        if self._silent:  # a rank that does not log: no conversion, no device sync
            return 0.0
        if value.__class__ is not int and value.__class__ is not bool:
            for convert in self._value_converters:
                converted = convert(value)
                if converted is None:
                    continue
                if converted.__class__ is float or hasattr(converted, "result"):
                    return converted  # a float, or a PendingValue
                return to_metric_value(name, converted)  # an int, a bool: checked as any
        return to_metric_value(name, value)

    def _log_pending(
        self, name: str, value: PendingValue, iteration: int | None, step: int | None
    ) -> None:
        """Queue a point whose value the dispatcher resolves off the training thread."""
        if iteration is not None and step is not None:
            raise TypeError(f"metric {name!r}: give the step once, as iteration or as step=")
        given = iteration if step is None else step
        at = self._iteration if given is None else check_step(given, name)
        self._extend_all([PendingMetric(name, value, at, _time())])

    def _check_metric_name(self, name: Any) -> str:
        """Check a metric name not seen before (type, emptiness, storable UTF-8)."""
        name = check_name(name)
        if len(self._checked_names) >= MAX_CHECKED_NAMES:
            self._checked_names.clear()
        self._checked_names.add(name)
        return name

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log several scalars at one step (the current iteration when ``step`` is None),
        with one timestamp. All are checked before any is queued: a bad one logs none."""
        if metrics.__class__ is not dict and not isinstance(metrics, Mapping):
            raise TypeError(
                f"metrics must be a dict of name to value, not {type(metrics).__name__}"
            )
        if step is None:
            step = self._iteration
        elif step.__class__ is not int or step < 0 or step > _INLINE_STEP_MAX:
            step = check_step(step)
        now = _time()  # one moment for the whole call
        if self._checked_names.issuperset(metrics) and _FLOAT_ONLY.issuperset(
            map(type, metrics.values())
        ):  # names seen before, plain floats: nothing to check (the tests run in C)
            put_step = self._put_step  # (read once: a stop on another thread sets it to None)
            if put_step is not None and put_step(metrics, step, now):
                return  # the step queued as one record: its points are made off this thread
            points = step_points(metrics, step, now)
        else:
            points = [(*self._checked_metric(n, v), step, now) for n, v in metrics.items()]
            if any(point[1].__class__ is not float for point in points):
                points = [p if p[1].__class__ is float else PendingMetric(*p) for p in points]
                self._extend_all(points)
                return
        extend = self._extend_metrics  # (read once, as put_step)
        if extend is not None and len(self._buffer) + len(points) <= self._capacity:
            extend(points)  # one call for the whole step (as atomic as append)
            return
        self._extend_all(points)

    def _extend_all(self, points: Sequence[Any]) -> None:
        """Queue ``points`` one by one, waiting for room as needed."""
        for point in points:
            if len(self._buffer) >= self._capacity:
                self._full()
            self._append_metric(point)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; nested dicts are flattened with ``/`` (``{"opt": {"lr": 1}}`` ->
        ``opt/lr``). Values named like secrets (``db/password``) are masked, and URIs lose
        their credentials, unless ``redact_secrets`` is off."""
        values = flatten_params(params)
        self._put(Params(redact_params(values) if self.settings.redact_secrets else values))

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
        if interval and self._iteration % interval == 0 and self.settings.track_checkpoints:
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
        """Log gradient statistics (``{"total_norm": 1.3, "fc1.weight/norm": 0.2}``) as
        ``grad/...`` metrics; the latest of each name are kept with each checkpoint.

        Nothing is kept with ``track_gradients`` off; with ``gradient_layers``, per-layer
        statistics only of those layers (see :mod:`tracelet.gradients`)."""
        if not isinstance(stats, Mapping):
            raise TypeError(f"stats must be a dict of name to value, not {type(stats).__name__}")
        if self._silent and self.is_running:  # (no tensor is read off its device)
            return
        stats = plain_names(stats)  # a str enum member: its value, not Kind.A
        checked = {check_name(f"grad/{n}"): to_metric_value(n, v) for n, v in stats.items()}
        if not self.settings.track_gradients:
            return
        layers = self.settings.gradient_layers
        values = {f"grad/{n}": checked[f"grad/{n}"] for n in selected_stats(stats, layers)}
        self.log_metrics(values, step)
        self._gradients = {**self._gradients, **values}  # several models, several optimizers

    def log_text(self, name: str, text: str, step: int | None = None) -> None:
        """Log a piece of text at ``step`` (default: the current iteration)."""
        if not isinstance(text, str):
            raise TypeError(f"text {name!r} must be a str, not {type(text).__name__}")
        text = check_text(text)  # (as every name and text queued: a plain str)
        self._put(Text(check_name(name, "text"), text, self._step(step), _time()))

    def log_histogram(
        self,
        name: str,
        values: Any = None,
        step: int | None = None,
        *,
        bins: int = 64,
        counts: Sequence[float] | None = None,
        edges: Sequence[float] | None = None,
    ) -> None:
        """Log the distribution of ``values`` (numbers, a NumPy array or a tensor) at
        ``step``, binned now into ``bins`` equal bins (at most 512); only the counts and
        edges are kept. Or give the bins yourself: ``counts`` and ``edges`` (one more
        edge than counts), as ``numpy.histogram`` returns them."""
        name = check_name(name, "histogram")
        if self._silent and self.is_running:
            return
        if (values is None) == (counts is None and edges is None):
            raise TypeError(f"histogram {name!r}: give either values or counts and edges")
        if values is not None:
            binned, limits, nonfinite = bin_values(values, bins)
        elif counts is None or edges is None:
            raise TypeError(f"histogram {name!r}: counts and edges go together")
        else:
            (binned, limits), nonfinite = check_bins_given(counts, edges), 0
        self._put(Histogram(name, self._step(step), _time(), binned, limits, nonfinite))

    def log_image(self, name: str, image: Any, step: int | None = None) -> None:
        """Log an image: a NumPy array (HW, HWC or CHW), a tensor, a PIL image, PNG bytes or
        a path. The pixels are copied now and encoded off the training thread; while the
        images waiting to be encoded hold ``media_buffer_mb`` or more, the call waits."""
        name = check_name(name, "image")
        if self._silent and self.is_running:
            return
        pending = PendingImage.snapshot(name, image, self._step(step), _time())
        self._append(pending)  # refuses it when the run is not running

    def add_tags(self, tags: Iterable[str] | Mapping[str, str]) -> None:
        """Tag the run: bare tags (``["pytorch"]``) or key/value tags (``{"team": "ml"}``)."""
        if isinstance(tags, str):
            tags = [tags]
        given = dict(tags) if isinstance(tags, Mapping) else dict.fromkeys(tags, "")
        values: dict[str, str] = {}
        for key, value in given.items():
            if not isinstance(value, str):
                raise TypeError(f"tag {key!r}: value must be a str, not {type(value).__name__}")
            values[check_name(key, "tag")] = check_text(value, f"tag {key!r} value")
        if self.settings.redact_secrets:
            values = redact_params(values)
        self._tags.extend(k for k, v in values.items() if not v and k not in self._tags)
        self._run_tags.update(values)
        if self.is_running:
            self._put(Tags(values))

    # -- artifacts -----------------------------------------------------------------------

    def log_artifact(
        self, artifact: str | os.PathLike[str] | TraceletArtifact, artifact_path: str | None = None
    ) -> dict[str, ArtifactResult]:
        """Log a file (a path) or a :class:`~tracelet.artifacts.TraceletArtifact`.

        The file is copied into the local store during the call (so overwriting it right
        after is safe), hashed and journaled off the training thread, then delivered to
        every backend. Returns, per backend, where the artifact will be found.
        """
        if self._silent and self.is_running:
            return {}
        if not self.is_running or self._artifacts is None:
            self._not_running(artifact)
        assert self._artifacts is not None
        return self._artifacts.log(artifact, artifact_path)

    def log_file_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Log one file (the older name of :meth:`log_artifact` for paths)."""
        self.log_artifact(local_path, artifact_path)

    def create_artifact(
        self,
        name: str,
        artifact_type: ArtifactType | str = "custom",
        description: str | None = None,
    ) -> TraceletArtifact:
        """A new, empty :class:`~tracelet.artifacts.TraceletArtifact` to fill and log."""
        from tracelet.artifacts import TraceletArtifact

        return TraceletArtifact(name, artifact_type, description)

    def list_artifacts(
        self, type_filter: ArtifactType | str | None = None, backend: str | None = None
    ) -> list[TraceletArtifact]:
        """The run's logged artifacts (latest version of each), optionally of one type.

        Read from the local store, which holds everything every backend was sent; naming a
        ``backend`` only checks that it receives this run.
        """
        from tracelet.artifacts import list_stored

        self._check_backend(backend)
        return list_stored(self.store, self._id, type_filter)

    def get_artifact(
        self, name: str, version: str | int = "latest", backend: str | None = None
    ) -> TraceletArtifact | None:
        """A logged artifact by name (or artifact path) and version (``"latest"``, or n)."""
        from tracelet.artifacts import find_stored

        self._check_backend(backend)
        return find_stored(self.store, self._id, name, version)

    def _check_backend(self, backend: str | None) -> None:
        names = [b.name for b in self.backends]
        if backend is not None and backend not in names:
            raise ValueError(f"backend {backend!r} does not receive this run (it has: {names})")

    # -- automagic capture ---------------------------------------------------------------

    def capture_hyperparams(self) -> dict[str, Any]:
        """Log the caller's local variables that look like hyperparameters; return them.

        By default, public names bound to numbers, bools, short strings or short lists of
        those are kept (``lr = 0.01``, ``layers = [64, 32]``); modules, functions and objects
        are not. ``automagic_config`` narrows or widens this.
        """
        from tracelet.automagic import hyperparameters_in

        found = hyperparameters_in(sys._getframe(1).f_locals, self.automagic_config)
        if found:
            self.log_params(found)
        return found

    def capture_model(self, model: Any) -> dict[str, Any]:
        """Log a description of ``model`` as ``model/...`` parameters (and, for a module
        with layers, its printed structure as the text ``model/summary``); return it."""
        from tracelet.automagic import describe_model

        found = describe_model(model, self.automagic_config)
        self.log_params({"model": found})
        if "layers" in found:
            self.log_text("model/summary", repr(model))
        return found

    def capture_dataset(self, dataset: Any) -> dict[str, Any]:
        """Log a description of ``dataset`` as ``dataset/...`` parameters; return it."""
        from tracelet.automagic import describe_dataset

        found = describe_dataset(dataset)
        self.log_params({"dataset": found})
        return found

    # -- internals -----------------------------------------------------------------------

    def _put(self, record: Any) -> None:
        self._append(record)

    def _full(self) -> None:
        if self._session is not None and self._session.orchestrator is not None:
            self._session.orchestrator.wait_for_room()

    def _step(self, step: int | None) -> int:
        return self._iteration if step is None else check_step(step)

    def _disown(self) -> None:
        """In a forked child: the run belongs to the parent; logging here raises."""
        self._forked = True
        self._append = self._append_metric = self._in_forked_child
        self._extend_metrics = self._put_step = None
        if self._session is not None:
            self._session.abandon()

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
        """The run's bare tags."""
        return list(self._tags)

    @property
    def backends(self) -> list[BackendPlugin]:
        """The backend plugins receiving this run (each has ``.name``)."""
        return list(self._session.backends) if self._session else []

    @property
    def orchestrator(self) -> Orchestrator | None:
        """The run's :class:`~tracelet.Orchestrator` (``add_backend`` mid-run ...); None
        before ``start``."""
        return self._session.orchestrator if self._session else None

    @property
    def frameworks(self) -> list[FrameworkPlugin]:
        """The framework integrations attached to this run."""
        return self._session.frameworks if self._session else []

    @property
    def delivery(self) -> dict[str, DeliveryState]:
        """Where each backend's delivery stands: delivering, retrying since when and why,
        or failed for good; with the batches still pending."""
        return self._session.delivery() if self._session else {}

    @property
    def run_info(self) -> RunInfo:
        """What backends know about the run."""
        if self._info is None:
            raise RuntimeError(f"experiment {self._name!r} has not been started")
        return self._info

    @property
    def rank(self) -> RankInfo | None:
        """This process's rank in a distributed job, decided at ``start`` (None before).
        Only rank zero logs, unless ``log_all_ranks`` is on."""
        return self._rank

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
        if self.is_running and self._session is not None and self._session.store is not None:
            return self._session.store
        if self._reader is None:
            self._reader = LocalStore(self.settings.store_path)
        return self._reader

    def __reduce_ex__(self, protocol: Any) -> Any:
        """An experiment is a live run: not copied, not pickled (its id is what to pass)."""
        raise TypeError(
            f"an Experiment cannot be copied or pickled: it is a live run (threads, a "
            f"journal); pass its id ({getattr(self, '_id', None)!r}) and reopen it with "
            "tracelet.Experiment(run_id=...), or read it with tracelet.storage.LocalStore"
        )

    def __repr__(self) -> str:
        state = self._status.value if self._status else "not started"
        return f"<Experiment {self._name!r} id={self._id[:8]} project={self.project!r} {state}>"


def _automagic_config(given: AutomagicConfig | Mapping[str, Any] | None) -> AutomagicConfig:
    if given is None:
        return AutomagicConfig()
    if isinstance(given, AutomagicConfig):
        return given
    if isinstance(given, Mapping):
        return AutomagicConfig(**given)
    raise TypeError(
        f"automagic_config must be an AutomagicConfig (or a dict of its fields), "
        f"not {type(given).__name__}"
    )


def _torch_integration(caller: str) -> Any:
    """The ``tracelet_torch`` package, or an ImportError saying how to install it."""
    try:
        import tracelet_torch
    except ImportError:
        raise ImportError(
            f"tracelet.{caller} needs the torch integration; install tracelet-torch "
            f"{how_to_install('tracelet-torch')}"
        ) from None
    return tracelet_torch


def _dropped(record: object) -> None:
    """Where metrics go with ``track_metrics`` off."""


def _new_name() -> str:
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
