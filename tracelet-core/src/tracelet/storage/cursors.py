"""Delivery cursors: where each backend stands in delivering each run.

A mixin of :class:`~tracelet.storage.store.LocalStore`, which provides the connection, the
run lookups and ``last_seq``. A backend's cursor is the ``seq`` of the last batch it
accepted; beside it the journal keeps the delivery's phase (delivering, retrying, failed),
its latest error and whether the backend has the run's final status.
"""

from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from tracelet.records import DeliveryPhase, DeliveryState


class CursorTable:
    """The ``cursors`` table of the local store."""

    if TYPE_CHECKING:  # provided by LocalStore

        def connection(self) -> sqlite3.Connection: ...

        def _pk(self, run_id: str) -> int: ...

        def last_seq(self, run_id: str) -> int: ...

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

    def set_cursor(
        self,
        run_id: str,
        backend: str,
        seq: int,
        error: str | None = None,
        state: str = "delivering",
    ) -> None:
        """Persist ``backend``'s cursor, its delivery state and its latest error (or None)."""
        self.connection().execute(
            "INSERT INTO cursors(run, backend, seq, updated_at, error, state)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(run, backend) DO UPDATE SET"
            " seq = excluded.seq, updated_at = excluded.updated_at, error = excluded.error,"
            " state = excluded.state",
            (self._pk(run_id), backend, seq, time.time(), error, state),
        )

    def deliveries(self, run_id: str) -> list[DeliveryState]:
        """Where each backend of the run stands, as the journal last recorded it."""
        rows = self.connection().execute(
            "SELECT backend, seq, state, error, updated_at, finished FROM cursors"
            " WHERE run = ? ORDER BY backend",
            (self._pk(run_id),),
        )
        last = self.last_seq(run_id)
        return [
            DeliveryState(b, _phase(state), seq, last, at, error, finished=bool(f))
            for b, seq, state, error, at, f in rows
        ]

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


def _phase(stored: str) -> DeliveryPhase:
    try:
        return DeliveryPhase(stored)
    except ValueError:  # written by a newer Tracelet
        return DeliveryPhase.DELIVERING
