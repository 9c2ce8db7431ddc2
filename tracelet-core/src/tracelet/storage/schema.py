"""The local store's SQLite schema, versioned with ``PRAGMA user_version``.

Each migration is a list of statements that takes the schema from version ``n - 1`` to
``n``; :func:`migrate` applies the missing ones in one write transaction, so two processes
opening a new store at the same moment cannot both create it.

The ``metrics`` table is an append-only journal with no secondary index: its rowid order is
the order points were logged, and each row of ``batches`` records the rowid range of its
metric points. Reading a run is a handful of rowid range scans, as fast as an index would
be, while writing stays at full speed. NaN is stored as NULL (SQLite's own representation).
"""

from __future__ import annotations

import sqlite3

from tracelet.exceptions import StoreError
from tracelet.storage.sql import transaction

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE projects (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL)""",
        """CREATE TABLE runs (
            pk INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            project INTEGER NOT NULL REFERENCES projects(id),
            name TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            ended_at REAL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            backends TEXT NOT NULL DEFAULT '[]',
            config TEXT NOT NULL DEFAULT '{}')""",
        "CREATE INDEX runs_by_project ON runs(project, created_at)",
        "CREATE INDEX runs_by_name ON runs(name)",
        """CREATE TABLE batches (
            run INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            created_at REAL NOT NULL,
            first_metric INTEGER,
            last_metric INTEGER,
            PRIMARY KEY (run, seq)) WITHOUT ROWID""",
        """CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            run INTEGER NOT NULL,
            key TEXT NOT NULL,
            value REAL,
            step INTEGER NOT NULL,
            ts REAL NOT NULL)""",
        """CREATE TABLE params (
            run INTEGER NOT NULL, batch INTEGER NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run, batch, key)) WITHOUT ROWID""",
        """CREATE TABLE tags (
            run INTEGER NOT NULL, batch INTEGER NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (run, batch, key)) WITHOUT ROWID""",
        """CREATE TABLE texts (
            id INTEGER PRIMARY KEY, run INTEGER NOT NULL, batch INTEGER NOT NULL,
            name TEXT NOT NULL, step INTEGER NOT NULL, ts REAL NOT NULL, text TEXT NOT NULL)""",
        "CREATE INDEX texts_by_batch ON texts(run, batch)",
        """CREATE TABLE images (
            id INTEGER PRIMARY KEY, run INTEGER NOT NULL, batch INTEGER NOT NULL,
            name TEXT NOT NULL, step INTEGER NOT NULL, ts REAL NOT NULL, path TEXT NOT NULL)""",
        "CREATE INDEX images_by_batch ON images(run, batch)",
        """CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY, run INTEGER NOT NULL, batch INTEGER NOT NULL,
            name TEXT NOT NULL, artifact_path TEXT NOT NULL, path TEXT NOT NULL,
            size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, kind TEXT NOT NULL,
            ts REAL NOT NULL, version INTEGER NOT NULL)""",
        "CREATE INDEX artifacts_by_batch ON artifacts(run, batch)",
        """CREATE TABLE cursors (
            run INTEGER NOT NULL,
            backend TEXT NOT NULL,
            seq INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            error TEXT,
            PRIMARY KEY (run, backend)) WITHOUT ROWID""",
    ),
    (
        """CREATE TABLE checkpoints (
            run INTEGER NOT NULL,
            step INTEGER NOT NULL,
            ts REAL NOT NULL,
            first_step INTEGER NOT NULL,
            metrics TEXT NOT NULL,
            gradient_stats TEXT NOT NULL,
            system_metrics TEXT NOT NULL,
            samples TEXT NOT NULL,
            PRIMARY KEY (run, step)) WITHOUT ROWID""",
        """CREATE TABLE anomalies (
            run INTEGER NOT NULL,
            step INTEGER NOT NULL,
            metric TEXT NOT NULL,
            kind TEXT NOT NULL,
            severity TEXT NOT NULL,
            value REAL,
            message TEXT NOT NULL,
            ts REAL NOT NULL,
            PRIMARY KEY (run, step, metric, kind)) WITHOUT ROWID""",
        """CREATE TABLE metric_summaries (
            run INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            key TEXT NOT NULL,
            count INTEGER NOT NULL,
            last REAL,
            first_step INTEGER NOT NULL,
            last_step INTEGER NOT NULL,
            min REAL,
            max REAL,
            PRIMARY KEY (run, key)) WITHOUT ROWID""",
    ),
    ("ALTER TABLE cursors ADD COLUMN finished INTEGER NOT NULL DEFAULT 0",),
    # 4: where each backend's delivery stands (delivering, retrying, failed), for `show`
    ("ALTER TABLE cursors ADD COLUMN state TEXT NOT NULL DEFAULT 'delivering'",),
    # 5: histograms (counts and edges as JSON arrays)
    (
        """CREATE TABLE histograms (
            id INTEGER PRIMARY KEY, run INTEGER NOT NULL, batch INTEGER NOT NULL,
            name TEXT NOT NULL, step INTEGER NOT NULL, ts REAL NOT NULL,
            counts TEXT NOT NULL, edges TEXT NOT NULL, nonfinite INTEGER NOT NULL)""",
        "CREATE INDEX histograms_by_batch ON histograms(run, batch)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(connection: sqlite3.Connection) -> int:
    """Bring the schema up to :data:`SCHEMA_VERSION`; return the version found before.

    Raises :class:`StoreError` when the store was written by a newer Tracelet.
    """
    if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        return SCHEMA_VERSION  # current: nothing to write (a full or read-only disk is fine)
    with transaction(connection):
        found = connection.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"this store has schema version {found}, newer than this Tracelet "
                f"understands ({SCHEMA_VERSION}); upgrade tracelet-core to read it"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                connection.execute(statement)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found
