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

import hashlib
import re
from collections.abc import Iterable, Mapping

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
        mapped = _with_suffix(mapped, name)
    return mapped


def _segment(part: str) -> str:
    return "_" * len(part) if set(part) == {"."} else part


def _with_suffix(mapped: str, original: str) -> str:
    digest = hashlib.sha1(original.encode()).hexdigest()[:8]
    return f"{mapped[: MAX_NAME - 9]}_{digest}"


class NameMap:
    """Original names to distinct legal names, for one MLflow run."""

    def __init__(self) -> None:
        self.legal: dict[str, str] = {}
        self._owner: dict[str, str] = {}

    def load(self, tags: Mapping[str, str], names: Iterable[str]) -> None:
        """Take over the mappings of an existing run: its name tags and the names it has."""
        for tag, original in tags.items():
            if tag.startswith(NAME_TAG_PREFIX):
                self._claim(original, tag.removeprefix(NAME_TAG_PREFIX))
        for name in names:
            if name not in self._owner and name not in self.legal:
                self._claim(name, name)

    def __call__(self, name: str) -> str:
        """The legal name for ``name``, chosen once."""
        legal = self.legal.get(name)
        if legal is None:
            legal = legal_name(name)
            if self._owner.get(legal, name) != name:
                legal = _with_suffix(legal, name)
            self._claim(name, legal)
        return legal

    def _claim(self, original: str, legal: str) -> None:
        self.legal[original] = legal
        self._owner[legal] = original

    def tags_for(self, names: Iterable[str]) -> list[tuple[str, str]]:
        """The ``tracelet.name.*`` tags recording how ``names`` were mapped (if they were)."""
        tags = []
        for name in names:
            legal = self.legal[name]
            if legal != name:
                key = legal_name(f"{NAME_TAG_PREFIX}{legal}")
                tags.append((key, cut(name, MAX_TAG_VALUE)))
        return tags


def cut(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending with the truncation marker."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def param_text(value: object) -> str:
    """A parameter value as the text MLflow stores (``None`` as ``"None"``, like MLflow)."""
    return cut(str(value), MAX_PARAM_VALUE)
