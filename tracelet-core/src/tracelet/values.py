"""What Tracelet accepts as a metric value, a step, a name, and a parameter."""

from __future__ import annotations

import decimal
import math
import numbers
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

ParamValue = str | int | float | bool | None


MAX_STEP = 2**63 - 1
"""The largest step SQLite (and every tracking tool) can store."""

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool | None:
    """``"yes"``/``"true"``/``"on"``/``"1"`` -> True, their opposites -> False, else None."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    return False if lowered in _FALSE else None


def to_metric_value(name: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``TypeError`` naming the metric and the type.

    Accepted: int, float, bool, ``Decimal``, ``Fraction``, NumPy scalars, and 0-d arrays or
    tensors (anything with ``ndim == 0`` that converts with ``float``). NaN and infinities
    are kept as they are; an int too large for a float is a ``ValueError``.
    """
    if isinstance(value, numbers.Real | decimal.Decimal) or (
        getattr(value, "ndim", None) == 0 and not isinstance(value, str | bytes)
    ):
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(f"metric {name!r}: {value!r} is too large for a float") from None
        except (TypeError, ValueError):
            pass
        else:  # a finite Decimal beyond float's range becomes inf instead of raising
            if isinstance(value, decimal.Decimal) and value.is_finite() and math.isinf(number):
                raise ValueError(f"metric {name!r}: {value!r} is too large for a float")
            return number
    kind = type(value).__name__
    hint = ""
    if getattr(value, "ndim", 0) and _elements(value) == 1:
        hint = " (it is an array of one element: log value.item())"
    elif getattr(value, "ndim", 0):
        hint = " (it has more than one element: log a single element, e.g. value.mean())"
    raise TypeError(
        f"metric {name!r}: a value of type {kind} is not a number{hint}; "
        "log an int, float, bool, NumPy scalar or 0-d array"
    )


def _elements(array: Any) -> int | None:
    """How many elements an array (``size``) or a tensor (``numel()``) holds."""
    size = getattr(array, "size", None)
    if callable(size):
        numel = getattr(array, "numel", None)
        return numel() if callable(numel) else None
    return size


def check_name(name: Any, what: str = "metric") -> str:
    """Return ``name`` if it is a non-empty string that can be stored, else raise."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, not {type(name).__name__}: {name!r}")
    if not name:
        raise ValueError(f"{what} name must not be empty")
    return check_text(name, f"{what} name")


def check_text(text: str, what: str = "text") -> str:
    """Return ``text`` as a plain ``str`` (a subclass, such as a ``str`` enum, becomes its
    value) if it encodes as UTF-8 (no lone surrogates), else raise ValueError."""
    if type(text) is not str:
        text = str.__str__(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{what} {text!r} cannot be stored as UTF-8 ({error.reason})") from None
    return text


def check_step(step: Any, name: str = "") -> int:
    """Return ``step`` as an int in ``0 .. 2**63 - 1``; bools and fractions are refused."""
    where = f" for metric {name!r}" if name else ""
    if isinstance(step, bool):
        raise TypeError(f"step{where} must be an int, not bool: {step!r}")
    if not isinstance(step, numbers.Integral):
        if not (isinstance(step, numbers.Real) and float(step).is_integer()):
            raise TypeError(f"step{where} must be an int, not {type(step).__name__}: {step!r}")
        step = int(step)
    if not 0 <= step <= MAX_STEP:
        raise ValueError(f"step{where} must be between 0 and 2**63 - 1, got {step}")
    return int(step)


def check_run_id(run_id: Any) -> str:
    """Return ``run_id`` if it is 1-128 letters, digits, ``_``, ``.`` or ``-`` (no paths)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id must be 1-128 letters, digits, '_', '.' or '-' starting with a letter "
            f"or digit, got {run_id!r}"
        )
    return run_id


def check_relative_path(path: Any) -> str:
    """Return ``path`` (as a plain ``str``) if it is a relative file path that can be
    stored, else raise.

    Refused: empty, absolute, ``.``/``..`` parts, NUL bytes, parts over 255 bytes.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"artifact path must be a non-empty string, got {path!r}")
    parts = PurePosixPath(path).parts
    if (
        PurePosixPath(path).is_absolute()
        or PureWindowsPath(path).is_absolute()
        or any(part in (".", "..") for part in path.replace("\\", "/").split("/"))
        or "\0" in path
    ):
        raise ValueError(f"artifact path {path!r} must be relative, without '.', '..' or NUL")
    path = check_text(path, "artifact path")  # (a plain str)
    if any(len(part.encode()) > 255 for part in parts):
        raise ValueError(f"artifact path {path!r} has a part longer than 255 bytes")
    return path


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, ParamValue]:
    """Flatten nested mappings into ``{"a/b": value}`` and normalise every leaf value.

    A mapping that contains itself is a ValueError naming the key where the cycle closes.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict, not {type(params).__name__}")
    return dict(_flatten(params, prefix, (id(params),)))


def _flatten(
    params: Mapping[str, Any], prefix: str, path: tuple[int, ...]
) -> Iterator[tuple[str, ParamValue]]:
    for key, value in params.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"parameter names must be non-empty strings, got {key!r}")
        key = check_text(key, "parameter name")  # (a str enum member: its value)
        full = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            if id(value) in path:
                raise ValueError(
                    f"parameter {full!r} contains a dict it is inside of (a cycle); "
                    "log a copy without the cycle"
                )
            yield from _flatten(value, full, (*path, id(value)))
        else:
            yield full, to_param_value(value)


def to_param_value(value: Any) -> ParamValue:
    """Normalise a parameter value: plain scalars stay (an enum member or other subclass of
    one becomes the plain value), NumPy scalars unwrap, others become str."""
    if isinstance(value, str):
        return check_text(value, "parameter value")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if -MAX_STEP - 1 <= value <= MAX_STEP else str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return to_param_value(value.item())
    if isinstance(value, list | tuple | set | frozenset):
        return str(list(value) if isinstance(value, set | frozenset) else value)
    return str(value)
