"""Reading runs back from the local store: metrics, params, files, checkpoints, anomalies.

A mixin of :class:`~tracelet.storage.store.LocalStore`, which provides the connection,
the run lookups and the journal these methods read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from tracelet.records import Artifact, Histogram, Image, MetricPoint, RunStatus, Text
from tracelet.storage.sql import finite_or_none, nan_of, to_json, transaction
from tracelet.values import ParamValue

if TYPE_CHECKING:
    from tracelet.storage.store import StoredRun


class RunReader:
    """The read side of the local store (and the checkpoint and anomaly tables)."""

    # -- checkpoints and anomalies -------------------------------------------------------

    def write_checkpoint(self, run_id: str, checkpoint: Mapping[str, Any]) -> None:
        """Store (or replace) the checkpoint of ``checkpoint["step"]``.

        Keys: ``step``, ``timestamp``, ``first_step`` (the first step it covers),
        ``metrics``, ``gradient_stats``, ``system_metrics`` (dicts) and ``samples`` (a list).
        """
        parts = ("metrics", "gradient_stats", "system_metrics")
        row = (
            self._pk(run_id),
            checkpoint["step"],
            checkpoint["timestamp"],
            checkpoint.get("first_step", checkpoint["step"]),
            *(to_json(checkpoint.get(part) or {}) for part in parts),
            to_json(checkpoint.get("samples") or []),
        )
        self.connection().execute(
            "INSERT OR REPLACE INTO checkpoints(run, step, ts, first_step, metrics,"
            " gradient_stats, system_metrics, samples) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints in step order, as dicts."""
        rows = self.connection().execute(
            "SELECT step, ts, first_step, metrics, gradient_stats, system_metrics, samples"
            " FROM checkpoints WHERE run = ? ORDER BY step",
            (self._pk(run_id),),
        )
        return [
            {
                "run_id": run_id,
                "step": step,
                "timestamp": ts,
                "first_step": first,
                "metrics": json.loads(m),
                "gradient_stats": json.loads(g),
                "system_metrics": json.loads(s),
                "samples": json.loads(samples),
            }
            for step, ts, first, m, g, s, samples in rows
        ]

    def add_anomalies(self, anomalies: Iterable[Mapping[str, Any]]) -> int:
        """Store anomaly dicts (one per run, step, metric and kind); return how many are new."""
        rows = [
            (
                self._pk(a["run_id"]),
                a["step"],
                a["metric"],
                a["kind"],
                a["severity"],
                finite_or_none(a.get("value")),
                a["message"],
                time.time() if a.get("timestamp") is None else a["timestamp"],
            )
            for a in anomalies
        ]
        con = self.connection()
        before = con.total_changes
        con.executemany(
            "INSERT OR IGNORE INTO anomalies(run, step, metric, kind, severity, value, message,"
            " ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        return con.total_changes - before

    def anomalies(self, run_id: str) -> list[dict[str, Any]]:
        """The run's stored anomalies in step order, as dicts."""
        rows = self.connection().execute(
            "SELECT step, metric, kind, severity, value, message, ts FROM anomalies"
            " WHERE run = ? ORDER BY step, metric, kind",
            (self._pk(run_id),),
        )
        return [
            {
                "run_id": run_id,
                "step": step,
                "metric": metric,
                "kind": kind,
                "severity": severity,
                "value": nan_of(value),
                "message": message,
                "timestamp": ts,
            }
            for step, metric, kind, severity, value, message, ts in rows
        ]

    def latest_metric_values(self, run_id: str, after_id: int = 0) -> dict[str, tuple[float, int]]:
        """The newest ``(value, step)`` of each metric logged after metric row ``after_id``."""
        rows = self.connection().execute(
            "SELECT m.key, m.value, m.step FROM metrics m JOIN ("
            "  SELECT key, max(id) AS id FROM metrics WHERE run = ? AND id > ? GROUP BY key"
            ") newest ON m.id = newest.id",
            (self._pk(run_id), after_id),
        )
        return {key: (nan_of(value), step) for key, value, step in rows}

    def last_metric_id(self) -> int:
        """The rowid of the newest metric point in the store (0 when empty)."""
        return self.connection().execute("SELECT max(id) FROM metrics").fetchone()[0] or 0

    def metric_overview(self, run_id: str) -> dict[str, dict[str, Any]]:
        """Per metric: ``count``, ``last`` value (the last logged), ``first_step``, ``last_step``,
        ``min`` and ``max`` (NaN ignored).

        Computing it sorts every point of the run (about 0.65 s per million), so for a run
        that is no longer running it is kept in ``metric_summaries``, valid while the run's
        last batch is the one it was computed from.
        """
        pk, seq = self._pk(run_id), self.last_seq(run_id)
        con = self.connection()
        rows = con.execute(
            "SELECT key, count, last, first_step, last_step, min, max FROM metric_summaries"
            " WHERE run = ? AND seq = ?",
            (pk, seq),
        ).fetchall()
        if not rows:
            rows = self._summarize_metrics(pk)
            run = self.get_run(run_id)
            if run is not None and run.status is not RunStatus.RUNNING:
                with transaction(con):
                    con.execute("DELETE FROM metric_summaries WHERE run = ?", (pk,))
                    con.executemany(
                        "INSERT INTO metric_summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(pk, seq, *row) for row in rows],
                    )
        return {
            key: {
                "count": count,
                "last": nan_of(last),
                "first_step": first,
                "last_step": final,
                "min": nan_of(low),
                "max": nan_of(high),
            }
            for key, count, last, first, final, low, high in rows
        }

    def _summarize_metrics(self, pk: int) -> list[tuple[Any, ...]]:
        con = self.connection()
        rows = con.execute(
            "SELECT m.key, count(*), max(m.id), min(m.step), max(m.step), min(m.value),"
            " max(m.value) FROM batches b JOIN metrics m"
            " ON m.id BETWEEN b.first_metric AND b.last_metric WHERE b.run = ? GROUP BY m.key",
            (pk,),
        ).fetchall()
        last_ids = [row[2] for row in rows]
        values = dict(
            con.execute(
                f"SELECT id, value FROM metrics WHERE id IN ({','.join('?' * len(last_ids))})",
                last_ids,
            )
        )
        return [(key, n, values[last], *rest) for key, n, last, *rest in rows]

    def find_runs(self, reference: str) -> list[StoredRun]:
        """Runs whose id is ``reference``, else whose id starts with it, else named it."""
        exact = self._select_runs("WHERE r.id = ?", (reference,))
        if exact:
            return exact
        escaped = reference.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return self._select_runs(
            "WHERE r.id LIKE ? ESCAPE '\\' OR r.name = ?", (escaped + "%", reference)
        )

    def metric_names(self, run_id: str) -> list[str]:
        """The names of the run's metrics, sorted."""
        rows = self.connection().execute(
            "SELECT DISTINCT m.key FROM batches b JOIN metrics m"
            " ON m.id BETWEEN b.first_metric AND b.last_metric WHERE b.run = ? ORDER BY m.key",
            (self._pk(run_id),),
        )
        return [key for (key,) in rows]

    # -- reading a run back --------------------------------------------------------------

    def metrics(self, run_id: str, name: str | None = None) -> list[MetricPoint]:
        """Every metric point of the run (or of one metric), in the order it was logged."""
        sql = (
            "SELECT m.key, m.value, m.step, m.ts FROM batches b JOIN metrics m"
            " ON m.id BETWEEN b.first_metric AND b.last_metric WHERE b.run = ?"
        )
        args: tuple[Any, ...] = (self._pk(run_id),)
        if name is not None:
            sql += " AND m.key = ?"
            args += (name,)
        rows = self.connection().execute(sql + " ORDER BY m.id", args)
        return [(k, nan_of(v), s, t) for k, v, s, t in rows]

    def last_step(self, run_id: str) -> int:
        """The highest step of the run's metrics (0 when none)."""
        row = (
            self.connection()
            .execute(
                "SELECT max(m.step) FROM batches b JOIN metrics m"
                " ON m.id BETWEEN b.first_metric AND b.last_metric WHERE b.run = ?",
                (self._pk(run_id),),
            )
            .fetchone()
        )
        return row[0] or 0

    def params(self, run_id: str) -> dict[str, ParamValue]:
        """The run's parameters, the latest value of each."""
        rows = self.connection().execute(
            "SELECT key, value FROM params WHERE run = ? ORDER BY batch", (self._pk(run_id),)
        )
        return {key: json.loads(value) for key, value in rows}

    def tags(self, run_id: str) -> dict[str, str]:
        """The run's tags, the latest value of each."""
        rows = self.connection().execute(
            "SELECT key, value FROM tags WHERE run = ? ORDER BY batch", (self._pk(run_id),)
        )
        return dict(rows.fetchall())

    def texts(self, run_id: str) -> list[Text]:
        """The run's texts, in the order they were logged."""
        return self._events(run_id, "texts")

    def images(self, run_id: str) -> list[Image]:
        """The run's images, in the order they were logged."""
        return self._events(run_id, "images")

    def artifacts(self, run_id: str) -> list[Artifact]:
        """The run's artifacts, in the order they were logged."""
        return self._events(run_id, "artifacts")

    def histograms(self, run_id: str) -> list[Histogram]:
        """The run's histograms, in the order they were logged."""
        return self._events(run_id, "histograms")

    def _events(self, run_id: str, kind: str) -> list[Any]:
        pk = self._pk(run_id)
        last = self.last_seq(run_id)
        found = self._read_events(self.connection(), pk, 0, last, (kind,))[kind]
        return [item for seq in sorted(found) for item in found[seq]]
