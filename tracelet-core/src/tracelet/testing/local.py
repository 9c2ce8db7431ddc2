"""The read-back adapter of the local store: the reference :class:`ReadBack`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tracelet.storage import LocalStore

T = TypeVar("T")


class LocalReadBack:
    """Reads runs from the local store at ``path`` (a ``local`` backend's ``path`` option).

    Each call opens the store without crash recovery (reading never changes a run) and
    closes it again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self, read: Callable[[LocalStore], T]) -> T:
        store = LocalStore(self.path, recover=False)
        try:
            return read(store)
        finally:
            store.close()

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        """Every metric point as ``(name, value, step, timestamp)``."""
        return self._read(lambda store: store.metrics(run_id))

    def params(self, run_id: str) -> dict[str, Any]:
        """The run's parameters."""
        return self._read(lambda store: store.params(run_id))

    def tags(self, run_id: str) -> dict[str, str]:
        """The run's tags."""
        return self._read(lambda store: store.tags(run_id))

    def texts(self, run_id: str) -> list[tuple[str, int, str]]:
        """Every text as ``(name, step, text)``."""
        return self._read(lambda store: [(t.name, t.step, t.text) for t in store.texts(run_id)])

    def images(self, run_id: str) -> list[tuple[str, int, bytes]]:
        """Every image as ``(name, step, PNG bytes)``, read from the stored files."""
        return self._read(
            lambda store: [
                (i.name, i.step, Path(i.path).read_bytes()) for i in store.images(run_id)
            ]
        )

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """Artifact path to the bytes of its stored file (the latest version)."""
        return self._read(
            lambda store: {
                a.artifact_path: Path(a.path).read_bytes() for a in store.artifacts(run_id)
            }
        )

    def histograms(self, run_id: str) -> list[tuple[str, int, tuple, tuple]]:
        """Every histogram as ``(name, step, counts, edges)``."""
        return self._read(
            lambda store: [(h.name, h.step, h.counts, h.edges) for h in store.histograms(run_id)]
        )

    def status(self, run_id: str) -> str:
        """The run's status."""
        return self._read(lambda store: _run(store, run_id).status.value)

    def run_count(self, run_id: str) -> int:
        """1 when the store holds the run, else 0 (run ids are unique in a store)."""
        return self._read(lambda store: int(store.get_run(run_id) is not None))


def _run(store: LocalStore, run_id: str) -> Any:
    run = store.get_run(run_id)
    if run is None:
        raise LookupError(f"no run {run_id} in the local store at {store.path}")
    return run
