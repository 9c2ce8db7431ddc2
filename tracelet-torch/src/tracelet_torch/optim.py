"""Optimizer automagic: every optimizer's hyperparameters, and their changes over time.

On when automagic is (``enable_automagic``, ``Experiment(automagic=True)``). A global
``torch.optim`` step hook sees each optimizer's first step and logs its class and
per-group hyperparameters as parameters (``optimizer/lr``, ``optimizer/betas``;
``optimizer/group1/lr`` for a second group; ``optimizer2/...`` for a second optimizer).
From then on, a numeric hyperparameter that changed since the last step (a learning-rate
schedule, a momentum cycle) is logged as a metric of the same name at the current step.
An unchanged step costs a comparison per hyperparameter.
"""

from __future__ import annotations

import itertools
import numbers
import weakref
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from tracelet.plugins import FrameworkPlugin, report_once
from tracelet_torch.imports import when_imported
from tracelet_torch.steps import current_step


class OptimizerCapture(FrameworkPlugin):
    """Logs optimizer hyperparameters of the run it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.experiment: Any = None
        self._cancel: Callable[[], None] = _nothing
        self._seen: weakref.WeakKeyDictionary[Any, _Tracked] = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)
        """Optimizers in the order first seen: ``optimizer``, ``optimizer2`` ..."""
        self._listening = False

    def attach(self, experiment: Any) -> None:
        """With automagic on (``enable_automagic``), register the step hook now, or when
        ``torch.optim`` is imported."""
        self.experiment = experiment
        if self.config.get("enable_automagic"):
            self._cancel = when_imported("torch.optim.optimizer", self._listen)

    def _listen(self, module: ModuleType) -> None:
        from tracelet_torch import optim_hooks

        optim_hooks.listen(after=self._after_step)
        self._listening = True

    def detach(self) -> None:
        """Stop listening (safe from inside an optimizer step)."""
        self._cancel()
        if self._listening:
            from tracelet_torch import optim_hooks

            optim_hooks.stop_listening(after=self._after_step)
            self._listening = False

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            tracked = self._seen.get(optimizer)
            if tracked is None:
                number = next(self._numbers)
                tracked = self._seen[optimizer] = _Tracked(
                    f"optimizer{number if number > 1 else ''}"
                )
                self.experiment.log_params(tracked.describe(optimizer))
            changed = tracked.changes(optimizer.param_groups)
            if changed:
                self.experiment.log_metrics(changed, current_step(self.experiment, tracked.steps))
            tracked.steps += 1
        except Exception as error:  # never into the user's optimizer.step()
            report_once("tracelet optimizer capture", f"skipped: {error!r}")


class _Tracked:
    """One optimizer: its name prefix, steps taken, and hyperparameters last logged."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.steps = 0
        self.last: dict[str, float] = {}

    def describe(self, optimizer: Any) -> dict[str, Any]:
        """The optimizer's class and every group's hyperparameters, as parameters."""
        found: dict[str, Any] = {f"{self.prefix}/class": type(optimizer).__qualname__}
        for index, group in enumerate(optimizer.param_groups):
            for key, value in group.items():
                if key != "params" and _kept(value):
                    found[self._name(index, key)] = value if _simple(value) else str(value)
        return found

    def changes(self, groups: list[Mapping[str, Any]]) -> dict[str, float]:
        """The numeric hyperparameters that differ from the last ones logged."""
        changed = {}
        for index, group in enumerate(groups):
            for key, value in group.items():
                if isinstance(value, numbers.Real) and not isinstance(value, bool):
                    name = self._name(index, key)
                    if self.last.get(name) != value:
                        self.last[name] = changed[name] = float(value)
        return changed

    def _name(self, index: int, key: str) -> str:
        group = f"group{index}/" if index else ""
        return f"{self.prefix}/{group}{key}"


def _simple(value: Any) -> bool:
    return isinstance(value, bool | int | float | str)


def _kept(value: Any) -> bool:
    """Hyperparameters worth a parameter: numbers, flags, names, and tuples of numbers."""
    if _simple(value):
        return True
    return isinstance(value, tuple) and all(isinstance(v, numbers.Real) for v in value)


def _nothing() -> None:
    return None
