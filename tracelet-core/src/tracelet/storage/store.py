"""The local store: an SQLite database (WAL mode) plus a folder of stored files.

It is the journal every record passes through before any backend sees it, the default
backend, and what the analysis tools read. One :class:`LocalStore` is safe to share between
threads (each thread gets its own connection) and between processes (SQLite's locking).

This module holds the runs and the journal's write path; the file and its connections
are in ``connections.py``, the read side in ``readers.py``, delivery cursors in
``cursors.py``, and a fork's rules in ``forking.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from itertools import chain, islice
from pathlib import Path
from typing import Any

import attrs

from tracelet.exceptions import StoreError
from tracelet.records import (
    Artifact,
    Batch,
    Histogram,
    Image,
    MetricPoint,
    RunInfo,
    RunStatus,
    Text,
)
from tracelet.storage.connections import DB_NAME, StoreFile
from tracelet.storage.cursors import CursorTable
from tracelet.storage.locks import RunLock, is_locked
from tracelet.storage.readers import RunReader
from tracelet.storage.sql import nan_of, transaction
from tracelet.values import check_run_id

_EVENT_SQL = {
    "params": "SELECT batch, key, value FROM params",
    "tags": "SELECT batch, key, value FROM tags",
    "texts": "SELECT batch, name, text, step, ts FROM texts",
    "images": "SELECT batch, name, step, ts, path FROM images",
    "artifacts": "SELECT batch, name, artifact_path, path, size_bytes, sha256, kind, ts, version"
    " FROM artifacts",
    "histograms": "SELECT batch, name, step, ts, counts, edges, nonfinite FROM histograms",
}
_EVENT_WHERE = "WHERE run = ? AND batch BETWEEN ? AND ?"
_FILE_COLUMN = {"images": 3, "artifacts": 2}
"""Where each kind's row (less its batch) holds a stored file's path."""


def _histogram(name: str, step: int, ts: float, counts: str, edges: str, nonfinite: int) -> Any:
    return Histogram(name, step, ts, tuple(json.loads(counts)), tuple(json.loads(edges)), nonfinite)


def _histogram_row(pk: int, seq: int, h: Histogram) -> tuple[Any, ...]:
    counts, edges = json.dumps(h.counts), json.dumps(h.edges)
    return (pk, seq, h.name, h.step, h.timestamp, counts, edges, h.nonfinite)


_EVENT_RECORDS: dict[str, Any] = {
    "texts": Text,
    "images": Image,
    "artifacts": Artifact,
    "histograms": _histogram,
}
EVENT_KINDS = tuple(_EVENT_SQL)
"""The kinds of non-metric record a batch carries, as named on :class:`~tracelet.records.Batch`."""


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


class LocalStore(StoreFile, RunReader, CursorTable):
    """The SQLite journal and local backend under ``path`` (created if missing)."""

    def __init__(self, path: str | os.PathLike[str] = ".tracelet", *, recover: bool = True) -> None:
        super().__init__(path)
        self._run_pks: dict[str, int] = {}
        if recover:
            with contextlib.suppress(sqlite3.OperationalError):  # full or read-only disk:
                self.recover_crashed()  # readers still get in

    # -- connections ---------------------------------------------------------------------

    def reopen(self) -> None:
        """Start over on a new database file after the one in use was deleted or replaced;
        a file that is not ours is moved aside (``tracelet.db.replaced-<time>``), kept."""
        self.close()
        if self.db_path.exists():
            aside = self.db_path.with_name(f"{DB_NAME}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.db_path, aside)
        for suffix in ("-wal", "-shm"):  # they belong to the file that is gone
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.db_path}{suffix}")
        self.reconnect()

    def reconnect(self) -> None:
        """Close this store's connections and use the database file now at its path (which
        another process, the journal writer, has just created anew)."""
        self.close()
        self._run_pks.clear()
        self._open()

    def files_dir(self, run_id: str) -> Path:
        """Where the run's stored images and artifacts live."""
        return self.path / "files" / run_id

    # -- runs ----------------------------------------------------------------------------

    def lock_run(self, run_id: str) -> RunLock:
        """Take the run's lock for this process; raise if a live process writes the run."""
        lock = RunLock(self._lock_path(check_run_id(run_id)))
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
        with transaction(con):
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

    def set_backend_options(self, run_id: str, backend: str, options: Mapping[str, Any]) -> None:
        """Record the options ``backend`` delivers the run with (already redacted), so that
        a later ``tracelet sync`` sends it to the same place."""
        con = self.connection()
        with transaction(con):
            (text,) = con.execute(
                "SELECT config FROM runs WHERE pk = ?", (self._pk(run_id),)
            ).fetchone()
            config = json.loads(text or "{}")
            config.setdefault("backends", {})[backend] = dict(options)
            con.execute(
                "UPDATE runs SET config = ? WHERE pk = ?",
                (json.dumps(config, default=str), self._pk(run_id)),
            )

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
        """Mark this host's running runs whose process died as crashed; return their ids.

        A run is dead when no process holds its lock. The runs are probed again inside the
        write transaction that marks them: a process that takes a run's lock and resumes it
        meanwhile records it as running only after that transaction, so a live run is never
        left marked crashed. With no dead run (the usual case) nothing is written.
        """
        if not self._unlocked_running_runs():
            return []
        con = self.connection()
        with transaction(con):
            crashed = self._unlocked_running_runs()
            for run_id in crashed:
                pk = self._pk(run_id)
                last = con.execute("SELECT max(created_at) FROM batches WHERE run = ?", (pk,))
                con.execute(
                    "UPDATE runs SET status = 'crashed', ended_at = ? WHERE pk = ?",
                    (last.fetchone()[0], pk),
                )
        return crashed

    def _unlocked_running_runs(self) -> list[str]:
        """This host's runs recorded as running whose lock no live process holds."""
        rows = self.connection().execute(
            "SELECT id FROM runs WHERE status = 'running' AND host = ?", (socket.gethostname(),)
        )
        return [run_id for (run_id,) in rows if not is_locked(self._lock_path(run_id))]

    def _lock_path(self, run_id: str) -> Path:
        return self.path / "locks" / f"{run_id}.lock"

    def delete_run(self, run_id: str) -> None:
        """Remove a run, everything journaled for it, and its stored files.

        Refused (StoreError) while a live process writes the run (checked inside the
        transaction, so a process resuming the run meanwhile waits for it).
        """
        pk = self._pk(run_id)
        con = self.connection()
        with transaction(con):
            if is_locked(self._lock_path(run_id)):
                raise StoreError(f"run {run_id} is being written by a live process; not removed")
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
                "histograms",
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

    def has_batch(self, run_id: str, seq: int) -> bool:
        """Whether the journal holds batch ``seq`` of the run (a read: it takes no lock)."""
        row = (
            self.connection()
            .execute("SELECT 1 FROM batches WHERE run = ? AND seq = ?", (self._pk(run_id), seq))
            .fetchone()
        )
        return row is not None

    def write_batch(self, batch: Batch) -> bool:
        """Journal ``batch`` in one transaction; return False if it was already there."""
        pk = self._pk(batch.run_id)
        con = self.connection()
        with transaction(con):
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

    def _inside(self, path: str) -> str:
        """A stored file's path as kept: relative to the store when inside it, so that a
        store copied elsewhere (from an offline node) still finds its files."""
        try:
            return Path(path).resolve().relative_to(self.path).as_posix()
        except ValueError:  # a file outside the store (an older store's, or a test's)
            return path

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
            [(pk, seq, i.name, i.step, i.timestamp, self._inside(i.path)) for i in batch.images],
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
                    self._inside(a.path),
                    a.size_bytes,
                    a.sha256,
                    a.kind,
                    a.timestamp,
                    a.version,
                )
                for a in batch.artifacts
            ],
        )
        con.executemany(
            "INSERT INTO histograms(run, batch, name, step, ts, counts, edges, nonfinite)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [_histogram_row(pk, seq, h) for h in batch.histograms],
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
        empty = {"params": {}, "tags": {}}
        return [
            Batch(
                run_id=run_id,
                seq=seq,
                metrics=self._metric_range(con, first, last),
                **{kind: found.get(seq, empty.get(kind, ())) for kind, found in events.items()},
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
        return [(k, nan_of(v), s, t) for k, v, s, t in rows]

    def _read_events(
        self,
        con: sqlite3.Connection,
        pk: int,
        low: int,
        high: int,
        kinds: Iterable[str] = EVENT_KINDS,
    ) -> dict[str, dict[int, Any]]:
        """The non-metric records of batches ``low..high`` of these ``kinds``, by kind, then
        by batch: a dict of values for params and tags, a list of records for the rest."""
        found: dict[str, dict[int, Any]] = {}
        for kind in kinds:
            record = _EVENT_RECORDS.get(kind)
            order = " ORDER BY id" if record else ""
            rows = con.execute(f"{_EVENT_SQL[kind]} {_EVENT_WHERE}{order}", (pk, low, high))
            by_batch: dict[int, Any] = {}
            where = _FILE_COLUMN.get(kind)
            for seq, *row in rows:
                if where is not None:
                    row[where] = str(self.path / row[where])  # (an absolute path stays)
                if record is not None:
                    by_batch.setdefault(seq, []).append(record(*row))
                else:
                    key, value = row
                    decoded = json.loads(value) if kind == "params" else value
                    by_batch.setdefault(seq, {})[key] = decoded
            found[kind] = by_batch
        return found


ROWS_PER_STATEMENT = 1024
"""Most metric rows per INSERT (4 variables each; fewer where SQLite allows fewer variables).
Larger statements insert no faster (0.33 us a row from 256 rows up, measured) but cost more
to compile, once per size and connection: 12 ms for 8,000 rows, 1.3 ms for 1,024. With
8,000, a writer process spent about 20 ms compiling, half of what it spent journaling a
40,000-point run."""


def _insert_metrics(con: sqlite3.Connection, pk: int, metrics: Sequence[MetricPoint]) -> int:
    """Append ``metrics`` with multi-row INSERTs; return the last rowid.

    Not ``executemany``: it releases the GIL around every row, and while the training
    thread runs Python it then waits up to the switch interval (5 ms) to get it back, which
    measured 145 rows/s. One statement per 1,024 rows releases it once per statement.
    """
    most = min(ROWS_PER_STATEMENT, con.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 4)
    fields = _fields(metrics)
    for rows in _statement_sizes(len(metrics), most):
        con.execute(_metric_insert_sql(pk, rows), list(islice(fields, 4 * rows)))
    return con.execute("SELECT last_insert_rowid()").fetchone()[0]


def _fields(metrics: Sequence[MetricPoint]) -> Iterator[Any]:
    """Every point's name, value, step and timestamp, one after another. The journal writer's
    points (a ``ChunkedPoints``) make them without a tuple for each point of a step."""
    fields = getattr(metrics, "fields", None)
    return fields() if fields is not None else chain.from_iterable(metrics)


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
