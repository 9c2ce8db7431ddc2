"""Artifact logging for :class:`~tracelet.core.experiment.Experiment`: files and bundles.

A file is snapshotted into the local store during the call (overwriting it right after
is safe), then hashed and journaled off the training thread. A version is taken only once
every file of the call is known to be good, so a failed call never skips a version.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracelet.media import PendingArtifact
from tracelet.values import check_relative_path

if TYPE_CHECKING:
    from tracelet.artifacts import ArtifactResult, ArtifactType, TraceletArtifact
    from tracelet.core.plugins import BackendPlugin
    from tracelet.storage import LocalStore

_time = time.time


class ArtifactLogging:
    """The artifact methods of an experiment (a mixin of ``Experiment``)."""

    _id: str
    _plugins: list[BackendPlugin]
    _versions: dict[str, int]

    if TYPE_CHECKING:

        @property
        def is_running(self) -> bool: ...

        @property
        def store(self) -> LocalStore: ...

        def _put(self, record: Any) -> None: ...

        def _not_running(self, record: object) -> None: ...

    def log_artifact(
        self, artifact: str | os.PathLike[str] | TraceletArtifact, artifact_path: str | None = None
    ) -> dict[str, ArtifactResult]:
        """Log a file (a path) or a :class:`~tracelet.artifacts.TraceletArtifact`.

        The file is copied into the local store during the call (so overwriting it right
        after is safe), hashed and journaled off the training thread, then delivered to
        every backend. Returns, per backend, where the artifact will be found.
        """
        from tracelet.artifacts import TraceletArtifact, artifact_kind, results_for

        if not self.is_running:
            self._not_running(artifact)
        if isinstance(artifact, TraceletArtifact):
            version = self._versions.get(artifact.name, 0) + 1
            staging = self.store.files_dir(self._id) / "staging" / f"{artifact.name}-v{version}"
            pending = [
                self._pending_file(
                    path,
                    target,
                    artifact.name,
                    artifact.type.value,
                    version,
                    Path(path).is_relative_to(staging),
                )
                for path, target in artifact.materialize(staging)
            ]
            key = artifact.name
        elif isinstance(artifact, str | os.PathLike):
            key = artifact_path or Path(artifact).name
            version = self._versions.get(key, 0) + 1
            kind = artifact_kind(key)
            pending = [self._pending_file(artifact, key, Path(artifact).name, kind, version)]
        else:
            raise TypeError(
                f"artifact must be a path or a TraceletArtifact, not {type(artifact).__name__}"
            )
        self._versions[key] = version  # taken only once every file is known to be good
        for record in pending:
            self._put(record)
        return results_for(self, key, version)

    def log_file_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Log one file (the older name of :meth:`log_artifact` for paths)."""
        self.log_artifact(local_path, artifact_path)

    def create_artifact(
        self,
        name: str,
        artifact_type: ArtifactType | str = "custom",
        description: str | None = None,
    ) -> TraceletArtifact:
        """A new, empty :class:`~tracelet.artifacts.TraceletArtifact` to fill and log."""
        from tracelet.artifacts import TraceletArtifact

        return TraceletArtifact(name, artifact_type, description)

    def list_artifacts(
        self, type_filter: ArtifactType | str | None = None, backend: str | None = None
    ) -> list[TraceletArtifact]:
        """The run's logged artifacts (latest version of each), optionally of one type.

        Read from the local store, which holds everything every backend was sent; naming a
        ``backend`` only checks that it receives this run.
        """
        from tracelet.artifacts import list_stored

        self._check_backend(backend)
        return list_stored(self.store, self._id, type_filter)

    def get_artifact(
        self, name: str, version: str | int = "latest", backend: str | None = None
    ) -> TraceletArtifact | None:
        """A logged artifact by name (or artifact path) and version (``"latest"``, or n)."""
        from tracelet.artifacts import find_stored

        self._check_backend(backend)
        return find_stored(self.store, self._id, name, version)

    def _check_backend(self, backend: str | None) -> None:
        names = [b.name for b in self._plugins]
        if backend is not None and backend not in names:
            raise ValueError(f"backend {backend!r} does not receive this run (it has: {names})")

    def _pending_file(
        self,
        path: str | os.PathLike[str],
        artifact_path: str,
        name: str,
        kind: str,
        version: int,
        owned: bool = False,
    ) -> PendingArtifact:
        """Check one file and snapshot it (unless Tracelet wrote it: ``owned``)."""
        source = Path(path)
        if not source.is_file():
            raise FileNotFoundError(f"artifact {str(path)!r} is not a file; check the path")
        check_relative_path(artifact_path)
        if not owned:  # snapshot now: the caller may overwrite the file right after this call
            staging = self.store.files_dir(self._id) / "staging"
            staging.mkdir(parents=True, exist_ok=True)
            source = Path(shutil.copyfile(source, staging / f"{uuid.uuid4().hex}-{source.name}"))
        return PendingArtifact(name, str(source), artifact_path, kind, _time(), version, True)
