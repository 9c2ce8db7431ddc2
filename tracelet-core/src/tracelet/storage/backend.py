"""The built-in ``local`` backend: runs written into a local store.

By default it targets the journal itself. The journal already holds every batch, so
delivery there costs one lookup (a read, which never waits for the journal writer).
With ``path`` set (``config={"local": {"path": "/shared/tracelet"}}``) it copies runs,
their images and their artifact files into another store, such as a team's shared folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs

from tracelet import __version__
from tracelet.media import stored_artifact_path
from tracelet.plugins import (
    BackendPlugin,
    BackendRegistration,
    Batch,
    Option,
    RunInfo,
    RunStatus,
    hookimpl,
)
from tracelet.storage.locks import RunLock
from tracelet.storage.store import LocalStore

PATH = Option(
    "path",
    (str, os.PathLike),
    doc="The store folder to write runs to (default: the journal's own store).",
)


class LocalBackend(BackendPlugin):
    """Writes every batch into a :class:`LocalStore` (idempotently, by batch ``seq``)."""

    def __init__(self) -> None:
        super().__init__()
        self.store: LocalStore | None = None
        self.run: RunInfo | None = None
        self.lock: RunLock | None = None
        self._is_journal = False
        """Whether the target store is the run's journal (set by :meth:`start_run`)."""

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Open the target store and make sure the run exists there.

        In a store other than the journal, the run is also locked (so other readers see it
        running, not crashed) and reopened as running when it was there before.
        """
        self.run = run
        self.store = LocalStore(self.config.get("path") or run.store_path)
        self._is_journal = self.store.path == Path(run.store_path).expanduser().resolve()
        if self._is_journal:
            self.store.ensure_run(run)
            return
        if self.lock is None:
            self.lock = self.store.lock_run(run.id)
        self.store.create_run(run)

    def log_batch(self, batch: Batch) -> None:
        """Journal ``batch`` in the target store, unless it is already there."""
        assert self.store is not None, "start_run comes first"
        if not self._is_journal:
            batch = self._copy_files(batch)
        elif self.store.has_batch(batch.run_id, batch.seq):
            return  # the usual case: read, without taking the journal writer's lock
        self.store.write_batch(batch)

    def finish_run(self, status: RunStatus) -> None:
        """Record the final status in the target store."""
        assert self.store is not None, "start_run comes first"
        assert self.run is not None, "start_run comes first"
        self.store.finish_run(self.run.id, status)

    def stop(self) -> None:
        """Release the run and close the target store."""
        if self.lock is not None:
            self.lock.release(remove=True)
            self.lock = None
        if self.store is not None:
            self.store.close()
        super().stop()

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """The stored file's path in the target store."""
        root = Path(self.config.get("path") or run.store_path).expanduser().resolve()
        folder = root / "files" / run.id / "artifacts"
        return str(stored_artifact_path(folder, artifact_path, version))

    def _copy_files(self, batch: Batch) -> Batch:
        """The batch with its images and artifacts copied to the same places in the target."""
        assert self.store is not None
        assert self.run is not None
        source = Path(self.run.store_path).expanduser().resolve()
        images = [
            attrs.evolve(i, path=_copy(i.path, source, self.store.path)) for i in batch.images
        ]
        artifacts = [
            attrs.evolve(a, path=_copy(a.path, source, self.store.path)) for a in batch.artifacts
        ]
        return attrs.evolve(batch, images=images, artifacts=artifacts)


def _copy(path: str, source_root: Path, target_root: Path) -> str:
    target = target_root / Path(path).relative_to(source_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    return str(shutil.copy2(path, target))


@hookimpl
def tracelet_register_backends() -> list[BackendRegistration]:
    """Register the ``local`` backend."""
    return [
        BackendRegistration(
            "local",
            LocalBackend,
            options=[PATH],
            description="The embedded SQLite store; no server",
            version=__version__,
        )
    ]
