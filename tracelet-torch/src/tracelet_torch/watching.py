"""``tracelet.watch(model)``: per-layer gradient and weight statistics, off the hot path.

Every ``log_freq``-th backward pass, one multi-tensor hook computes the statistics of
:mod:`tracelet_torch.stats` for every watched parameter on its device, stacks them, and
logs them: at once on the CPU; on a GPU, through one non-blocking copy to the host that a
worker thread waits for, so the training thread never does. What is logged:

- ``grad/<parameter>/<stat>`` and ``grad/total_norm`` through ``log_gradient_stats`` (so
  they reach checkpoints and the live detector's explosion and vanishing rules);
- ``param/<parameter>/<stat>``, and ``param/<parameter>/update_ratio``: how far the
  optimizer step moved the weights (``|W' - W| / |W|``), measured at the next forward.

Nothing on the training thread waits for a device or calls ``.item()``.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tracelet.plugins import (
    FrameworkPlugin,
    PluginMetadata,
    PluginType,
    layer_selected,
    report_once,
)
from tracelet_torch import __version__
from tracelet_torch.stats import STATS, tensor_stats, update_ratios
from tracelet_torch.steps import current_step

LOGS = ("gradients", "parameters", "all")
"""What ``watch(log=...)`` records."""
MAX_WAITING = 64
"""Samples waiting for the worker before new ones are skipped (a worker that fell behind)."""
STOP_WAIT = 10.0
"""Seconds ``unwatch`` (and stop) wait for samples still being copied."""


class ModelWatcher(FrameworkPlugin):
    """Hooks on one model, attached to one run (:func:`watch` builds it)."""

    def __init__(self, model: torch.nn.Module, log_freq: int, log: str, update_ratio: bool) -> None:
        super().__init__()
        self.metadata = PluginMetadata("watch", __version__, PluginType.FRAMEWORK)
        self.model = model
        self.log_freq = log_freq
        self.log = log
        self.update_ratio = update_ratio and log != "gradients"
        self.passes = 0
        """Backward passes seen."""
        self._experiment: Any = None
        self._names: list[str] = []
        self._params: list[torch.nn.Parameter] = []
        self._handles: list[Any] = []
        self._before: tuple[int, list[torch.Tensor]] | None = None
        self._queue: queue.SimpleQueue[_Sample | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="tracelet-watch", daemon=True)

    def attach(self, experiment: Any) -> None:
        """Select the parameters and register the hooks."""
        layers = experiment.settings.gradient_layers
        named = [
            (name, p)
            for name, p in self.model.named_parameters()
            if p.requires_grad and p.numel() and p.layout is torch.strided
        ]
        named = [(name, p) for name, p in named if layer_selected(name, layers)]
        if not named:
            raise ValueError(
                f"watch: no trainable parameter of {type(self.model).__name__} matches "
                f"gradient_layers={list(layers)}; name layers as model.named_parameters() "
                "does (e.g. 'encoder.*')"
            )
        self._experiment = experiment
        self._names = [name for name, _ in named]
        self._params = [p for _, p in named]
        hook = torch.autograd.graph.register_multi_grad_hook(self._params, self._on_backward)
        self._handles.append(hook)
        if self.update_ratio:
            self._handles.append(self.model.register_forward_pre_hook(self._on_forward))

    def detach(self) -> None:
        """Remove every hook; log what is still being copied (waiting at most
        :data:`STOP_WAIT` seconds)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._before = None
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(STOP_WAIT)

    # -- on the training (or autograd) thread: launch, never wait -----------------------

    def _on_backward(self, grads: Sequence[torch.Tensor | None]) -> None:
        self.passes += 1
        if (self.passes - 1) % self.log_freq:
            return
        try:
            self._sample(grads)
        except Exception as error:  # never into the user's backward pass
            report_once("tracelet watch", f"statistics skipped: {error!r}")

    def _sample(self, grads: Sequence[torch.Tensor | None]) -> None:
        if self._queue.qsize() >= MAX_WAITING:
            report_once("tracelet watch", "the statistics worker fell behind; samples skipped")
            return
        step = current_step(self._experiment, self.passes - 1)
        named = list(zip(self._names, self._params, strict=True))
        with torch.no_grad():
            if self.log != "parameters":
                present = [(n, g) for n, g in zip(self._names, grads, strict=True) if g is not None]
                self._send("grad", step, present, tensor_stats)
            if self.log != "gradients":
                self._send("param", step, named, tensor_stats)
            if self.update_ratio:
                self._before = (step, torch._foreach_clone([p.detach() for p in self._params]))

    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        if self._before is None:
            return
        step, before = self._before
        self._before = None
        try:
            with torch.no_grad():
                after = [p.detach() for p in self._params]
                self._send(
                    "update", step, list(zip(self._names, before, after, strict=True)), _ratios
                )
        except Exception as error:
            report_once("tracelet watch", f"update ratios skipped: {error!r}")

    def _send(
        self,
        kind: str,
        step: int,
        named: Sequence[tuple[Any, ...]],
        compute: Callable[..., torch.Tensor],
    ) -> None:
        """Compute on each device; log a CPU result now, hand a GPU one to the worker."""
        for device, group in _by_device(named).items():
            columns = list(zip(*group, strict=True))
            names, values = list(columns[0]), compute(*columns[1:])
            if device.type != "cuda":  # nothing to wait for
                self._log(kind, step, names, values.tolist())
                continue
            if not self._worker.is_alive():
                self._worker.start()
            self._queue.put(_Sample(kind, step, names, values))

    # -- on the worker thread: wait for the copies, then log -----------------------------

    def _work(self) -> None:
        while (sample := self._queue.get()) is not None:
            try:
                self._log(sample.kind, sample.step, sample.names, sample.rows())
            except Exception as error:
                report_once("tracelet watch", f"statistics not logged: {error!r}")

    def _log(self, kind: str, step: int, names: list[str], rows: list[Any]) -> None:
        experiment = self._experiment
        if kind == "update":
            ratios = zip(names, rows, strict=True)
            experiment.log_metrics({f"param/{n}/update_ratio": r for n, r in ratios}, step)
            return
        stats = {
            f"{name}/{stat}": value
            for name, row in zip(names, rows, strict=True)
            for stat, value in zip(STATS, row, strict=True)
        }
        if kind == "param":
            experiment.log_metrics({f"param/{k}": v for k, v in stats.items()}, step)
            return
        stats["total_norm"] = math.sqrt(sum(row[0] ** 2 for row in rows))
        experiment.log_gradient_stats(stats, step)


class _Sample:
    """Statistics of a CUDA device on their way to the host: a copy started without
    blocking, behind an event the worker waits for."""

    __slots__ = ("_event", "_host", "kind", "names", "step")

    def __init__(self, kind: str, step: int, names: list[str], values: torch.Tensor) -> None:
        self.kind, self.step, self.names = kind, step, names
        self._host = values.to("cpu", non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record()

    def rows(self) -> list[Any]:
        """The values, once copied (one row, or one number, per tensor)."""
        self._event.synchronize()
        return self._host.tolist()


def _ratios(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> torch.Tensor:
    return update_ratios(list(before), list(after))


def _by_device(named: Sequence[tuple[Any, ...]]) -> dict[torch.device, list[tuple[Any, ...]]]:
    groups: dict[torch.device, list[tuple[Any, ...]]] = {}
    for item in named:
        groups.setdefault(item[1].device, []).append(item)
    return groups


def watch(
    experiment: Any,
    model: torch.nn.Module,
    log_freq: int | None = None,
    log: str = "all",
    update_ratio: bool = True,
) -> ModelWatcher | None:
    """Watch ``model`` in ``experiment``: statistics every ``log_freq`` backward passes
    (default: the run's ``checkpoint_interval``). ``log``: "gradients", "parameters" or
    "all". Returns the watcher, or None when the run's ``track_gradients`` is off.
    Watching a model again replaces the earlier watch."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch takes a torch.nn.Module, not {type(model).__name__}")
    if log not in LOGS:
        raise ValueError(f"watch: log={log!r}; choose one of {', '.join(map(repr, LOGS))}")
    freq = experiment.settings.checkpoint_interval if log_freq is None else log_freq
    if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
        raise ValueError(f"watch: log_freq must be a whole number >= 1, not {log_freq!r}")
    if not experiment.settings.track_gradients:
        return None
    unwatch(experiment, model)
    return experiment.attach_framework(ModelWatcher(model, freq, log, update_ratio))


def unwatch(experiment: Any, model: torch.nn.Module | None = None) -> None:
    """Remove the hooks of ``model`` (default: of every watched model) from ``experiment``."""
    for framework in list(experiment.frameworks):
        if isinstance(framework, ModelWatcher) and model in (None, framework.model):
            experiment.detach_framework(framework)
