"""The run a framework callback or logger writes to, and how it follows the trainer.

A callback created while a run is active (``tracelet.start_logging`` before
``trainer.fit``) logs to that run and leaves it running. Otherwise it starts its own run
when training starts, with the options it was given, and ends it when training ends;
logging again later (``trainer.test`` after ``fit``, ``evaluate`` after ``train``)
continues that same run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tracelet
from tracelet.plugins import report_once


class CallbackRun:
    """Starts, finds, continues and ends the run of one callback or logger."""

    def __init__(
        self,
        project: str | None = None,
        run_name: str | None = None,
        backend: str | list[str] | None = None,
        config: Mapping[str, Any] | None = None,
        checkpoint_interval: int | None = None,
    ) -> None:
        if config is not None and not isinstance(config, Mapping):
            raise TypeError(f"config must be a dict, not {type(config).__name__}")
        self.project = project
        self.run_name = run_name
        self.backend = backend
        self.config = dict(config or {})
        if checkpoint_interval is not None:
            self.config["checkpoint_interval"] = checkpoint_interval
        self.experiment: Any = None
        self.owned = False
        """Whether this callback started the run (and so ends it)."""
        self._described: set[str] = set()

    def get(self, resume: bool = False) -> Any:
        """The run to log to, started if there is none yet. A run this callback ended is
        returned as it is, or continued (same id) when ``resume``."""
        experiment = self.experiment
        if experiment is not None and (experiment.is_running or not resume):
            return experiment
        active = tracelet.get_active_experiment()
        if active is not None and active is not experiment:
            self.experiment, self.owned = active, False
            return active
        config = dict(self.config)
        if experiment is not None and self.owned:
            config["run_id"] = experiment.id
        self.experiment = tracelet.start_logging(
            self.run_name, project=self.project, backend=self.backend, config=config
        )
        self.owned = True
        return self.experiment

    def first_time(self) -> bool:
        """True the first time it is asked about the current run (describe it once)."""
        run_id = self.experiment.id
        if run_id in self._described:
            return False
        self._described.add(run_id)
        return True

    def follow(self, step: int, first: int = 0) -> None:
        """Move the run's step on to the trainer's ``step`` (never back). The steps before
        it are done: the last of them that ends a ``checkpoint_interval`` (counting the
        trainer's steps from ``first``) gets its checkpoint, now that its values are in."""
        experiment = self.experiment
        if experiment is None or not experiment.is_running or step <= experiment.iteration:
            return
        finished = experiment.iteration - 1  # the last step already past
        experiment.set_iteration(step)
        interval = experiment.settings.checkpoint_interval
        if not interval or not experiment.settings.track_checkpoints:
            return
        due = step - 1 - (step - first) % interval  # the last step ending an interval
        if due > finished and due >= first:
            experiment.checkpoint(due)

    def watch(self, model: Any, first_step: int = 0) -> None:
        """Watch ``model`` in the run (a problem is reported, never raised into the
        trainer); statistics on the steps that end an interval counted from
        ``first_step``."""
        try:
            watcher = self.experiment.watch(model)
        except Exception as error:
            report_once("tracelet watch", f"{type(model).__name__} not watched: {error}")
            return
        if watcher is not None:
            watcher.first_step = first_step

    def end(self, status: str = "finished") -> None:
        """End the run if this callback started it (a run it found keeps running)."""
        if self.owned and self.experiment is not None and self.experiment.is_running:
            self.experiment.stop(status)


class TracerCallback:
    """What Tracer's two callbacks share (``LightningCallback``, ``TransformersCallback``):
    their options, their run, and whether they watch the model. Mixed in before the
    framework's own callback class."""

    def __init__(
        self,
        project: str | None = None,
        checkpoint_interval: int | None = None,
        run_name: str | None = None,
        backend: str | list[str] | None = None,
        config: Mapping[str, Any] | None = None,
        watch: bool = True,
    ) -> None:
        self._run = CallbackRun(project, run_name, backend, config, checkpoint_interval)
        self.watch = watch

    @property
    def experiment(self) -> Any:
        """The run the callback logs to (None before training starts)."""
        return self._run.experiment


def string_keys(params: Mapping[Any, Any]) -> dict[str, Any]:
    """``params`` with every key (nested ones too) as a string: a framework's own dicts
    (a model config's ``id2label``) may use numbers as keys, which Tracelet refuses."""
    return {
        str(key): string_keys(value) if isinstance(value, Mapping) else value
        for key, value in params.items()
        if str(key)
    }
