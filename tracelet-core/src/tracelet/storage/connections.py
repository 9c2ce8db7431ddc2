"""The store's database file and its connections: one per thread, each statement through
the fork gate, read-only where the disk is, and started over when the file is replaced.

A mixin of :class:`~tracelet.storage.store.LocalStore`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

from tracelet.exceptions import StoreError
from tracelet.storage.forking import GATE, GatedConnection, track
from tracelet.storage.schema import migrate
from tracelet.storage.sql import BUSY_TIMEOUT, use_wal

DB_NAME = "tracelet.db"


class StoreFile:
    """The SQLite file under ``path`` (created if missing) and this process's connections."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().resolve()
        self.db_path = self.path / DB_NAME
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        track(self)
        self._open()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        con = getattr(self._local, "con", None)
        if con is None:
            with GATE:  # opening takes SQLite's own locks: never across a fork
                con = self._connect()
            self._local.con = con
            with self._guard:
                self._connections.append(con)
        return con

    def _connect(self) -> sqlite3.Connection:
        """A new connection; on a read-only disk a read-only one (no WAL files to make).

        Every connection waits up to :data:`BUSY_TIMEOUT` for another process's lock.
        """
        if self.read_only:
            return read_only_connection(self.db_path, immutable=True)
        con = sqlite3.connect(
            self.db_path,
            isolation_level=None,
            timeout=BUSY_TIMEOUT,
            check_same_thread=False,
            factory=GatedConnection,
        )
        use_wal(con)
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    @property
    def read_only(self) -> bool:
        """Whether the store's folder cannot be written (a read-only mount): it is read as is."""
        return self.db_path.exists() and not os.access(self.path, os.W_OK)

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            migrate(self.connection())
        except sqlite3.DatabaseError as error:
            raise StoreError(f"cannot open the local store at {self.db_path}: {error}") from error
        self.identity = self.file_identity()
        """The database file this store opened (device, inode)."""

    def file_identity(self) -> tuple[int, int] | None:
        """The database file now at the store's path (device, inode); None if there is none."""
        try:
            stat = os.stat(self.db_path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    def forget_connections(self) -> None:
        """In a forked child: close the connections inherited from the parent (none of its
        threads exists here) and open new ones on demand."""
        for con in self._connections:
            with contextlib.suppress(Exception):
                con.close()
        self._connections = []
        self._local = threading.local()
        self._guard = threading.Lock()

    def close(self) -> None:
        """Close every connection this store opened."""
        with GATE, self._guard:
            for con in self._connections:
                con.close()
            self._connections.clear()
        self._local = threading.local()


def read_only_connection(db_path: Path, immutable: bool) -> sqlite3.Connection:
    """A connection that cannot write the database at ``db_path`` (``mode=ro``; with
    ``immutable``, for a read-only disk, no ``-shm`` file either), waiting up to
    :data:`BUSY_TIMEOUT` for another process's lock."""
    uri = f"{db_path.as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,
        timeout=BUSY_TIMEOUT,
        check_same_thread=False,
        factory=GatedConnection,
    )
