"""The low-level storage API (Tracer's ``StorageBackend``) over the local store.

For tools that write runs themselves, outside an :class:`~tracelet.Experiment`::

    storage = StorageBackend(TracerConfig(project_name="test"))   # or settings, or a path
    storage.create_run(run_id="123", project_name="test", run_name="run1",
                       start_time=1000.0, config={})
    storage.write_checkpoint(run_id="123", step=100, timestamp=1100.0,
                             metrics={"loss": 0.5}, gradient_stats={}, system_metrics={})
    storage.finish_run("123")
    storage.list_runs(project_name="test"); storage.get_checkpoints("123")

Everything comes back as plain dicts. A run created here is held (locked) by this object
until :meth:`StorageBackend.finish_run` or :meth:`StorageBackend.close`; if the process
dies first, the run is reported as crashed, like any other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.records import Batch, RunInfo, RunStatus
from tracelet.settings import TraceletSettings
from tracelet.storage.locks import RunLock
from tracelet.storage.store import LocalStore, StoredRun
from tracelet.values import check_name, check_run_id, check_step, flatten_params, to_metric_value

if TYPE_CHECKING:
    from tracelet.config import TracerConfig


class StorageBackend:
    """Runs and checkpoints in the local store, as plain dicts."""

    def __init__(
        self, config: TracerConfig | TraceletSettings | str | os.PathLike[str] | Any = None
    ) -> None:
        """Open the store of ``config``: a :class:`~tracelet.config.TracerConfig`, settings,
        a path, any object with a ``store_path`` or ``storage_path`` attribute, or None (the
        ``store_path`` setting)."""
        self.settings = _settings(config)
        """The settings this object works under (its store, and the runs' retention)."""
        self.store = LocalStore(self.settings.store_path)
        self._locks: dict[str, RunLock] = {}

    def create_run(
        self,
        run_id: str,
        project_name: str,
        run_name: str,
        start_time: float,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """Create a running run; ``config`` is stored as its parameters."""
        check_run_id(run_id)
        self._locks[run_id] = self.store.lock_run(run_id)
        kept = {"settings": {"retention_days": self.settings.retention_days}}
        self.store.create_run(RunInfo(run_id, run_name, project_name, start_time), config=kept)
        if config:
            batch = Batch(run_id, self.store.last_seq(run_id) + 1, params=flatten_params(config))
            self.store.write_batch(batch)

    def write_checkpoint(
        self,
        run_id: str,
        step: int,
        timestamp: float,
        metrics: Mapping[str, Any],
        gradient_stats: Mapping[str, Any] | None = None,
        system_metrics: Mapping[str, Any] | None = None,
        samples: list[Any] | None = None,
    ) -> None:
        """Record the checkpoint of ``step``; its metrics also join the run's metric history."""
        step = check_step(step)
        values = {check_name(n): to_metric_value(n, value) for n, value in metrics.items()}
        points = [(name, value, step, timestamp) for name, value in values.items()]
        self.store.write_batch(Batch(run_id, self.store.last_seq(run_id) + 1, points))
        before = [c["step"] for c in self.store.checkpoints(run_id) if c["step"] < step]
        self.store.write_checkpoint(
            run_id,
            {
                "step": step,
                "timestamp": timestamp,
                "first_step": max(before) + 1 if before else 0,
                "metrics": values,
                "gradient_stats": dict(gradient_stats or {}),
                "system_metrics": dict(system_metrics or {}),
                "samples": list(samples or []),
            },
        )

    def finish_run(
        self, run_id: str, status: str = "finished", end_time: float | None = None
    ) -> None:
        """Record the run's final status and release it."""
        self.store.finish_run(run_id, RunStatus.parse(status), end_time)
        lock = self._locks.pop(run_id, None)
        if lock is not None:
            lock.release(remove=True)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run as a dict, or None."""
        run = self.store.get_run(run_id)
        return run_dict(run) if run else None

    def list_runs(
        self, project_name: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs (oldest first) as dicts, optionally of one project and/or status."""
        return [run_dict(run) for run in self.store.list_runs(project_name, status)]

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints, in step order."""
        return self.store.checkpoints(run_id)

    def close(self) -> None:
        """Release the runs this object holds and close the store."""
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()
        self.store.close()


def run_dict(run: StoredRun) -> dict[str, Any]:
    """A stored run as a plain dict (``run_id``, ``run_name``, ``project_name`` ...)."""
    data = attrs.asdict(run)
    data["status"] = run.status.value
    data["backends"] = list(run.backends)
    data["run_id"] = data.pop("id")
    data["run_name"] = data.pop("name")
    data["project_name"] = data.pop("project")
    data["start_time"] = data.pop("created_at")
    data["end_time"] = data.pop("ended_at")
    return data


def _settings(config: Any) -> TraceletSettings:
    from tracelet.config import TracerConfig

    if isinstance(config, TraceletSettings):
        return config
    if isinstance(config, TracerConfig):
        return config.settings()
    if config is None:
        return TraceletSettings.load()
    if isinstance(config, str | os.PathLike):
        return TraceletSettings(store_path=os.fspath(config))
    for attribute in ("store_path", "storage_path"):
        path = getattr(config, attribute, None)
        if path:
            return TraceletSettings(store_path=os.fspath(path))
    raise TypeError(
        "StorageBackend takes a TracerConfig, TraceletSettings, a store path, or an object "
        f"with a store_path attribute, not {type(config).__name__}"
    )
