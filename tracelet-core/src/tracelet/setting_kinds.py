"""How each kind of setting is parsed from the environment and checked.

A setting is an attrs field made by :func:`setting`: its converter checks every value
given (argument, ``tracelet.yaml``, environment) and raises ConfigurationError naming the
key and what it expects.
"""

from __future__ import annotations

import abc
import copy
import math
from typing import Any

import attrs

from tracelet.exceptions import ConfigurationError
from tracelet.values import parse_bool


class Kind(abc.ABC):
    """How one kind of setting is parsed from the environment and checked."""

    name: str

    @abc.abstractmethod
    def check(self, key: str, value: Any) -> Any:
        """Return ``value`` normalised, or raise ConfigurationError naming ``key``."""

    def from_env(self, key: str, text: str) -> Any:
        return self.check(key, text)

    def fail(self, key: str, value: Any) -> ConfigurationError:
        return ConfigurationError(
            f"setting {key!r} expects {self.name}, got {type(value).__name__} {value!r}"
        )


class Bool(Kind):
    name = "a bool (true/false)"

    def check(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise self.fail(key, value)

    def from_env(self, key: str, text: str) -> bool:
        parsed = parse_bool(text)
        if parsed is None:
            raise self.fail(key, text)
        return parsed


class Number(Kind):
    def __init__(self, kind: type, minimum: float) -> None:
        self.kind = kind
        self.minimum = minimum
        self.name = f"{'an int' if kind is int else 'a finite number'} >= {minimum}"

    def check(self, key: str, value: Any) -> Any:
        ok_types = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            raise self.fail(key, value)
        if not math.isfinite(value) or value < self.minimum:
            raise self.fail(key, value)
        return self.kind(value)

    def from_env(self, key: str, text: str) -> Any:
        try:
            return self.check(key, self.kind(text.strip()))
        except ValueError:
            raise self.fail(key, text) from None


class Str(Kind):
    def __init__(self, optional: bool = False, empty: bool = True) -> None:
        self.optional = optional
        self.empty = empty
        self.name = ("a string" if empty else "a non-empty string") + (
            " or null" if optional else ""
        )

    def check(self, key: str, value: Any) -> str | None:
        if value is None and self.optional:
            return value
        if isinstance(value, str) and (self.empty or value.strip()):
            return str.__str__(value)  # (a str enum member: its value, a plain str)
        raise self.fail(key, value)


class Names(Kind):
    """A list (or set) of strings; a single string or a comma-separated one also works."""

    def __init__(self, unique: bool = False, optional: bool = False) -> None:
        self.unique = unique
        self.optional = optional
        self.name = "a list of strings" + (" or null" if optional else "")

    def check(self, key: str, value: Any) -> list[str] | set[str] | None:
        if value is None and self.optional:
            return None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple | set | frozenset) or not all(
            isinstance(item, str) for item in value
        ):
            raise self.fail(key, value)
        return set(value) if self.unique else list(value)


def setting(default: Any, kind: Kind, doc: str) -> Any:
    """An attrs field holding a setting of ``kind`` (``default=attrs.NOTHING``: required)."""

    def convert(value: Any, _self: Any, field: attrs.Attribute) -> Any:
        return kind.check(field.name, value)

    mutable = isinstance(default, list | set)
    return attrs.field(
        default=attrs.Factory(lambda: copy.copy(default)) if mutable else default,
        converter=attrs.Converter(convert, takes_self=True, takes_field=True),
        metadata={"kind": kind, "doc": doc},
    )
