"""The artifact watcher: files that appear in watched folders during a run become artifacts.

On with ``watch_filesystem`` (every new or changed file) or ``automagic_artifacts`` (only
files that look like ML artifacts: checkpoints, models, images, configs, tables). It
watches ``artifact_watch_dirs`` (default: the working directory) by polling, on its own
thread; a file is logged once its size has stopped changing between two polls, and a last
scan at stop takes whatever is left. Files present before the run are not logged, nor
anything inside the run's own store (wherever it is), hidden folders, ``mlruns`` or ``wandb``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from tracelet import __version__
from tracelet.artifacts import ARTIFACT_KINDS
from tracelet.hookspecs import hookimpl
from tracelet.plugins import FrameworkPlugin, FrameworkRegistration
from tracelet.reporting import report_once

if TYPE_CHECKING:
    from tracelet.core.experiment import Experiment

SKIPPED_DIRS = {".git", "__pycache__", ".tracelet", "wandb", "mlruns", ".venv", "node_modules"}

Snapshot = dict[Path, tuple[int, int]]


class ArtifactWatcher(FrameworkPlugin):
    """Polls folders and logs what appears in them as artifacts of the run."""

    poll_seconds = 1.0

    def __init__(self) -> None:
        super().__init__()
        self._experiment: Experiment | None = None
        self._roots: list[Path] = []
        self._store: Path | None = None
        self._seen: Snapshot = {}
        self._pending: Snapshot = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether the settings ask for watching."""
        return bool(self.config.get("watch_filesystem") or self.config.get("automagic_artifacts"))

    def start(self) -> None:
        """Start polling (called by :meth:`attach`)."""
        self._thread = threading.Thread(target=self._poll, name="tracelet-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and log what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._log({**self._pending, **self._changed()})

    def attach(self, experiment: Experiment) -> None:
        """Remember what exists now, then watch for what comes."""
        if not self.enabled:
            return
        self._experiment = experiment
        dirs = self.config.get("artifact_watch_dirs") or ["."]
        self._roots = [Path(d).expanduser().resolve() for d in dirs]
        self._store = experiment.store.path
        self._seen = self._scan()
        self.start()

    def detach(self) -> None:
        """Stop watching (after a last scan)."""
        if self.started:
            self.stop()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            changed = self._changed()
            stable = {p: s for p, s in changed.items() if self._pending.get(p) == s}
            self._pending = {p: s for p, s in changed.items() if p not in stable}
            self._log(stable)

    def _changed(self) -> Snapshot:
        return {p: s for p, s in self._scan().items() if self._seen.get(p) != s}

    def _scan(self) -> Snapshot:
        found: Snapshot = {}
        for root in self._roots:
            for folder, dirs, files in os.walk(root):
                dirs[:] = [
                    d
                    for d in dirs
                    if d not in SKIPPED_DIRS
                    and not d.startswith(".")
                    and Path(folder, d) != self._store
                ]
                for name in files:
                    path = Path(folder, name)
                    if self._wanted(path):
                        stat = path.stat()
                        found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def _wanted(self, path: Path) -> bool:
        if self.config.get("watch_filesystem"):
            return True
        return path.suffix.lower() in ARTIFACT_KINDS

    def _log(self, files: Snapshot) -> None:
        experiment = self._experiment
        for path, state in sorted(files.items()):
            self._seen[path] = state
            if experiment is None or not experiment.is_running:
                continue
            root = next(r for r in self._roots if path.is_relative_to(r))
            try:
                experiment.log_artifact(path, artifact_path=path.relative_to(root).as_posix())
            except Exception as error:
                report_once("tracelet artifact watcher", f"could not log {path}: {error!r}")


@hookimpl
def tracelet_register_frameworks() -> list[FrameworkRegistration]:
    """Register the artifact watcher (it only acts when the settings ask for it)."""
    return [
        FrameworkRegistration(
            "artifact-watch",
            ArtifactWatcher,
            "logs new files as artifacts",
            selectable=False,
            version=__version__,
        )
    ]
