"""Artifact logging for one run: files and bundles, snapshotted, versioned, journaled.

A file is snapshotted into the local store during the call (overwriting it right after
is safe), then hashed and journaled off the training thread. A version is taken only once
every file of the call is known to be good, so a failed call never skips a version.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracelet.media import PendingArtifact
from tracelet.values import check_relative_path

if TYPE_CHECKING:
    from tracelet.artifacts import ArtifactResult, TraceletArtifact
    from tracelet.plugins import BackendPlugin, RunInfo
    from tracelet.storage import LocalStore

_time = time.time


class ArtifactLogger:
    """Logs artifacts into the run ``run``: ``put`` queues each file's record."""

    def __init__(
        self,
        run: RunInfo,
        store: LocalStore,
        put: Callable[[Any], None],
        backends: Sequence[BackendPlugin],
        versions: Mapping[str, int],
    ) -> None:
        self.run = run
        self.store = store
        self.put = put
        self.backends = list(backends)
        self.versions = dict(versions)
        """Artifact key (artifact name or path) to the latest version logged."""

    def log(
        self, artifact: str | os.PathLike[str] | TraceletArtifact, artifact_path: str | None
    ) -> dict[str, ArtifactResult]:
        """Log a file (a path) or a bundle; return, per backend, where it will be found."""
        from tracelet.artifacts import ArtifactResult, TraceletArtifact, artifact_kind

        if isinstance(artifact, TraceletArtifact):
            key = artifact.name
            version = self.versions.get(key, 0) + 1
            staging = self._files() / "staging" / f"{artifact.name}-v{version}"
            pending = [
                self._pending_file(
                    path,
                    target,
                    artifact.name,
                    artifact.type.value,
                    version,
                    owned=Path(path).is_relative_to(staging),
                )
                for path, target in artifact.materialize(staging)
            ]
        elif isinstance(artifact, str | os.PathLike):
            key = check_relative_path(artifact_path or Path(artifact).name)  # (plain str)
            version = self.versions.get(key, 0) + 1
            kind = artifact_kind(key)
            pending = [self._pending_file(artifact, key, Path(artifact).name, kind, version)]
        else:
            raise TypeError(
                f"artifact must be a path or a TraceletArtifact, not {type(artifact).__name__}"
            )
        self.versions[key] = version  # taken only once every file is known to be good
        for record in pending:
            self.put(record)
        return {
            backend.name: ArtifactResult(
                backend.name,
                backend.artifact_uri(self.run, key, version),
                str(version),
                {"status": "queued"},
            )
            for backend in self.backends
        }

    def _files(self) -> Path:
        return self.store.files_dir(self.run.id)

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
            staging = self._files() / "staging"
            staging.mkdir(parents=True, exist_ok=True)
            source = Path(shutil.copyfile(source, staging / f"{uuid.uuid4().hex}-{source.name}"))
        return PendingArtifact(name, str(source), artifact_path, kind, _time(), version, True)
