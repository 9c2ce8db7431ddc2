"""The built-in ``local`` backend: runs written into a local store.

By default it targets the journal itself. The journal already holds every batch and
:meth:`LocalStore.write_batch` skips a batch it has, so delivery there costs one lookup.
With ``path`` set (``config={"local": {"path": "/shared/tracelet"}}``) it copies runs,
their images and their artifact files into another store, such as a team's shared folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from tracelet import __version__
from tracelet.core.plugins import BackendPlugin, BackendRegistration, PluginMetadata, PluginType
from tracelet.exceptions import ConfigurationError
from tracelet.hookspecs import hookimpl
from tracelet.media import stored_artifact_path
from tracelet.records import Batch, RunInfo, RunStatus
from tracelet.storage.locks import RunLock
from tracelet.storage.store import LocalStore


class LocalBackend(BackendPlugin):
    """Writes every batch into a :class:`LocalStore` (idempotently, by batch ``seq``)."""

    def __init__(self) -> None:
        super().__init__()
        self.store: LocalStore | None = None
        self.run: RunInfo | None = None
        self.lock: RunLock | None = None

    @classmethod
    def get_metadata(cls) -> PluginMetadata:
        """The local backend's metadata."""
        return PluginMetadata(
            "local", __version__, PluginType.BACKEND, "The embedded SQLite store; no server"
        )

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Accept ``path``: the store folder to write to (default: the journal's)."""
        unknown = set(config) - {"path"}
        if unknown:
            raise ConfigurationError(f"unknown option(s) for the local backend: {sorted(unknown)}")
        path = config.get("path")
        if path is not None and not isinstance(path, str | Path):
            raise ConfigurationError(f"local backend option 'path' must be a path, not {path!r}")
        super().initialize(config)

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Open the target store and make sure the run exists there.

        In a store other than the journal, the run is also locked (so other readers see it
        running, not crashed) and reopened as running when it was there before.
        """
        self.run = run
        self.store = LocalStore(self.config.get("path") or run.store_path)
        if self._is_journal():
            self.store.ensure_run(run)
            return
        if self.lock is None:
            self.lock = self.store.lock_run(run.id)
        self.store.create_run(run)

    def log_batch(self, batch: Batch) -> None:
        """Journal ``batch`` in the target store, unless it is already there."""
        assert self.store is not None, "start_run comes first"
        if not self._is_journal():
            batch = self._copy_files(batch)
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

    def _is_journal(self) -> bool:
        assert self.store is not None
        assert self.run is not None
        return self.store.path == Path(self.run.store_path).expanduser().resolve()

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
    return [BackendRegistration("local", LocalBackend, options={"path"}, description=__doc__)]
