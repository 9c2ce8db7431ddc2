"""Automagic: describe hyperparameters, models and datasets without the user spelling them out.

Every function here is pure (it only reads the object it is given) and returns plain
parameters, ready for ``log_params``. Nothing is imported: a model is recognised by what it
offers (``parameters()``, ``get_params()``), not by its library.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Mapping
from typing import Any

from tracelet.redaction import is_secret_key
from tracelet.values import ParamValue

MAX_TEXT = 250
"""Longest string kept as a hyperparameter (longer ones are file contents, not settings)."""


def users_namespace() -> Mapping[str, Any]:
    """The local variables of the innermost calling frame outside the tracelet package."""
    frame = sys._getframe(1)
    while frame.f_back is not None and _in_tracelet(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
    return frame.f_locals


def _in_tracelet(module: str) -> bool:
    return module == "tracelet" or module.startswith("tracelet.")


def hyperparameters_in(namespace: Mapping[str, Any]) -> dict[str, ParamValue]:
    """The names in ``namespace`` that look like hyperparameters.

    Kept: public names bound to a bool, int, float, short str, or a short list/tuple of
    those. Skipped: private names, names that say they hold a secret (``api_key``,
    ``token`` ...), modules, classes, functions, and everything else.
    """
    found: dict[str, ParamValue] = {}
    for name, value in namespace.items():
        if name.startswith("_") or inspect.ismodule(value) or callable(value):
            continue
        if is_secret_key(name):
            continue
        if _is_simple(value):
            found[name] = value
        elif isinstance(value, list | tuple) and len(value) <= 16 and all(map(_is_simple, value)):
            found[name] = str(list(value))
    return found


def _is_simple(value: Any) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_TEXT
    return isinstance(value, bool | int | float)


def describe_model(model: Any) -> dict[str, ParamValue]:
    """Class, and parameter counts (PyTorch-style ``parameters()``) or estimator parameters
    (scikit-learn-style ``get_params()``) when the model offers them."""
    found: dict[str, ParamValue] = {
        "class": type(model).__qualname__,
        "module": type(model).__module__,
    }
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        sizes = [(p.numel(), bool(getattr(p, "requires_grad", True))) for p in parameters()]
        found["parameters"] = sum(n for n, _ in sizes)
        found["trainable_parameters"] = sum(n for n, trainable in sizes if trainable)
    get_params = getattr(model, "get_params", None)
    if callable(get_params):
        params = get_params()
        if isinstance(params, Mapping):
            found.update({f"params/{k}": v for k, v in hyperparameters_in(params).items()})
    return found


def describe_dataset(dataset: Any) -> dict[str, ParamValue]:
    """Class, size (``len``), and ``shape``/``dtype`` when the dataset has them."""
    found: dict[str, ParamValue] = {
        "class": type(dataset).__qualname__,
        "module": type(dataset).__module__,
    }
    with contextlib.suppress(TypeError):
        found["size"] = len(dataset)
    shape = getattr(dataset, "shape", None)
    if shape is not None:
        found["shape"] = str(tuple(shape))
    dtype = getattr(dataset, "dtype", None)
    if dtype is not None:
        found["dtype"] = str(dtype)
    return found
