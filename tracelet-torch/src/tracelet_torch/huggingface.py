"""Hugging Face Transformers: :class:`TransformersCallback`, a ``TrainerCallback``.

``Trainer(..., callbacks=[TransformersCallback(project="my-project")])``. On the main
process only, it logs the ``TrainingArguments`` and the model's configuration as
parameters, a description of the model, every ``on_log`` value (loss, learning rate,
evaluation metrics) at ``state.global_step``, watches the model's gradients, and keeps
the run's step at the global step so checkpoints come every ``checkpoint_interval``.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from transformers import TrainerCallback

from tracelet_torch.runs import TracerCallback, string_keys


class TransformersCallback(TracerCallback, TrainerCallback):
    """Tracer's Transformers callback (see the module's description).

    With a run active when training starts, it logs there and leaves it running;
    otherwise it starts one with ``project``, ``run_name``, ``backend`` and ``config``
    (as :func:`tracelet.start_logging`) and ends it when training ends; an ``evaluate``
    after ``train`` continues it. ``TransformersCallback(project=None,
    checkpoint_interval=None, run_name=None, backend=None, config=None, watch=True)``.
    """

    _training = False
    """Whether ``train()`` is under way (an ``evaluate()`` outside it ends the run again)."""

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        """Start (or find, or continue) the run; describe the arguments and the model
        once; watch the model."""
        if not state.is_world_process_zero:
            return
        self._training = True
        experiment = self._run.get(resume=True)
        if self._run.first_time():
            # tokens: masked by to_dict(), and again by Tracelet's secret redaction
            experiment.log_params(string_keys(args.to_dict()))
            if model is not None:
                experiment.capture_model(model)
                config = getattr(model, "config", None)
                if config is not None and hasattr(config, "to_dict"):
                    experiment.log_params({"model_config": string_keys(config.to_dict())})
        if model is not None and self.watch:
            self._run.watch(model, first_step=1)  # the Trainer counts steps from 1

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Bring the run's step to the step starting (``state.global_step + 1``, as the
        Trainer numbers it in its logs); checkpoints as it passes an interval."""
        if state.is_world_process_zero:
            self._run.follow(state.global_step + 1, first=1)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Log the numbers of ``logs`` at ``state.global_step``."""
        if not state.is_world_process_zero:
            return
        values = {k: v for k, v in (logs or {}).items() if _number(v)}
        if values:
            self._run.get(resume=True).log_metrics(values, state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """After an ``evaluate()`` outside training (its values are logged by then), end
        the run again if the callback started it."""
        if state.is_world_process_zero and not self._training:
            self._run.end("finished")

    on_predict = on_evaluate

    def on_train_end(
        self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
    ) -> None:
        """Finish the last step (its checkpoint, when due); stop watching; end the run if
        the callback started it."""
        experiment = self._run.experiment
        if not state.is_world_process_zero or experiment is None:
            return
        self._training = False
        self._run.follow(state.global_step + 1, first=1)
        if experiment.is_running and model is not None:
            experiment.unwatch(model)
        self._run.end("finished")


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) or getattr(value, "ndim", None) == 0
