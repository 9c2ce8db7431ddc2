"""What MLflow accepts as names and values, and how Tracelet maps what it refuses.

MLflow takes letters (unicode included), digits, ``_ - . space : /`` in metric, parameter
and tag names, at most 250 characters, and the name must be a normalised relative path
(no empty, ``.`` or ``..`` segment, no leading or trailing ``/``). Anything else is mapped
to a legal name (``loss@train`` -> ``loss_train``, ``val/loss/`` -> ``val/loss``). Two
names never share a legal name: the second gets a short hash suffix. Each mapping is
recorded on the run as a tag ``tracelet.name.<legal name>`` = original name, and is
reloaded from those tags when the run is resumed. Parameter values over 6000 characters
are cut there with a marker; tags over 5000 too. The full values stay in the local store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from tracelet.plugins import NameMap, with_suffix

MAX_NAME = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
NAME_TAG_PREFIX = "tracelet.name."
TRUNCATION_MARKER = "...[truncated by tracelet; the full value is in the local store]"

_ILLEGAL = re.compile(r"[^\w\-. :/]")


def legal_name(name: str) -> str:
    """``name`` as MLflow accepts it (unchanged when it already does)."""
    text = _ILLEGAL.sub("_", name)
    segments = [_segment(part) for part in text.split("/") if part]
    mapped = "/".join(segments) or "_"
    if len(mapped) > MAX_NAME:
        mapped = with_suffix(mapped, name, MAX_NAME)
    return mapped


def _segment(part: str) -> str:
    return "_" * len(part) if set(part) == {"."} else part


def name_map() -> NameMap:
    """The name map of one MLflow run."""
    return NameMap(legal_name, limit=MAX_NAME)


def load_names(names: NameMap, tags: Mapping[str, str], existing: Iterable[str]) -> None:
    """Take over an existing run's mappings (its ``tracelet.name.*`` tags) and names."""
    mapped = {
        tag.removeprefix(NAME_TAG_PREFIX): original
        for tag, original in tags.items()
        if tag.startswith(NAME_TAG_PREFIX)
    }
    names.load(mapped, existing)


def name_tags(names: NameMap, seen: Iterable[str]) -> list[tuple[str, str]]:
    """The ``tracelet.name.*`` tags recording how the ``seen`` names were mapped."""
    return [
        (legal_name(f"{NAME_TAG_PREFIX}{legal}"), cut(original, MAX_TAG_VALUE))
        for legal, original in names.changed(seen).items()
    ]


def cut(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending with the truncation marker."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def param_text(value: object) -> str:
    """A parameter value as the text MLflow stores (``None`` as ``"None"``, like MLflow)."""
    return cut(str(value), MAX_PARAM_VALUE)
