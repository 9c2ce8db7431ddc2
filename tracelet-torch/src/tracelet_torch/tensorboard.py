"""TensorBoard capture: every ``SummaryWriter`` call also reaches the active run.

While at least one run has the ``tensorboard`` integration attached, the methods below of
``torch.utils.tensorboard.SummaryWriter`` and ``tensorboardX.SummaryWriter`` are wrapped:
the writer does exactly what it did (same event files), then the call is repeated into
Tracelet with the same ``global_step``. A call without a step goes to step 0, where the
writer itself records it. The classes are patched once, when the first run attaches (or
when the library is first imported, if later), and restored when the last run detaches.
A call the writer makes from inside another (``add_hparams`` writes scalars) is not
captured twice; nor are the calls of Lightning's own TensorBoard logger while a
``TraceletLogger`` delivers the same values.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import json
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import attrs

from tracelet.plugins import FrameworkPlugin, fork_safe, report_once
from tracelet_torch.imports import when_imported

Forward = Callable[[Any, "Call"], Callable[[], None] | None]
"""Reads a call before the writer runs; returns what to log once the writer succeeded."""


@attrs.frozen
class Library:
    """A TensorBoard writer library: where its ``SummaryWriter`` is, and its own helpers
    (so images and PR curves are converted exactly as the writer converts them)."""

    writer_module: str
    make_np: str
    convert_to_hwc: str
    compute_curve: str

    def helper(self, path: str) -> Any:
        """The function at ``module:name``."""
        module, name = path.split(":")
        return getattr(importlib.import_module(module), name)


LIBRARIES = (
    Library(
        "torch.utils.tensorboard.writer",
        "torch.utils.tensorboard._convert_np:make_np",
        "torch.utils.tensorboard._utils:convert_to_HWC",
        "torch.utils.tensorboard.summary:compute_curve",
    ),
    Library(
        "tensorboardX.writer",
        "tensorboardX.x2num:make_np",
        "tensorboardX.utils:convert_to_HWC",
        "tensorboardX.summary:compute_curve",
    ),
)


@attrs.frozen
class Call:
    """One writer call: its arguments by name (defaults filled in) and its library."""

    arguments: Mapping[str, Any]
    library: Library

    def __getitem__(self, name: str) -> Any:
        return self.arguments[name]

    @property
    def step(self) -> int:
        """The call's ``global_step`` (0 when not given, as the writer records it)."""
        step = self.arguments.get("global_step")
        return 0 if step is None else int(step)


# -- what each method becomes --------------------------------------------------------


def _scalar(experiment: Any, call: Call) -> Callable[[], None]:
    return lambda: experiment.log_metric(call["tag"], call["scalar_value"], call.step)


def _scalars(experiment: Any, call: Call) -> Callable[[], None]:
    values = {f"{call['main_tag']}/{k}": v for k, v in call["tag_scalar_dict"].items()}
    return lambda: experiment.log_metrics(values, call.step)


def _histogram(experiment: Any, call: Call) -> Callable[[], None]:
    return lambda: experiment.log_histogram(call["tag"], call["values"], call.step)


def _image(experiment: Any, call: Call) -> Callable[[], None]:
    image = _pixels(call, call["img_tensor"], call["dataformats"])
    return lambda: experiment.log_image(call["tag"], image, call.step)


def _pixels(call: Call, image: Any, dataformats: str) -> Any:
    """An image (or a batch, tiled into a grid) as the writer converts it: HWC, uint8,
    floats scaled by 255."""
    import numpy as np

    array = call.library.helper(call.library.make_np)(image)
    array = call.library.helper(call.library.convert_to_hwc)(array, dataformats)
    scale = 255.0 if array.dtype != np.uint8 else 1.0
    return np.clip(array * scale, 0, 255).astype(np.uint8)


def _text(experiment: Any, call: Call) -> Callable[[], None]:
    return lambda: experiment.log_text(call["tag"], call["text_string"], call.step)


def _figure(experiment: Any, call: Call) -> Callable[[], None]:
    figures = call["figure"]
    if isinstance(figures, list):  # the writer logs a list of figures as one image batch
        images = {f"{call['tag']}/{i}": _png(f) for i, f in enumerate(figures)}
    else:
        images = {call["tag"]: _png(figures)}  # before the writer closes it

    def log() -> None:
        for name, png in images.items():
            experiment.log_image(name, png, call.step)

    return log


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _hparams(experiment: Any, call: Call) -> Callable[[], None]:
    def log() -> None:
        experiment.log_params(dict(call["hparam_dict"]))
        experiment.log_metrics(dict(call["metric_dict"]), call.step)

    return log


def _pr_curve(experiment: Any, call: Call) -> Callable[[], None]:
    make_np = call.library.helper(call.library.make_np)
    curve = call.library.helper(call.library.compute_curve)(
        make_np(call["labels"]),
        make_np(call["predictions"]),
        num_thresholds=call["num_thresholds"],
        weights=call["weights"],
    )
    columns = ("true_positives", "false_positives", "true_negatives", "false_negatives")
    table = dict(zip((*columns, "precision", "recall"), curve.tolist(), strict=True))
    count = call["num_thresholds"]
    table = {"thresholds": [i / max(count - 1, 1) for i in range(count)], **table}
    return lambda: experiment.log_text(call["tag"], json.dumps(table), call.step)


FORWARDS: dict[str, Forward] = {
    "add_scalar": _scalar,
    "add_scalars": _scalars,
    "add_histogram": _histogram,
    "add_image": _image,
    "add_images": _image,
    "add_text": _text,
    "add_figure": _figure,
    "add_hparams": _hparams,
    "add_pr_curve": _pr_curve,
}
"""The captured ``SummaryWriter`` methods."""


# -- patching ----------------------------------------------------------------------------

_lock = fork_safe(threading.RLock())
_captures: list[TensorBoardCapture] = []
"""The attached captures, latest last: calls go to the latest one's run."""
_originals: dict[tuple[type, str], Any] = {}
_inside = threading.local()


def _wrapped(writer_class: type, name: str, library: Library) -> Callable[..., Any]:
    original = writer_class.__dict__[name]
    signature = inspect.signature(original)
    forward = FORWARDS[name]

    @functools.wraps(original)
    def method(writer: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(_inside, "call", False) or not _captures or _ignored():
            return original(writer, *args, **kwargs)
        log = _prepared(forward, name, signature, library, (writer, *args), kwargs)
        _inside.call = True
        try:
            result = original(writer, *args, **kwargs)
        finally:
            _inside.call = False
        if log is not None:
            _run(log, name)
        return result

    return method


def _ignored() -> bool:
    """Whether the module calling the writer is one whose calls are not captured."""
    ignored = _ignored_modules
    if not ignored:
        return False
    caller = sys._getframe(2)  # _ignored <- the wrapped method <- the writer's caller
    return caller.f_globals.get("__name__", "").startswith(ignored)


_covering: weakref.WeakKeyDictionary[Any, tuple[str, ...]] = weakref.WeakKeyDictionary()
_ignored_modules: tuple[str, ...] = ()


def ignore_callers_while(owner: Any, modules: tuple[str, ...]) -> None:
    """Capture no writer calls made from ``modules`` (names or prefixes) while ``owner``
    lives: it delivers their values itself (a ``TraceletLogger`` beside Lightning's
    TensorBoard logger)."""
    with _lock:
        _covering[owner] = modules
        weakref.finalize(owner, _recount)
        _recount()


def _recount() -> None:
    global _ignored_modules
    with _lock:
        _ignored_modules = tuple(dict.fromkeys(m for ms in _covering.values() for m in ms))


def _prepared(
    forward: Forward,
    name: str,
    signature: inspect.Signature,
    library: Library,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Callable[[], None] | None:
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None  # the writer itself will say what is wrong
    bound.apply_defaults()
    try:
        return forward(_captures[-1].experiment, Call(bound.arguments, library))
    except IndexError:  # the last run stopped meanwhile, on another thread
        return None
    except Exception as error:
        report_once("tracelet tensorboard", f"{name} not captured: {error!r}")
        return None


def _run(log: Callable[[], None], name: str) -> None:
    try:
        log()
    except Exception as error:  # the writer's call succeeded: never fail it
        report_once("tracelet tensorboard", f"{name} not captured: {error!r}")


def _patch(library: Library, module: ModuleType) -> None:
    writer_class = getattr(module, "SummaryWriter", None)
    if writer_class is None:
        return
    with _lock:
        if not _captures:
            return  # imported after every run detached
        for name in FORWARDS:
            key = (writer_class, name)
            if key not in _originals and name in writer_class.__dict__:
                _originals[key] = writer_class.__dict__[name]
                setattr(writer_class, name, _wrapped(writer_class, name, library))


def _unpatch() -> None:
    for (writer_class, name), original in _originals.items():
        setattr(writer_class, name, original)
    _originals.clear()


class TensorBoardCapture(FrameworkPlugin):
    """Captures ``SummaryWriter`` calls into the run it is attached to."""

    def __init__(self) -> None:
        super().__init__()
        self.experiment: Any = None
        self._cancels: list[Callable[[], None]] = []

    def attach(self, experiment: Any) -> None:
        """Patch the writer classes now, or when their library is imported."""
        self.experiment = experiment
        with _lock:
            _captures.append(self)
            for library in LIBRARIES:
                patch = functools.partial(_safe_patch, library)
                self._cancels.append(when_imported(library.writer_module, patch))

    def detach(self) -> None:
        """Stop capturing into this run; the last run to detach restores the classes."""
        with _lock:
            for cancel in self._cancels:
                cancel()
            self._cancels.clear()
            if self in _captures:
                _captures.remove(self)
            if not _captures:
                _unpatch()


def _safe_patch(library: Library, module: ModuleType) -> None:
    try:
        _patch(library, module)
    except Exception as error:  # never break the user's import
        report_once("tracelet tensorboard", f"{library.writer_module} not captured: {error!r}")
