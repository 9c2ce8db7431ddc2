"""The query engine: answers questions about the runs in a local store, as plain dicts.

Runs are addressed by id, a unique id prefix, or run name; a name several runs share is
an :class:`~tracelet.exceptions.AmbiguousRunError` listing them. Reading is safe while a
training process writes the same store (SQLite WAL).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tracelet.exceptions import AmbiguousRunError, NotFoundError
from tracelet.storage.lowlevel import run_dict
from tracelet.storage.store import DB_NAME, LocalStore, StoredRun


class QueryEngine:
    """Questions about runs: summaries, histories, comparisons, anomalies, checkpoints."""

    def __init__(
        self, storage_path: str | os.PathLike[str] | LocalStore | Any = ".tracelet"
    ) -> None:
        """Open the store at ``storage_path`` (or use a LocalStore / StorageBackend given)."""
        store = getattr(storage_path, "store", storage_path)
        if isinstance(store, LocalStore):
            self.store = store
            return
        path = Path(storage_path)
        if not (path / DB_NAME).is_file():
            raise NotFoundError(
                f"no Tracelet store at {path.resolve()}; log a run first, or point to the "
                "store folder (the one holding tracelet.db)"
            )
        self.store = LocalStore(path)

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # -- finding runs ----------------------------------------------------------------------

    def resolve(self, run: str) -> StoredRun:
        """The run addressed by ``run``: an id, a unique id prefix, or a unique name."""
        found = self.store.find_runs(run)
        if not found:
            raise NotFoundError(f"no run {run!r} in {self.store.path} (see `tracelet list`)")
        if len(found) > 1:
            candidates = "; ".join(
                f"{r.id[:12]} {r.name!r} ({r.project}, {r.status.value})" for r in found[:10]
            )
            raise AmbiguousRunError(
                f"{run!r} matches {len(found)} runs: {candidates}; use a longer id prefix"
            )
        return found[0]

    def list_runs(
        self,
        project: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        param: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, oldest first, filtered by project, status, ``tag`` (``"name"`` or
        ``"name=value"``) and ``param`` (``"name=value"``, compared as text)."""
        runs = self.store.list_runs(project, status)
        if tag is not None:
            runs = [
                r for r in runs if matches_filter(self.store.tags(r.id), tag, needs_value=False)
            ]
        if param is not None:
            runs = [
                r for r in runs if matches_filter(self.store.params(r.id), param, needs_value=True)
            ]
        return [self._row(run) for run in runs]

    def _row(self, run: StoredRun) -> dict[str, Any]:
        row = run_dict(run)
        row["duration_s"] = _duration(run)
        return row

    # -- one run -------------------------------------------------------------------------

    def get_run_summary(self, run_id: str) -> dict[str, Any]:
        """Status, timing, steps, final metrics, params, tags, checkpoints and anomalies."""
        run = self.resolve(run_id)
        overview = self.store.metric_overview(run.id)
        anomalies = self.store.anomalies(run.id)
        kinds: dict[str, int] = {}
        for anomaly in anomalies:
            kinds[anomaly["kind"]] = kinds.get(anomaly["kind"], 0) + 1
        summary = self._row(run)
        summary.update(
            total_steps=max((m["last_step"] + 1 for m in overview.values()), default=0),
            total_points=sum(m["count"] for m in overview.values()),
            final_metrics={name: m["last"] for name, m in sorted(overview.items())},
            metrics=dict(sorted(overview.items())),
            params=self.store.params(run.id),
            tags=self.store.tags(run.id),
            checkpoints=len(self.store.checkpoints(run.id)),
            anomalies=kinds,
            undelivered=self.store.undelivered(run.id),
        )
        return summary

    def get_metric_history(self, run_id: str, name: str) -> list[dict[str, Any]]:
        """Every point of one metric as ``{"step", "value", "timestamp"}``, in step order."""
        run = self.resolve(run_id)
        points = self.store.metrics(run.id, name)
        if not points:
            raise NotFoundError(self._no_metric(run, name))
        ordered = sorted(points, key=lambda p: p[2])
        return [{"step": s, "value": v, "timestamp": t} for _, v, s, t in ordered]

    def _no_metric(self, run: StoredRun, name: str) -> str:
        names = self.store.metric_names(run.id)
        listed = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "") or "none"
        return f"run {run.id[:12]} ({run.name!r}) has no metric {name!r}; it has: {listed}"

    def compare_runs(
        self, run_id1: str, run_id2: str, metrics: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Two runs side by side: per metric their final/min/max and the final difference,
        plus the parameters that differ. ``metrics`` defaults to those both runs have."""
        first, second = self.resolve(run_id1), self.resolve(run_id2)
        a, b = self.store.metric_overview(first.id), self.store.metric_overview(second.id)
        names = list(metrics) if metrics else sorted(set(a) & set(b))
        for name in names:
            if name not in a and name not in b:
                raise NotFoundError(f"neither run has a metric {name!r}")
        params_a, params_b = self.store.params(first.id), self.store.params(second.id)
        return {
            "run_1": self._row(first),
            "run_2": self._row(second),
            "metrics": {name: _side_by_side(a.get(name), b.get(name)) for name in names},
            "params": {
                key: [params_a.get(key), params_b.get(key)]
                for key in sorted(set(params_a) | set(params_b))
                if params_a.get(key) != params_b.get(key)
            },
        }

    def get_anomalies(self, run_id: str, kinds: Iterable[str] | None = None) -> list[dict]:
        """The run's stored anomalies (optionally only some kinds), in step order."""
        run = self.resolve(run_id)
        wanted = set(kinds) if kinds else None
        return [a for a in self.store.anomalies(run.id) if wanted is None or a["kind"] in wanted]

    def get_checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints, in step order."""
        return self.store.checkpoints(self.resolve(run_id).id)

    def find_anomalous_checkpoints(
        self, run_id: str, anomaly_types: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Checkpoints whose steps (``first_step`` to ``step``) saw anomalies of
        ``anomaly_types`` (default: any); each gets an ``anomalies`` list."""
        anomalies = self.get_anomalies(run_id, anomaly_types)
        found = []
        for checkpoint in self.get_checkpoints(run_id):
            inside = [
                a for a in anomalies if checkpoint["first_step"] <= a["step"] <= checkpoint["step"]
            ]
            if inside:
                found.append({**checkpoint, "anomalies": inside})
        return found


def _side_by_side(a: dict | None, b: dict | None) -> dict[str, Any]:
    keep = ("last", "min", "max", "count", "last_step")
    run_1 = {k: a[k] for k in keep} if a else None
    run_2 = {k: b[k] for k in keep} if b else None
    difference = b["last"] - a["last"] if a and b else math.nan
    return {"run_1": run_1, "run_2": run_2, "difference": difference}


def matches_filter(values: dict[str, Any], wanted: str, needs_value: bool) -> bool:
    """Whether ``values`` (a run's tags or params) pass the filter ``wanted`` as ``tracelet
    list`` reads it: ``name`` (present) or ``name=value`` (compared as text, or as JSON)."""
    name, sep, text = wanted.partition("=")
    if not sep:
        if needs_value:
            raise ValueError(f"filter {wanted!r} needs the form name=value")
        return name in values
    if name not in values:
        return False
    value = values[name]
    return text in (str(value), json.dumps(value))


def _duration(run: StoredRun) -> float | None:
    return None if run.ended_at is None else run.ended_at - run.created_at
