"""The local store: an SQLite database (WAL mode) plus a folder of stored files.

It is the journal every record passes through before any backend sees it, the default
backend, and what the analysis tools read. One :class:`LocalStore` is safe to share between
threads (each thread gets its own connection) and between processes (SQLite's locking).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import attrs

from tracelet.exceptions import StoreError
from tracelet.records import Artifact, Batch, Image, MetricPoint, RunInfo, RunStatus, Text
from tracelet.storage.locks import RunLock, is_locked
from tracelet.storage.schema import migrate
from tracelet.values import ParamValue, check_run_id

DB_NAME = "tracelet.db"
_NAN = math.nan


@attrs.frozen
class StoredRun:
    """A run as the store knows it."""

    id: str
    name: str
    project: str
    status: RunStatus
    created_at: float
    ended_at: float | None
    host: str
    pid: int
    backends: tuple[str, ...]
    config: Mapping[str, Any]


class LocalStore:
    """The SQLite journal and local backend under ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str] = ".tracelet", *, recover: bool = True) -> None:
        self.path = Path(path).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._run_pks: dict[str, int] = {}
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            migrate(self.connection())
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open the local store at {self.db_path}: {error}") from error
        if recover:
            self.recover_crashed()

    # -- connections ---------------------------------------------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                self.db_path, isolation_level=None, timeout=60.0, check_same_thread=False
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
            with self._guard:
                self._connections.append(con)
        return con

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._guard:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()

    def files_dir(self, run_id: str) -> Path:
        """Where the run's stored images and artifacts live."""
        return self.path / "files" / run_id

    # -- runs ----------------------------------------------------------------------------

    def lock_run(self, run_id: str) -> RunLock:
        """Take the run's lock for this process; raise if a live process writes the run."""
        lock = RunLock(self.path / "locks" / f"{check_run_id(run_id)}.lock")
        if not lock.acquire():
            raise StoreError(
                f"run {run_id} is being written by another live process; "
                "resume it only after that process has finished"
            )
        return lock

    def create_run(
        self,
        info: RunInfo,
        *,
        backends: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> bool:
        """Record ``info`` as running; return True when it resumes an existing run."""
        con = self.connection()
        now_config = json.dumps(dict(config or {}), default=str)
        with _transaction(con):
            con.execute(
                "INSERT OR IGNORE INTO projects(name, created_at) VALUES (?, ?)",
                (info.project, info.created_at),
            )
            (project,) = con.execute(
                "SELECT id FROM projects WHERE name = ?", (info.project,)
            ).fetchone()
            row = (socket.gethostname(), os.getpid(), json.dumps(list(backends)), now_config)
            resumed = con.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, host = ?, pid = ?,"
                " backends = ?, config = ? WHERE id = ?",
                (*row, info.id),
            ).rowcount
            if resumed:
                con.execute(
                    "UPDATE cursors SET finished = 0"
                    " WHERE run = (SELECT pk FROM runs WHERE id = ?)",
                    (info.id,),
                )
            if not resumed:
                con.execute(
                    "INSERT INTO runs(id, project, name, status, created_at, host, pid,"
                    " backends, config) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                    (info.id, project, info.name, info.created_at, *row),
                )
        return bool(resumed)

    def ensure_run(self, info: RunInfo) -> None:
        """Create the run (as running) unless the store already has it."""
        if self.get_run(info.id) is None:
            self.create_run(info)

    def finish_run(self, run_id: str, status: RunStatus, ended_at: float | None = None) -> None:
        """Record the run's final status."""
        self.connection().execute(
            "UPDATE runs SET status = ?, ended_at = ? WHERE id = ?",
            (status.value, time.time() if ended_at is None else ended_at, run_id),
        )

    def get_run(self, run_id: str) -> StoredRun | None:
        """The run with this exact id, or None."""
        rows = self._select_runs("WHERE r.id = ?", (run_id,))
        return rows[0] if rows else None

    def list_runs(self, project: str | None = None, status: str | None = None) -> list[StoredRun]:
        """Runs, oldest first, optionally of one project and/or one status."""
        clauses, args = [], []
        if project is not None:
            clauses.append("p.name = ?")
            args.append(project)
        if status is not None:
            clauses.append("r.status = ?")
            args.append(RunStatus.parse(status).value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._select_runs(where, tuple(args))

    def _select_runs(self, where: str, args: tuple[Any, ...]) -> list[StoredRun]:
        rows = self.connection().execute(
            "SELECT r.id, r.name, p.name, r.status, r.created_at, r.ended_at, r.host, r.pid,"
            f" r.backends, r.config FROM runs r JOIN projects p ON p.id = r.project {where}"
            " ORDER BY r.created_at, r.pk",
            args,
        )
        return [
            StoredRun(
                id=r[0],
                name=r[1],
                project=r[2],
                status=RunStatus(r[3]),
                created_at=r[4],
                ended_at=r[5],
                host=r[6],
                pid=r[7],
                backends=tuple(json.loads(r[8])),
                config=json.loads(r[9]),
            )
            for r in rows
        ]

    def recover_crashed(self) -> list[str]:
        """Mark this host's running runs whose process died as crashed; return their ids."""
        con = self.connection()
        candidates = con.execute(
            "SELECT id FROM runs WHERE status = 'running' AND host = ?", (socket.gethostname(),)
        ).fetchall()
        crashed = [
            run_id
            for (run_id,) in candidates
            if not is_locked(self.path / "locks" / f"{run_id}.lock")
        ]
        for run_id in crashed:
            pk = self._pk(run_id)
            last = con.execute("SELECT max(created_at) FROM batches WHERE run = ?", (pk,))
            ended = last.fetchone()[0]
            con.execute(
                "UPDATE runs SET status = 'crashed', ended_at = ?"
                " WHERE pk = ? AND status = 'running'",
                (ended, pk),
            )
        return crashed

    def delete_run(self, run_id: str) -> None:
        """Remove a run, everything journaled for it, and its stored files.

        Refused (StoreError) while a live process writes the run.
        """
        if is_locked(self.path / "locks" / f"{run_id}.lock"):
            raise StoreError(f"run {run_id} is being written by a live process; not removed")
        pk = self._pk(run_id)
        con = self.connection()
        with _transaction(con):
            con.execute(
                "DELETE FROM metrics WHERE id IN (SELECT m.id FROM batches b JOIN metrics m"
                " ON m.id BETWEEN b.first_metric AND b.last_metric WHERE b.run = ?)",
                (pk,),
            )
            for table in (
                "batches",
                "params",
                "tags",
                "texts",
                "images",
                "artifacts",
                "cursors",
                "checkpoints",
                "anomalies",
                "metric_summaries",
            ):
                con.execute(f"DELETE FROM {table} WHERE run = ?", (pk,))
            con.execute("DELETE FROM runs WHERE pk = ?", (pk,))
        self._run_pks.pop(run_id, None)
        shutil.rmtree(self.files_dir(run_id), ignore_errors=True)

    def _pk(self, run_id: str) -> int:
        pk = self._run_pks.get(run_id)
        if pk is None:
            row = (
                self.connection().execute("SELECT pk FROM runs WHERE id = ?", (run_id,)).fetchone()
            )
            if row is None:
                raise StoreError(f"no run {run_id!r} in the store at {self.path}")
            pk = self._run_pks[run_id] = row[0]
        return pk

    # -- the journal ---------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> bool:
        """Journal ``batch`` in one transaction; return False if it was already there."""
        pk = self._pk(batch.run_id)
        con = self.connection()
        with _transaction(con):
            if con.execute(
                "SELECT 1 FROM batches WHERE run = ? AND seq = ?", (pk, batch.seq)
            ).fetchone():
                return False
            first = last = None
            if batch.metrics:
                last = _insert_metrics(con, pk, batch.metrics)
                first = last - len(batch.metrics) + 1
            con.execute(
                "INSERT INTO batches(run, seq, created_at, first_metric, last_metric)"
                " VALUES (?, ?, ?, ?, ?)",
                (pk, batch.seq, time.time(), first, last),
            )
            self._write_events(con, pk, batch)
        return True

    def _write_events(self, con: sqlite3.Connection, pk: int, batch: Batch) -> None:
        seq = batch.seq
        con.executemany(
            "INSERT INTO params(run, batch, key, value) VALUES (?, ?, ?, ?)",
            [(pk, seq, k, json.dumps(v)) for k, v in batch.params.items()],
        )
        con.executemany(
            "INSERT INTO tags(run, batch, key, value) VALUES (?, ?, ?, ?)",
            [(pk, seq, k, v) for k, v in batch.tags.items()],
        )
        con.executemany(
            "INSERT INTO texts(run, batch, name, step, ts, text) VALUES (?, ?, ?, ?, ?, ?)",
            [(pk, seq, t.name, t.step, t.timestamp, t.text) for t in batch.texts],
        )
        con.executemany(
            "INSERT INTO images(run, batch, name, step, ts, path) VALUES (?, ?, ?, ?, ?, ?)",
            [(pk, seq, i.name, i.step, i.timestamp, i.path) for i in batch.images],
        )
        con.executemany(
            "INSERT INTO artifacts(run, batch, name, artifact_path, path, size_bytes, sha256,"
            " kind, ts, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    pk,
                    seq,
                    a.name,
                    a.artifact_path,
                    a.path,
                    a.size_bytes,
                    a.sha256,
                    a.kind,
                    a.timestamp,
                    a.version,
                )
                for a in batch.artifacts
            ],
        )

    def last_seq(self, run_id: str) -> int:
        """The ``seq`` of the run's newest journaled batch (0 when none)."""
        row = (
            self.connection()
            .execute("SELECT max(seq) FROM batches WHERE run = ?", (self._pk(run_id),))
            .fetchone()
        )
        return row[0] or 0

    def read_batches(
        self, run_id: str, after: int, upto: int | None = None, limit: int = 32
    ) -> list[Batch]:
        """Up to ``limit`` journaled batches with ``after < seq <= upto``, in order."""
        pk = self._pk(run_id)
        con = self.connection()
        upto = self.last_seq(run_id) if upto is None else upto
        heads = con.execute(
            "SELECT seq, first_metric, last_metric FROM batches"
            " WHERE run = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (pk, after, upto, limit),
        ).fetchall()
        if not heads:
            return []
        events = self._read_events(con, pk, heads[0][0], heads[-1][0])
        return [
            Batch(
                run_id=run_id,
                seq=seq,
                metrics=self._metric_range(con, first, last),
                **{kind: found.get(seq, empty) for kind, (found, empty) in events.items()},
            )
            for seq, first, last in heads
        ]

    def _metric_range(
        self, con: sqlite3.Connection, first: int | None, last: int | None
    ) -> list[MetricPoint]:
        if first is None:
            return []
        rows = con.execute(
            "SELECT key, value, step, ts FROM metrics WHERE id BETWEEN ? AND ? ORDER BY id",
            (first, last),
        )
        return [(k, _nan(v), s, t) for k, v, s, t in rows]

    def _read_events(
        self, con: sqlite3.Connection, pk: int, low: int, high: int
    ) -> dict[str, tuple[dict[int, Any], Any]]:
        """Every non-metric record of batches ``low..high``, grouped by kind, then by batch."""
        where = "WHERE run = ? AND batch BETWEEN ? AND ?"
        args = (pk, low, high)
        params: dict[int, dict[str, ParamValue]] = {}
        for seq, key, value in con.execute(f"SELECT batch, key, value FROM params {where}", args):
            params.setdefault(seq, {})[key] = json.loads(value)
        tags: dict[int, dict[str, str]] = {}
        for seq, key, value in con.execute(f"SELECT batch, key, value FROM tags {where}", args):
            tags.setdefault(seq, {})[key] = value
        texts: dict[int, list[Text]] = {}
        for seq, *row in con.execute(
            f"SELECT batch, name, text, step, ts FROM texts {where} ORDER BY id", args
        ):
            texts.setdefault(seq, []).append(Text(*row))
        images: dict[int, list[Image]] = {}
        for seq, *row in con.execute(
            f"SELECT batch, name, step, ts, path FROM images {where} ORDER BY id", args
        ):
            images.setdefault(seq, []).append(Image(*row))
        artifacts: dict[int, list[Artifact]] = {}
        for seq, *row in con.execute(
            "SELECT batch, name, artifact_path, path, size_bytes, sha256, kind, ts, version"
            f" FROM artifacts {where} ORDER BY id",
            args,
        ):
            artifacts.setdefault(seq, []).append(Artifact(*row))
        return {
            "params": (params, {}),
            "tags": (tags, {}),
            "texts": (texts, ()),
            "images": (images, ()),
            "artifacts": (artifacts, ()),
        }

    # -- delivery cursors ----------------------------------------------------------------

    def get_cursor(self, run_id: str, backend: str) -> int:
        """The ``seq`` of the last batch ``backend`` accepted for this run (0 when none)."""
        row = (
            self.connection()
            .execute(
                "SELECT seq FROM cursors WHERE run = ? AND backend = ?", (self._pk(run_id), backend)
            )
            .fetchone()
        )
        return row[0] if row else 0

    def ensure_cursor(self, run_id: str, backend: str) -> None:
        """Record that ``backend`` belongs to the run (cursor 0 unless it has one)."""
        self.connection().execute(
            "INSERT OR IGNORE INTO cursors(run, backend, seq, updated_at) VALUES (?, ?, 0, ?)",
            (self._pk(run_id), backend, time.time()),
        )

    def set_cursor(self, run_id: str, backend: str, seq: int, error: str | None = None) -> None:
        """Persist ``backend``'s cursor (and its latest error, or None once it recovered)."""
        self.connection().execute(
            "INSERT INTO cursors(run, backend, seq, updated_at, error) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT(run, backend) DO UPDATE SET seq = excluded.seq,"
            " updated_at = excluded.updated_at, error = excluded.error",
            (self._pk(run_id), backend, seq, time.time(), error),
        )

    def cursors(self, run_id: str) -> dict[str, int]:
        """Every backend of the run and its cursor."""
        rows = self.connection().execute(
            "SELECT backend, seq FROM cursors WHERE run = ?", (self._pk(run_id),)
        )
        return dict(rows.fetchall())

    def undelivered(self, run_id: str) -> dict[str, int]:
        """How many journaled batches each of the run's backends has not accepted yet."""
        pk = self._pk(run_id)
        last = self.last_seq(run_id)
        rows = self.connection().execute("SELECT backend, seq FROM cursors WHERE run = ?", (pk,))
        return {backend: last - seq for backend, seq in rows if seq < last}

    def mark_finished(self, run_id: str, backend: str) -> None:
        """Record that ``backend`` has the run's final status."""
        self.connection().execute(
            "UPDATE cursors SET finished = 1 WHERE run = ? AND backend = ?",
            (self._pk(run_id), backend),
        )

    def unfinished(self, run_id: str) -> list[str]:
        """Backends of an ended run that do not have its final status yet."""
        rows = self.connection().execute(
            "SELECT c.backend FROM cursors c JOIN runs r ON r.pk = c.run"
            " WHERE c.run = ? AND c.finished = 0 AND r.status != 'running'",
            (self._pk(run_id),),
        )
        return [backend for (backend,) in rows]

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
            *(_json(checkpoint.get(part) or {}) for part in parts),
            _json(checkpoint.get("samples") or []),
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
                _finite_or_none(a.get("value")),
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
                "value": _nan(value),
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
        return {key: (_nan(value), step) for key, value, step in rows}

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
                with _transaction(con):
                    con.execute("DELETE FROM metric_summaries WHERE run = ?", (pk,))
                    con.executemany(
                        "INSERT INTO metric_summaries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(pk, seq, *row) for row in rows],
                    )
        return {
            key: {
                "count": count,
                "last": _nan(last),
                "first_step": first,
                "last_step": final,
                "min": _nan(low),
                "max": _nan(high),
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
        return [(k, _nan(v), s, t) for k, v, s, t in rows]

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

    def _events(self, run_id: str, kind: str) -> list[Any]:
        pk = self._pk(run_id)
        last = self.last_seq(run_id)
        found, _ = self._read_events(self.connection(), pk, 0, last)[kind]
        return [item for seq in sorted(found) for item in found[seq]]


ROWS_PER_STATEMENT = 8000
"""Most metric rows per INSERT (4 variables each; fewer where SQLite allows fewer variables)."""


def _insert_metrics(con: sqlite3.Connection, pk: int, metrics: Sequence[MetricPoint]) -> int:
    """Append ``metrics`` with multi-row INSERTs; return the last rowid.

    Not ``executemany``: it releases the GIL around every row, and while the training
    thread runs Python it then waits up to the switch interval (5 ms) to get it back, which
    measured 145 rows/s. One statement per 8,000 rows releases it once per statement.
    """
    most = min(ROWS_PER_STATEMENT, con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 4)
    start = 0
    for rows in _statement_sizes(len(metrics), most):
        part = metrics[start : start + rows]
        con.execute(_metric_insert_sql(pk, rows), list(chain.from_iterable(part)))
        start += rows
    return con.execute("SELECT last_insert_rowid()").fetchone()[0]


def _statement_sizes(count: int, most: int) -> list[int]:
    """Split ``count`` rows into statements of ``most`` rows, then powers of two, so that
    a handful of prepared statements (kept by ``lru_cache``) serve every batch size."""
    sizes = [most] * (count // most)
    rest = count % most
    while rest:
        size = 1 << (rest.bit_length() - 1)
        sizes.append(size)
        rest -= size
    return sizes


@lru_cache(maxsize=64)
def _metric_insert_sql(pk: int, rows: int) -> str:
    values = ",".join([f"({pk},?,?,?,?)"] * rows)
    return f"INSERT INTO metrics(run, key, value, step, ts) VALUES {values}"


def _nan(value: float | None) -> float:
    """A stored value back as a float (NULL is NaN)."""
    return _NAN if value is None else value


def _json(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=True)


def _finite_or_none(value: Any) -> float | None:
    """Anomaly values: NaN is stored as NULL, like metric values."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    def __enter__(self) -> sqlite3.Connection:
        self.con.execute("BEGIN IMMEDIATE")
        return self.con

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self.con.execute("ROLLBACK" if kind else "COMMIT")
