"""What Tracelet accepts as a metric value, a step, a name, and a parameter."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

ParamValue = str | int | float | bool | None


def to_metric_value(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``TypeError`` naming the metric and the type.

    Accepted: int, float, bool, NumPy scalars, and 0-d arrays or tensors (anything with
    ``ndim == 0`` that converts with ``float``). NaN and infinities are kept as they are.
    """
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and not isinstance(value, str | bytes):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    kind = type(value).__name__
    hint = ""
    if getattr(value, "ndim", 0):
        hint = " (it has more than one element: log a single element, e.g. value.item())"
    raise TypeError(
        f"metric {name!r}: a value of type {kind} is not a number{hint}; "
        "log an int, float, bool, NumPy scalar or 0-d array"
    )


def check_name(name: Any, what: str = "metric") -> str:
    """Return ``name`` if it is a non-empty string, else raise a ``TypeError``/``ValueError``."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    return name


def check_step(step: Any, name: str = "") -> int:
    """Return ``step`` as an int; bools, floats with a fraction and negatives are refused."""
    where = f" for metric {name!r}" if name else ""
    if isinstance(step, bool):
        raise TypeError(f"step{where} must be an int, not bool: {step!r}")
    if not isinstance(step, numbers.Integral):
        if isinstance(step, numbers.Real) and float(step).is_integer():
            return int(step)
        raise TypeError(f"step{where} must be an int, not {type(step).__name__}: {step!r}")
    if step < 0:
        raise ValueError(f"step must not be negative, got {step}")
    return int(step)


def check_relative_path(path: Any) -> str:
    """Return ``path`` if it is a non-empty relative path without ``..``, else raise."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"artifact path must be a non-empty string, got {path!r}")
    parts = PurePosixPath(path).parts
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or ".." in parts:
        raise ValueError(f"artifact path {path!r} must be relative, without '..'")
    return path


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, ParamValue]:
    """Flatten nested mappings into ``{"a/b": value}`` and normalise every leaf value."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    return dict(_flatten(params, prefix))


def _flatten(params: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, ParamValue]]:
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"parameter names must be non-empty strings, got {key!r}")
        full = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            yield from _flatten(value, full)
        else:
            yield full, to_param_value(value)


def to_param_value(value: Any) -> ParamValue:
    """Normalise a parameter value: plain scalars stay, NumPy scalars unwrap, others become str."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return to_param_value(value.item())
    if isinstance(value, list | tuple | set | frozenset):
        return str(list(value) if isinstance(value, set | frozenset) else value)
    return str(value)
