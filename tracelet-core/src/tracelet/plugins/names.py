"""Names a tool refuses, mapped once per run to distinct names it accepts.

Every backend meets the same problem: its tool refuses or mangles some names (MLflow
refuses ``@``, W&B reads ``.`` as nesting, tags have length limits). A backend gives
:class:`NameMap` its tool's rule (a function from any name to a legal one); the map picks
each name's legal form once, gives a second name that would land on the same legal form a
short hash suffix instead, and lists what it changed so the backend can record the
mapping on the run (and load it back when the run is resumed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping

from tracelet.records import Artifact


def with_suffix(legal: str, original: str, limit: int | None = None) -> str:
    """``legal`` with a short hash of ``original`` appended, cut to fit in ``limit``."""
    digest = hashlib.sha1(original.encode()).hexdigest()[:8]
    head = legal if limit is None else legal[: limit - 9]
    return f"{head}_{digest}"


def versioned_name(artifact_path: str, version: int) -> str:
    """An artifact's name in a tool that keys artifacts by name alone: its path, with
    ``" (v<version>)"`` from the second version on, so a new version never replaces the
    first (``model.bin``, ``model.bin (v2)``)."""
    return artifact_path if version == 1 else f"{artifact_path} (v{version})"


def bundle_name(artifact: Artifact) -> str | None:
    """The name of the bundle (a ``TraceletArtifact``) whose file ``artifact`` is, or None
    for a file logged alone: a bundle's files are filed under ``<its name>/``."""
    return artifact.name if artifact.artifact_path.startswith(f"{artifact.name}/") else None


def versioned_path(artifact: Artifact) -> str:
    """Where a tool that keys files by path files this version of ``artifact``, so that a
    new version never replaces the first: a file logged alone under its
    :func:`versioned_name` (``model.bin (v2)``), a bundle's files in its versioned folder
    (``dataset (v2)/train.csv``), which the URI of the bundle's version names."""
    bundle = bundle_name(artifact)
    if bundle is None:
        return versioned_name(artifact.artifact_path, artifact.version)
    return versioned_name(bundle, artifact.version) + artifact.artifact_path[len(bundle) :]


def _same(name: str) -> str:
    return name


class NameMap:
    """Original names to distinct legal names, for one run of one tool.

    ``legal`` maps a name to the form the tool accepts (unchanged when it already does);
    ``limit`` is the tool's longest name; ``fold`` says when two legal names collide in the
    tool (``str.casefold`` for a tool whose names ignore case).
    """

    def __init__(
        self,
        legal: Callable[[str], str],
        *,
        limit: int | None = None,
        fold: Callable[[str], str] = _same,
    ) -> None:
        self._legal = legal
        self._limit = limit
        self._fold = fold
        self.legal: dict[str, str] = {}
        """Every name seen so far, to its legal name."""
        self._owner: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        """The legal name for ``name``, chosen once."""
        legal = self.legal.get(name)
        if legal is None:
            legal = self._legal(name)
            if self._limit is not None and len(legal) > self._limit:
                legal = with_suffix(legal, name, self._limit)
            if self._owner.get(self._fold(legal), name) != name:
                legal = with_suffix(legal, name, self._limit)
            self.claim(name, legal)
        return legal

    def claim(self, original: str, legal: str) -> None:
        """Record that ``original`` is (or already was, in the tool) called ``legal``."""
        self.legal[original] = legal
        self._owner[self._fold(legal)] = original

    def reserve(self, names: Iterable[str]) -> None:
        """Keep ``names`` for the backend's own use: no user name maps onto them."""
        for name in names:
            self._owner[self._fold(name)] = "\0reserved"

    def load(self, mapped: Mapping[str, str], names: Iterable[str] = ()) -> None:
        """Take over an existing run's mappings (legal name to original) and the names it
        already holds unmapped, so a resumed run keeps every name where it was."""
        for legal, original in mapped.items():
            self.claim(original, legal)
        for name in names:
            if name not in self.legal and self._fold(name) not in self._owner:
                self.claim(name, name)

    def changed(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Legal name to original, for those of ``names`` (default: all) that were mapped."""
        chosen = self.legal if names is None else {n: self.legal[n] for n in names}
        return {legal: name for name, legal in chosen.items() if legal != name}
