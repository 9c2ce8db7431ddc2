"""``tracelet.watch(model)``: per-layer gradient and weight statistics, off the hot path.

Statistics are taken when an optimizer (``torch.optim``) steps the watched parameters:
once per training step, after gradient accumulation, after a ``GradScaler`` has unscaled
the gradients and after a distributed all-reduce, so they describe the update actually
made. A global step hook counts each optimizer's steps; on every ``log_freq``-th (the last
step of each interval, the one a checkpoint covers) it computes the statistics of
:mod:`tracelet_torch.stats` on the parameters' device and logs them: at once on the CPU;
from a GPU through one non-blocking copy to the host that a worker thread waits for, so
the training thread never does. What is logged:

- ``grad/<parameter>/<stat>`` and ``grad/total_norm`` through ``log_gradient_stats`` (so
  they reach checkpoints and the live detector's explosion and vanishing rules);
- ``param/<parameter>/<stat>`` (the weights before the update), and
  ``param/<parameter>/update_ratio``: ``|W' - W| / |W|``, how far that step moved them.
"""

from __future__ import annotations

import functools
import math
import queue
import threading
import weakref
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
from tracelet_torch import __version__, optim_hooks
from tracelet_torch.stats import STATS, tensor_stats, update_ratios

LOGS = ("gradients", "parameters", "all")
"""What ``watch(log=...)`` records."""
MAX_WAITING = 64
"""GPU samples waiting for the worker before new ones are skipped (it fell behind)."""
STOP_WAIT = 10.0
"""Seconds ``unwatch`` (and stop) wait for GPU samples still being copied."""


class ModelWatcher(FrameworkPlugin):
    """The statistics of one model's parameters, in one run (:func:`watch` builds it)."""

    def __init__(
        self,
        model: torch.nn.Module,
        log_freq: int,
        log: str = "all",
        update_ratio: bool = True,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.metadata = PluginMetadata("watch", __version__, PluginType.FRAMEWORK)
        self.model = model
        self.log_freq = log_freq
        self.log = log
        self.update_ratio = update_ratio and log != "gradients"
        self.prefix = prefix
        """Put before each parameter's name (``generator.`` -> ``grad/generator.0.weight``)."""
        self.first_step = 0
        """The number a loop gives its first step (1 for Transformers): statistics are
        taken on the last step of each ``log_freq`` interval counted from it."""
        self.steps = 0
        """Optimizer steps seen that update watched parameters."""
        self._experiment: Any = None
        self._names: list[str] = []
        self._params: list[torch.nn.Parameter] = []
        self._listening = False
        self._counts: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._sampled: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        self._owned: weakref.WeakKeyDictionary[Any, tuple[int, list[int]]] = (
            weakref.WeakKeyDictionary()
        )
        self._lazy = False
        """Whether some selected parameters were not materialized yet (a lazy module)."""
        self._advanced = False
        """Whether the loop advances the run's step (then it, not a count, says when)."""
        self._unowned_steps = 0
        self._before: tuple[Any, int, list[int], list[torch.Tensor]] | None = None
        self._queue: queue.SimpleQueue[_Sample | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="tracelet-watch", daemon=True)

    def attach(self, experiment: Any) -> None:
        """Select the parameters and listen to optimizer steps."""
        self._experiment = experiment
        if not self._select():
            layers = list(experiment.settings.gradient_layers)
            raise ValueError(
                f"watch: no trainable parameter of {type(self.model).__name__} matches "
                f"gradient_layers={layers}; name layers as model.named_parameters() "
                "does (e.g. 'encoder.*')"
            )
        optim_hooks.listen(self._before_step, self._after_step)
        self._listening = True

    def _select(self) -> bool:
        """Select the trainable parameters ``gradient_layers`` names; a lazy module's are
        taken once materialized. Whether any matched (materialized or not)."""
        layers = self._experiment.settings.gradient_layers
        named = [
            (name, p)
            for name, p in self.model.named_parameters()
            if p.requires_grad and layer_selected(name, layers)
        ]
        lazy = [name for name, p in named if torch.nn.parameter.is_lazy(p)]
        named = [(name, p) for name, p in named if name not in lazy and p.numel()]
        self._names = [f"{self.prefix}{name}" for name, _ in named]
        self._params = [p for _, p in named]
        self._lazy = bool(lazy)
        self._owned = weakref.WeakKeyDictionary()
        return bool(named or lazy)

    def detach(self) -> None:
        """Stop listening (safe from inside a step); log what is still being copied
        (waiting at most :data:`STOP_WAIT` seconds)."""
        if self._listening:
            optim_hooks.stop_listening(self._before_step, self._after_step)
            self._listening = False
        self._before = None
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(STOP_WAIT)

    # -- on the training thread: launch, never wait -------------------------------------

    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._lazy:
            self._select()
        watched = self._watched(optimizer)
        if not watched:
            self._unowned_steps += 1
            if self._unowned_steps == 100 and not self.steps:
                report_once(
                    "tracelet watch",
                    f"100 optimizer steps updated none of {type(self.model).__name__}'s "
                    "parameters (an optimizer over flattened copies, as FSDP or DeepSpeed "
                    "ZeRO make, is not watched)",
                )
            return
        self.steps += 1
        step = self._due(optimizer)
        if step is not None:
            self._sample(optimizer, step, watched)

    def _due(self, optimizer: Any) -> int | None:
        """The step to sample now, or None. A loop that advances the run's step samples
        the last step of each interval, once per optimizer; one that never does, every
        ``log_freq``-th step of each optimizer."""
        count = self._counts.get(optimizer, 0)
        self._counts[optimizer] = count + 1
        iteration = self._experiment.iteration
        self._advanced = self._advanced or iteration > 0
        if not self._advanced:
            return count if (count + 1) % self.log_freq == 0 else None
        if (iteration + 1 - self.first_step) % self.log_freq or self._sampled.get(
            optimizer
        ) == iteration:
            return None
        self._sampled[optimizer] = iteration
        return iteration

    def _watched(self, optimizer: Any) -> list[int]:
        """Indices of the watched parameters ``optimizer`` updates (cached per optimizer
        until its parameter groups change)."""
        groups = optimizer.param_groups
        size = sum(len(group["params"]) for group in groups)
        cached = self._owned.get(optimizer)
        if cached is None or cached[0] != size:
            owned = {id(p) for group in groups for p in group["params"]}
            cached = (size, [i for i, p in enumerate(self._params) if id(p) in owned])
            self._owned[optimizer] = cached
        return cached[1]

    def _sample(self, optimizer: Any, step: int, watched: list[int]) -> None:
        if self._queue.qsize() >= MAX_WAITING:
            report_once("tracelet watch", "the statistics worker fell behind; samples skipped")
            return
        names = [self._names[i] for i in watched]
        params = [self._params[i].detach() for i in watched]
        # a fused optimizer under a GradScaler unscales (and skips overflows) itself
        scale = getattr(optimizer, "grad_scale", None)
        skipped = getattr(optimizer, "found_inf", None)
        with torch.no_grad():
            if self.log != "parameters":
                grads = [(self._names[i], self._params[i].grad) for i in watched]
                grads = [(n, g) for n, g in grads if g is not None and g.layout is torch.strided]
                if grads:  # (none yet: a closure computes them inside step())
                    self._send("grad", step, grads, functools.partial(_unscaled, scale), skipped)
            if self.log != "gradients":
                self._send("param", step, list(zip(names, params, strict=True)), tensor_stats)
            if self.update_ratio:
                self._before = (optimizer, step, watched, [p.clone() for p in params])

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before is None or self._before[0] is not optimizer:
            return
        _, step, watched, before = self._before
        self._before = None
        with torch.no_grad():
            after = [self._params[i].detach() for i in watched]
            names = [self._names[i] for i in watched]
            self._send("update", step, list(zip(names, before, after, strict=True)), update_ratios)

    def _send(
        self,
        kind: str,
        step: int,
        named: Sequence[tuple[Any, ...]],
        compute: Callable[..., torch.Tensor],
        skipped: torch.Tensor | None = None,
    ) -> None:
        """Compute on each device; log now when all is on the CPU, else hand the copies
        to the worker (one sample for all devices: one ``grad/total_norm``). ``skipped``:
        a flag on the device saying the optimizer will skip this step (overflow)."""
        parts = []
        for group in _by_device(named).values():
            columns = list(zip(*group, strict=True))
            parts.append((list(columns[0]), compute(*columns[1:])))
        sample = _Sample(kind, step, parts, skipped)
        if sample.ready:
            self._log(sample)
            return
        if not self._worker.is_alive():
            self._worker.start()
        self._queue.put(sample)

    # -- on the worker thread: wait for the copies, then log -----------------------------

    def _work(self) -> None:
        while (sample := self._queue.get()) is not None:
            try:
                self._log(sample)
            except Exception as error:
                report_once("tracelet watch", f"statistics not logged: {error!r}")

    def _log(self, sample: _Sample) -> None:
        names, rows = sample.rows()
        if not names:  # a step the optimizer skipped
            return
        experiment, step = self._experiment, sample.step
        if sample.kind == "update":
            ratios = zip(names, rows, strict=True)
            experiment.log_metrics({f"param/{n}/update_ratio": r for n, r in ratios}, step)
            return
        stats = {
            f"{name}/{stat}": value
            for name, row in zip(names, rows, strict=True)
            for stat, value in zip(STATS, row, strict=True)
        }
        if sample.kind == "param":
            experiment.log_metrics({f"param/{k}": v for k, v in stats.items()}, step)
            return
        stats[f"{self.prefix}total_norm"] = math.sqrt(sum(row[0] ** 2 for row in rows))
        experiment.log_gradient_stats(stats, step)


class _Sample:
    """Statistics of one step, per device; those on a CUDA device on their way to the
    host (a copy started without blocking, behind an event on the device's stream)."""

    __slots__ = ("kind", "parts", "ready", "skipped", "step")

    def __init__(
        self,
        kind: str,
        step: int,
        parts: list[tuple[list[str], torch.Tensor]],
        skipped: torch.Tensor | None = None,
    ) -> None:
        self.kind, self.step = kind, step
        self.parts: list[tuple[list[str], torch.Tensor, Any]] = []
        self.ready = True
        self.skipped = None if skipped is None else self._copy(skipped)
        for names, values in parts:
            self.parts.append((names, *self._copy(values)))

    def _copy(self, values: torch.Tensor) -> tuple[torch.Tensor, Any]:
        if not values.is_cuda:
            return values, None
        stream = torch.cuda.current_stream(values.device)
        values = values.to("cpu", non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        self.ready = False
        return values, event

    def rows(self) -> tuple[list[str], list[Any]]:
        """Every tensor's name and statistics, once copied (none for a skipped step)."""
        if self.skipped is not None and _wait(*self.skipped).item():
            return [], []
        names: list[str] = []
        rows: list[Any] = []
        for part_names, values, event in self.parts:
            names += part_names
            rows += _wait(values, event).tolist()
        return names, rows


def _wait(values: torch.Tensor, event: Any) -> torch.Tensor:
    if event is not None:
        event.synchronize()
    return values


def _unscaled(scale: torch.Tensor | None, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`tensor_stats` of gradients a ``GradScaler`` left scaled (a fused optimizer
    unscales them itself): norms, means, deviations and extremes divided by the scale."""
    values = tensor_stats(tensors)
    if scale is not None:
        values[:, :4] /= scale.to(values.device, torch.float32)
    return values


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
    prefix: str | None = None,
) -> ModelWatcher | None:
    """Watch ``model`` in ``experiment``: statistics every ``log_freq`` optimizer steps
    (default: the run's ``checkpoint_interval``). ``log``: "gradients", "parameters" or
    "all". ``prefix`` goes before every parameter name (default: none for the first model
    watched, ``model2.`` ... for more). Returns the watcher, or None when the run's
    ``track_gradients`` is off. Watching a model again replaces the earlier watch."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"watch takes a torch.nn.Module, not {type(model).__name__}")
    if log not in LOGS:
        raise ValueError(f"watch: log={log!r}; choose one of {', '.join(map(repr, LOGS))}")
    freq = experiment.settings.checkpoint_interval if log_freq is None else log_freq
    if isinstance(freq, bool) or not isinstance(freq, int) or freq < 1:
        given = "log_freq" if log_freq is not None else "the run's checkpoint_interval"
        raise ValueError(f"watch: {given} is {freq!r}; give log_freq, a whole number >= 1")
    if prefix is not None and not isinstance(prefix, str):
        raise TypeError(f"watch: prefix must be a str, not {type(prefix).__name__}")
    if not experiment.settings.track_gradients:
        return None
    watchers = [f for f in experiment.frameworks if isinstance(f, ModelWatcher)]
    earlier = [f for f in watchers if f.model is model]
    if prefix is None:
        others = {f.prefix for f in watchers if f.model is not model}
        prefix = earlier[0].prefix if earlier else _free_prefix(others)
    elif prefix and not prefix.endswith((".", "/")):
        prefix += "."
    watcher = ModelWatcher(model, freq, log, update_ratio, prefix)
    experiment.attach_framework(watcher)
    for framework in earlier:  # replaced only once the new one is in place
        experiment.detach_framework(framework)
    return watcher


def _free_prefix(taken: set[str]) -> str:
    """No prefix for the first model; ``model2.``, ``model3.`` ... for the others."""
    if "" not in taken:
        return ""
    number = 2
    while f"model{number}." in taken:
        number += 1
    return f"model{number}."


def unwatch(experiment: Any, model: torch.nn.Module | None = None) -> None:
    """Remove the hooks of ``model`` (default: of every watched model) from ``experiment``."""
    for framework in list(experiment.frameworks):
        if isinstance(framework, ModelWatcher) and model in (None, framework.model):
            experiment.detach_framework(framework)
