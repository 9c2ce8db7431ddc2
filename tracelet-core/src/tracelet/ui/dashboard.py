"""What the dashboard's JSON API answers, as plain data: runs, one run, its metrics and
files, and runs compared. Read-only throughout (:class:`~tracelet.ui.readonly.ReadOnlyStore`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from tracelet.analysis.query import QueryEngine, matches_filter
from tracelet.exceptions import NotFoundError
from tracelet.records import RunStatus
from tracelet.storage.schema import SCHEMA_VERSION
from tracelet.storage.store import StoredRun
from tracelet.ui.cache import LruCache
from tracelet.ui.readonly import ReadOnlyStore
from tracelet.ui.series import SeriesIndex, StepRange
from tracelet.ui.summaries import RunMetrics, RunNames

MAX_POINTS = 5000
"""The most points (or buckets) one series request returns."""
DEFAULT_POINTS = 1500
MAX_COMPARED = 12
SERIES_KEPT = 128
"""Metric indexes kept in memory (a long metric's takes up to about 2 MB)."""
RUNS_KEPT = 256
"""Runs whose metric names and summaries are kept in memory."""
FILE_KINDS = ("images", "artifacts")


class Dashboard:
    """The dashboard's questions to one local store."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        """Open the store folder ``store_path`` read-only."""
        self.store = ReadOnlyStore(store_path)
        self.engine = QueryEngine(self.store)
        self._series: LruCache[SeriesIndex] = LruCache(SeriesIndex, size=SERIES_KEPT)
        self._metrics: LruCache[RunMetrics] = LruCache(RunMetrics, size=RUNS_KEPT)
        self._names: LruCache[RunNames] = LruCache(RunNames, size=RUNS_KEPT)

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()

    # -- runs --------------------------------------------------------------------------------

    def store_info(self) -> dict[str, Any]:
        """The store's folder, schema version and number of runs."""
        (runs,) = self.store.connection().execute("SELECT count(*) FROM runs").fetchone()
        return {"path": str(self.store.path), "schema_version": SCHEMA_VERSION, "runs": runs}

    def runs(
        self,
        project: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        param: str | None = None,
    ) -> dict[str, Any]:
        """Runs, oldest first, filtered as ``tracelet list`` filters; and every project."""
        wanted = RunStatus.parse(status).value if status else None
        tags = self._latest("tags")
        params = self._latest("params") if param else {}
        rows = []
        for run in self.store.list_runs(project or None):
            row = self._row(run, tags.get(run.id, {}))
            if wanted and row["status"] != wanted:
                continue
            if tag and not matches_filter(tags.get(run.id, {}), tag, needs_value=False):
                continue
            if param and not matches_filter(params.get(run.id, {}), param, needs_value=True):
                continue
            rows.append(row)
        projects = self.store.connection().execute("SELECT name FROM projects ORDER BY name")
        return {"runs": rows, "projects": [name for (name,) in projects]}

    def _latest(self, table: str) -> dict[str, dict[str, Any]]:
        """Every run's latest tags or params, by run id (one query for all runs)."""
        rows = self.store.connection().execute(
            f"SELECT r.id, t.key, t.value FROM {table} t JOIN runs r ON r.pk = t.run"
            " ORDER BY t.run, t.batch"
        )
        found: dict[str, dict[str, Any]] = {}
        for run_id, key, value in rows:
            found.setdefault(run_id, {})[key] = json.loads(value) if table == "params" else value
        return found

    def _row(self, run: StoredRun, tags: dict[str, str]) -> dict[str, Any]:
        """The run's fields as ``StoredRun`` names them (``id``, ``name``, ``project``,
        ``created_at``, ``ended_at`` ...), less its configuration, with its tags."""
        row = attrs.asdict(run, filter=lambda field, _: field.name != "config")
        row["status"] = self.store.effective_status(run).value
        row["backends"] = list(run.backends)
        row["duration_s"] = None if run.ended_at is None else run.ended_at - run.created_at
        row["tags"] = tags
        return row

    def resolve(self, ref: str) -> StoredRun:
        """The run named by ``ref``: its id, a unique id prefix or a unique name."""
        return self.engine.resolve(ref)

    # -- one run -----------------------------------------------------------------------------

    def run(self, ref: str) -> dict[str, Any]:
        """One run: its row, configuration, params, tags, delivery per backend, counts,
        and the names of its metrics."""
        run = self.resolve(ref)
        row = self._row(run, self.store.tags(run.id))
        kinds: dict[str, int] = {}
        for anomaly in self.store.anomalies(run.id):
            kinds[anomaly["kind"]] = kinds.get(anomaly["kind"], 0) + 1
        row.update(
            config=run.config,
            params=self.store.params(run.id),
            deliveries=[_delivery(d) for d in self.store.deliveries(run.id)],
            batches=self.store.last_seq(run.id),
            anomalies=kinds,
            counts={table: self._count(run, table) for table in _COUNTED},
            metric_names=self.metric_names(run),
        )
        return row

    def metric_names(self, run: StoredRun) -> list[str]:
        """The names of the run's metrics, sorted."""
        names = self._names.get(self.store.run_pk(run.id))
        with names.lock:
            return names.refresh(self.store.connection())

    def _count(self, run: StoredRun, table: str) -> int:
        sql = f"SELECT count(*) FROM {table} WHERE run = ?"
        return self.store.connection().execute(sql, (self.store.run_pk(run.id),)).fetchone()[0]

    def metrics(self, ref: str) -> dict[str, dict[str, Any]]:
        """Each metric of the run: ``count``, ``last`` (at ``step``), ``first_step``,
        ``last_step``, ``min``, ``max``, ``nan`` (how many NaN), by name, sorted."""
        run = self.resolve(ref)
        summaries = self._metrics.get(self.store.run_pk(run.id))
        with summaries.lock:
            found = summaries.refresh(self.store.connection())
            return {name: dict(found[name]) for name in sorted(found)}

    def series(
        self,
        ref: str,
        name: str,
        steps: StepRange,
        points: int = DEFAULT_POINTS,
    ) -> dict[str, Any]:
        """One metric's points in ``steps``, downsampled to at most ``points`` buckets
        (see :mod:`tracelet.ui.series`), with whether the run is still running."""
        run = self.resolve(ref)
        if not 1 <= points <= MAX_POINTS:
            raise ValueError(f"points must be between 1 and {MAX_POINTS}, got {points}")
        index = self._series.get(self.store.run_pk(run.id), name)
        with index.lock:
            index.refresh(self.store.connection())
            if not index.buckets:
                raise NotFoundError(self._no_metric(run, name))
            payload = index.read(self.store.connection(), steps, points)
        status = self.store.effective_status(run)
        payload.update(run_id=run.id, metric=name, running=status is RunStatus.RUNNING)
        return payload

    def _no_metric(self, run: StoredRun, name: str) -> str:
        names = self.store.metric_names(run.id)
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"
        return f"run {run.id[:12]} ({run.name!r}) has no metric {name!r}; it has: {listed}"

    def anomalies(
        self, ref: str, metric: str | None = None, after: int | None = None
    ) -> list[dict[str, Any]]:
        """The run's stored anomalies in step order (of one metric, after a step)."""
        found = self.store.anomalies(self.resolve(ref).id)
        return [
            a
            for a in found
            if (metric is None or a["metric"] == metric) and (after is None or a["step"] > after)
        ]

    def checkpoints(self, ref: str, limit: int) -> list[dict[str, Any]]:
        """The run's last ``limit`` checkpoints, in step order."""
        return self.store.checkpoints(self.resolve(ref).id)[-limit:]

    def texts(self, ref: str, limit: int) -> list[dict[str, Any]]:
        """The run's last ``limit`` texts, in the order they were logged."""
        return [attrs.asdict(t) for t in self.store.texts(self.resolve(ref).id)[-limit:]]

    def files(self, ref: str, kind: str) -> list[dict[str, Any]]:
        """The run's ``images`` or ``artifacts``, each with the ``url`` that serves it."""
        run = self.resolve(ref)
        found = []
        for index, item in enumerate(self._records(run, kind)):
            entry = attrs.asdict(item)
            path = Path(entry.pop("path"))
            entry.update(file=path.name, exists=path.is_file())
            entry["url"] = f"/api/runs/{run.id}/{kind}/{index}"
            found.append(entry)
        return found

    def file(self, ref: str, kind: str, index: int) -> Path:
        """The stored file of the run's ``index``-th image or artifact."""
        run = self.resolve(ref)
        records = self._records(run, kind)
        if not 0 <= index < len(records):
            raise NotFoundError(f"run {run.id[:12]} has no {kind[:-1]} #{index}")
        path = Path(records[index].path).resolve()
        if not path.is_relative_to(self.store.path / "files"):  # a row naming another file
            raise NotFoundError(f"run {run.id[:12]}'s {kind[:-1]} #{index} is not in the store")
        if not path.is_file():
            raise NotFoundError(f"the stored file {path} is gone")
        return path

    def _records(self, run: StoredRun, kind: str) -> list[Any]:
        if kind not in FILE_KINDS:
            raise NotFoundError(f"no such kind of file: {kind!r}")
        return self.store.images(run.id) if kind == "images" else self.store.artifacts(run.id)

    # -- several runs ------------------------------------------------------------------------

    def compare(self, refs: Sequence[str], metrics: Sequence[str] = ()) -> dict[str, Any]:
        """Runs side by side: the params that differ, and each metric's summary per run
        (``metrics``, by default those every run has)."""
        if not 2 <= len(refs) <= MAX_COMPARED:
            raise ValueError(f"compare needs 2 to {MAX_COMPARED} runs, got {len(refs)}")
        runs = [self.resolve(ref) for ref in refs]
        params = [self.store.params(run.id) for run in runs]
        summaries = [self.metrics(run.id) for run in runs]
        names = list(metrics) or sorted(set.intersection(*(set(s) for s in summaries)))
        keys = sorted(set().union(*params))
        return {
            "runs": [self._row(run, self.store.tags(run.id)) for run in runs],
            "params": {
                key: [p.get(key) for p in params]
                for key in keys
                if any(p.get(key) != params[0].get(key) for p in params)
            },
            "metrics": {name: [s.get(name) for s in summaries] for name in names},
        }


_COUNTED = ("checkpoints", "texts", "images", "artifacts", "histograms")


def _delivery(state: Any) -> dict[str, Any]:
    found = attrs.asdict(state)
    found.update(phase=state.phase.value, pending=state.pending, description=state.describe())
    return found
