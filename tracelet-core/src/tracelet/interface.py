"""The main interface: one active experiment per process, started and stopped here.

Two equivalent forms::

    exp = tracelet.start_logging("baseline", project="vision", backend="mlflow")
    exp.log_metric("loss", 0.5, 0)
    tracelet.stop_logging()

    tracelet.init(project="vision", run_name="baseline")
    tracelet.log({"loss": 0.5})
    tracelet.step()
    tracelet.finish()
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tracelet.core.experiment import Experiment
from tracelet.forks import fork_safe
from tracelet.settings import TraceletSettings

if TYPE_CHECKING:
    from tracelet.config import TracerConfig

_active: Experiment | None = None
_guard = fork_safe(threading.RLock())


def start_logging(
    exp_name: str | None = None,
    project: str | None = None,
    backend: str | list[str] | None = None,
    config: Mapping[str, Any] | None = None,
    settings: TraceletSettings | None = None,
    *,
    run_id: str | None = None,
    resume: str | None = None,
) -> Experiment:
    """Start tracking a run and make it the active experiment; return it.

    ``backend`` names one backend or several (default: the ``backend`` setting, ``local``).
    ``config`` holds settings (``track_system``, ``metrics_interval`` ...), run keys
    (``tags``, ``run_name``) and backend options, nested (``{"mlflow": {...}}``), prefixed
    (``"mlflow_tracking_uri"``) or plain (``"tracking_uri"``). ``settings`` replaces
    the core settings that would be read from the environment and ``tracelet.yaml``; the
    file's backend sections (``mlflow:`` ...) still apply, below ``config``. A run already
    active is stopped first. The experiment is a context manager that stops on exit.

    ``run_id`` (else ``TRACELET_RUN_ID``) continues that run after a restart, in the store
    and in every backend, steps going on from its last one. ``resume`` (else
    ``TRACELET_RESUME``): ``"allow"`` (the default) continues it or starts it; ``"must"``
    raises ``ConfigurationError`` unless the store has it; ``"never"`` unless it does not.
    """
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    options = dict(config or {})
    if backend is None and "backend" in options:
        backend = options.pop("backend")
    experiment = Experiment(
        exp_name,
        project=project,
        backend=backend,
        options=options,
        settings=settings,
        run_id=run_id,
        resume=resume,
    )
    with _guard:
        stop_logging()
        experiment.start()
        _activate(experiment)
    return experiment


def stop_logging() -> None:
    """Stop the active experiment (flushing everything); do nothing if there is none."""
    with _guard:
        experiment = _active
    if experiment is not None:
        experiment.stop()


def get_active_experiment() -> Experiment | None:
    """The active experiment, or None."""
    return _active


def _activate(experiment: Experiment) -> None:
    global _active
    _active = experiment
    experiment.on_stop(_deactivate)


def _deactivate(experiment: Experiment) -> None:
    global _active
    with _guard:
        if _active is experiment:
            _active = None


# -- the short form ----------------------------------------------------------------------


def init(
    project: str | None = None,
    run_name: str | None = None,
    *,
    config: TracerConfig | Mapping[str, Any] | None = None,
    **options: Any,
) -> Experiment:
    """Start a run in ``project`` (the short form of :func:`start_logging`).

    ``config`` is a :class:`~tracelet.config.TracerConfig` (or a ``config=`` mapping of
    ``start_logging``). Keyword arguments are the same keys ``start_logging``'s ``config``
    takes, ``backend`` and every ``TracerConfig`` field included, and win over ``config``:
    ``tracelet.init(project="nlp", backend="mlflow", tags=["baseline"], max_workers=2)``.
    Without ``project``, the project comes from ``config`` or the ``project`` setting.
    """
    from tracelet.config import TracerConfig, canonical

    if isinstance(config, TracerConfig):
        base = config.as_config()
    elif isinstance(config, Mapping):
        base = canonical(config)
    elif config is None:
        base = {}
    else:
        raise TypeError(
            f"config must be a TracerConfig or a dict of settings, not {type(config).__name__}"
        )
    options = {**base, **canonical(options)}
    backend = options.pop("backend", None)
    return start_logging(run_name, project=project, backend=backend, config=options)


def log(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log several metrics at ``step`` (default: the current step of the active run)."""
    _require("log").log_metrics(metrics, step)


def step() -> int:
    """Finish the active run's step: advance by one, checkpointing every
    ``checkpoint_interval`` steps. Returns the new step."""
    return _require("step").step()


def log_sample(sample: Any) -> None:
    """Keep a sample record (any JSON-able object) with the active run's next checkpoint."""
    _require("log_sample").log_sample(sample)


def watch(model: Any, **options: Any) -> Any:
    """Track ``model``'s gradients and weights in the active run (needs ``tracelet-torch``;
    see :meth:`Experiment.watch <tracelet.core.experiment.Experiment.watch>`)."""
    return _require("watch").watch(model, **options)


def unwatch(model: Any = None) -> None:
    """Stop watching ``model`` (default: every model) in the active run."""
    _require("unwatch").unwatch(model)


def finish() -> None:
    """Finish the active run, flushing everything (the short form of :func:`stop_logging`)."""
    stop_logging()


def _require(caller: str) -> Experiment:
    experiment = _active
    if experiment is None:
        raise RuntimeError(
            f"tracelet.{caller}() was called before tracelet.init(); "
            'call tracelet.init(project="...") (or tracelet.start_logging) first'
        )
    return experiment
