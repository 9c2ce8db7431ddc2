"""The dashboard's view of the local store: read-only connections that never hold up the
journal writer.

Every connection is opened with ``mode=ro`` and ``PRAGMA query_only``, so no statement can
change the store. In WAL mode a reader reads the last committed state while the writer
appends, and each statement here is its own short read transaction (its rows are read
whole before it returns), so the writer's checkpoints are never held back for long either.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

from tracelet.exceptions import NotFoundError, StoreError
from tracelet.records import RunStatus
from tracelet.storage.connections import DB_NAME, read_only_connection
from tracelet.storage.locks import is_locked
from tracelet.storage.schema import SCHEMA_VERSION
from tracelet.storage.sql import BUSY_TIMEOUT
from tracelet.storage.store import LocalStore, StoredRun

MMAP_BYTES = 256 * 1024 * 1024
"""Memory-mapped reads (each reader's own mapping of the file): faster long scans."""
CACHE_KIB = 32 * 1024
"""Each reader's page cache."""


class ReadOnlyStore(LocalStore):
    """A :class:`~tracelet.storage.LocalStore` whose every connection is read-only.

    It never recovers crashed runs (that is a write); :meth:`effective_status` reports a
    dead writer's run as crashed instead, as the next writer would record it.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        """Open the existing store folder ``path`` (the one holding ``tracelet.db``)."""
        check_readable(Path(path).expanduser().resolve() / DB_NAME)
        super().__init__(path, recover=False)

    def _connect(self) -> sqlite3.Connection:
        # (a read-only disk: no -shm file can be made, nothing changes)
        con = read_only_connection(self.db_path, immutable=self.read_only)
        con.execute("PRAGMA query_only = ON")
        con.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        return con

    def effective_status(self, run: StoredRun) -> RunStatus:
        """The run's status; a run of this host recorded as running whose writer is gone
        (no process holds its lock) is crashed."""
        if run.status is not RunStatus.RUNNING or run.host != socket.gethostname():
            return run.status
        return RunStatus.RUNNING if is_locked(self._lock_path(run.id)) else RunStatus.CRASHED

    def run_pk(self, run_id: str) -> int:
        """The run's row key in the store's tables."""
        return self._pk(run_id)


def check_readable(db_path: Path) -> None:
    """Raise a :class:`NotFoundError` or :class:`StoreError` that says what to do unless
    ``db_path`` is a store this Tracelet reads as it is."""
    if not db_path.is_file():
        raise NotFoundError(
            f"no Tracelet store at {db_path.parent}; log a run first, or point --store to "
            "the store folder (the one holding tracelet.db)"
        )
    con = sqlite3.connect(f"{db_path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    try:
        (version,) = con.execute("PRAGMA user_version").fetchone()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"cannot read the local store at {db_path}: {error}") from error
    finally:
        con.close()
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"the store at {db_path.parent} has schema version {version}, older than this "
            f"Tracelet's ({SCHEMA_VERSION}); any writer upgrades it (`tracelet list` does)"
        )
