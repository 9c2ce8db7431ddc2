"""Lightning: :class:`TraceletLogger` (a Lightning logger) and :class:`LightningCallback`.

Both work with the ``lightning`` package and with ``pytorch_lightning``, and only on the
global rank zero (elsewhere they do nothing). ``self.log`` values reach the run with the
step Lightning gives its loggers (``trainer.global_step`` when the value was logged), as
they reach Lightning's own CSV and TensorBoard loggers; ``save_hyperparameters`` becomes
the run's parameters.
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Mapping
from typing import Any

try:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers.logger import Logger, rank_zero_experiment
    from lightning.pytorch.utilities import rank_zero_only
except ImportError:  # the standalone pytorch_lightning package
    from pytorch_lightning.callbacks import Callback
    from pytorch_lightning.loggers.logger import Logger, rank_zero_experiment
    from pytorch_lightning.utilities import rank_zero_only

from tracelet_torch.runs import CallbackRun, TracerCallback, string_keys
from tracelet_torch.tensorboard import ignore_callers_while

STATUSES = {"success": "finished", "failed": "failed"}
"""Lightning's final status to Tracelet's (anything else: ``killed``)."""
LIGHTNING_LOGGERS = (
    "lightning.fabric.loggers",
    "lightning.pytorch.loggers",
    "lightning_fabric.loggers",
    "pytorch_lightning.loggers",
)
"""Lightning's own loggers: their TensorBoard calls are not captured beside a
``TraceletLogger``, which receives the same values."""


class TraceletLogger(Logger):
    """A Lightning logger writing to a Tracelet run: ``Trainer(logger=TraceletLogger())``.

    With a run active when training starts, it logs there and leaves it running;
    otherwise it starts a run with ``project``, ``run_name``, ``backend`` and ``config``
    (as :func:`tracelet.start_logging`) and ends it when Lightning finalizes. The run's
    step follows Lightning's, writing a checkpoint every ``checkpoint_interval`` steps.
    """

    def __init__(
        self,
        project: str | None = None,
        run_name: str | None = None,
        backend: str | list[str] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._run = CallbackRun(project, run_name, backend, config)
        ignore_callers_while(self, LIGHTNING_LOGGERS)

    @classmethod
    def sharing(cls, run: CallbackRun) -> TraceletLogger:
        """A logger writing to the run of a :class:`LightningCallback`."""
        logger = cls()
        logger._run = run
        return logger

    @property
    def name(self) -> str:
        """The run's name (before it starts: the name or project it will have)."""
        experiment = self._run.experiment
        if experiment is not None:
            return experiment.name
        return self._run.run_name or self._run.project or "tracelet"

    @property
    def version(self) -> str | None:
        """The run's id, once it has started."""
        experiment = self._run.experiment
        return None if experiment is None else experiment.id

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        """The Tracelet run (an :class:`~tracelet.Experiment`), started if need be."""
        return self._run.get()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` at ``step``; the run's step follows Lightning's."""
        experiment = self._run.get(resume=True)
        if step is not None:
            self._run.follow(step)
        experiment.log_metrics(dict(metrics), step)

    @rank_zero_only
    def log_hyperparams(
        self, params: Mapping[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        """Log hyperparameters (``save_hyperparameters``, a dict or a Namespace)."""
        values = vars(params) if isinstance(params, Namespace) else params
        if values:
            self._run.get(resume=True).log_params(string_keys(values))

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the last step (its checkpoint, when one is due); end the run if this
        logger started it (``success``: finished)."""
        experiment = self._run.experiment
        if experiment is not None:
            self._run.follow(experiment.iteration + 1)
        self._run.end(STATUSES.get(status, "killed"))


class LightningCallback(TracerCallback, Callback):
    """Tracer's Lightning callback: ``Trainer(callbacks=[LightningCallback(project=...)])``.

    When a stage starts (on rank zero) it starts a run (or uses the active one, or
    continues its own), logs the module's hyperparameters and a description of the model
    once, watches its gradients while fitting (``watch``, every ``checkpoint_interval``
    steps), keeps the run's step at ``trainer.global_step`` so checkpoints are written
    every ``checkpoint_interval`` steps, and adds a :class:`TraceletLogger` on the same
    run to the trainer's loggers (unless logging is off, ``logger=False``), so ``self.log``
    values arrive as Lightning logs them. It ends a run it started when the stage ends.
    ``LightningCallback(project=None, checkpoint_interval=None, run_name=None,
    backend=None, config=None, watch=True)``.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Start (or find, or continue) the run; add the logger."""
        if not trainer.is_global_zero:
            return
        self._run.get(resume=True)
        loggers = trainer.loggers
        if loggers and not any(isinstance(logger, TraceletLogger) for logger in loggers):
            trainer.loggers = [*loggers, TraceletLogger.sharing(self._run)]

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        """Describe the model once and watch it (its layers exist now, even those made
        in ``configure_model``)."""
        if trainer.is_global_zero:
            self._describe(pl_module)
            if self.watch:
                self._run.watch(pl_module)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        """Describe the model once (a ``validate`` or ``test`` without ``fit``)."""
        if trainer.is_global_zero:
            self._describe(pl_module)

    on_test_start = on_validation_start

    def _describe(self, pl_module: Any) -> None:
        experiment = self._run.get(resume=True)
        if self._run.first_time():
            hparams = getattr(pl_module, "hparams", None)
            if hparams:
                experiment.log_params(string_keys(hparams))
            experiment.capture_model(pl_module)

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        """Bring the run's step to the step Lightning's loggers get now: the steps before
        it are done, with their logged values (checkpoints as it passes an interval)."""
        if trainer.is_global_zero:
            self._run.follow(_logged_step(trainer))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Finish the last step (its checkpoint, when one is due)."""
        if trainer.is_global_zero:
            self._run.follow(_logged_step(trainer))

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """End a run the callback started as failed (killed, on an interrupt)."""
        if trainer.is_global_zero:
            failed = not isinstance(exception, KeyboardInterrupt)
            self._run.end("failed" if failed else "killed")

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Stop watching, and end the run if the callback started it."""
        experiment = self._run.experiment
        if not trainer.is_global_zero or experiment is None:
            return
        if experiment.is_running:
            experiment.unwatch(pl_module)
        self._run.end("finished")


def _logged_step(trainer: Any) -> int:
    """The step Lightning gives its loggers: optimizer steps taken, once per batch under
    manual optimization too (``trainer.global_step`` counts every optimizer's steps)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return getattr(loop, "_batches_that_stepped", trainer.global_step)
