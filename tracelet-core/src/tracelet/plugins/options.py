"""Typed backend options: declared once in the registration, checked by the core.

A backend lists its options as :class:`Option` records. Tracelet checks what users give
(``config={"mlflow": {...}}``, ``"mlflow_tracking_uri"``, ``tracelet.yaml``, ``tracelet
sync --option``) against them before the backend sees anything: an unknown key or a value
of the wrong type is a :class:`~tracelet.exceptions.ConfigurationError` naming the key,
and ``initialize`` receives every declared option, defaults filled in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from tracelet.exceptions import ConfigurationError, did_you_mean
from tracelet.values import parse_bool


def _as_types(value: type | tuple[type, ...]) -> tuple[type, ...]:
    return value if isinstance(value, tuple) else (value,)


@attrs.frozen
class Option:
    """One option a backend accepts.

    ``type`` is a type or a tuple of types the value must be an instance of (an ``int`` is
    accepted for ``float``; ``None`` always means "not set": the default). A ``secret``
    option (a password, an API key) is never stored in the journal or shown: ``tracelet
    sync`` takes it again from ``--option``, ``tracelet.yaml`` or ``env``, the tool's own
    environment variable for it.
    """

    name: str
    type: tuple[type, ...] = attrs.field(default=(str,), converter=_as_types)
    default: Any = None
    doc: str = ""
    secret: bool = False
    env: str | None = None
    minimum: float | None = None
    """The smallest number accepted (for ``int`` and ``float`` options)."""

    def check(self, backend: str, value: Any) -> Any:
        """``value`` as the backend receives it, or a ConfigurationError naming the option."""
        if value is None:
            return self.default
        if float in self.type and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in self.type:
            raise self._wrong(backend, value)
        if not isinstance(value, self.type):
            raise self._wrong(backend, value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigurationError(f"{backend} option {self.name!r} must be finite, not {value}")
        if self.minimum is not None and isinstance(value, int | float) and value < self.minimum:
            raise ConfigurationError(
                f"{backend} option {self.name!r} must be >= {self.minimum:g}, not {value}"
            )
        return value

    def parse(self, backend: str, text: str) -> Any:
        """The value of ``text`` as given on a command line (``--option key=value``)."""
        for kind in self.type:
            try:
                if kind is bool and parse_bool(text) is not None:
                    return parse_bool(text)
                if kind in (int, float):
                    return self.check(backend, kind(text))
                if kind in (str, os.PathLike):
                    return text
            except ValueError:
                continue
        raise self._wrong(backend, text)

    def describe(self) -> str:
        """The expected type, as error messages and documentation say it."""
        names = {os.PathLike: "path", Mapping: "mapping"}
        return " or ".join(names.get(kind, kind.__name__) for kind in self.type)

    def _wrong(self, backend: str, value: Any) -> ConfigurationError:
        shown = "***" if self.secret else repr(value)
        return ConfigurationError(
            f"{backend} option {self.name!r} expects {self.describe()}, "
            f"got {type(value).__name__} {shown}"
        )


def check_options(backend: str, schema: Iterable[Option], values: Mapping[str, Any]) -> dict:
    """Every option of ``schema`` checked (or defaulted) from ``values``.

    An unknown key raises ConfigurationError with the closest declared names.
    """
    declared = {option.name: option for option in schema}
    for key in values:
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigurationError(
                f"unknown option {key!r} for backend {backend!r}{did_you_mean(key, declared)} "
                f"(its options: {known})"
            )
    return {name: option.check(backend, values.get(name)) for name, option in declared.items()}
