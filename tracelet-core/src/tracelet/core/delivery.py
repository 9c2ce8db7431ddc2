"""The delivery engine: one run's journaled batches into one backend, in order, once each.

Live sinks, ``tracelet sync`` and the conformance kit all deliver through
:class:`Delivery`. It owns the cursor (the last batch the backend accepted), retries
failures with capped exponential backoff, tells a failure a retry can fix from one it
cannot (:class:`~tracelet.exceptions.PermanentBackendError`), skips a batch the tool
refuses for good (:class:`~tracelet.exceptions.RejectedBatchError`) and the stored files
that are gone (deleted, or a store copied without them: no retry brings them back), and
keeps a :class:`DeliveryState` that it reports once per change: one warning when the
backend becomes unreachable, one line when it has caught up again.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

import attrs

from tracelet.core import process
from tracelet.core.retry import DelayIterator, RetryPolicy
from tracelet.exceptions import ConfigurationError, PermanentBackendError, RejectedBatchError
from tracelet.forks import fork_safe
from tracelet.plugins import BackendPlugin
from tracelet.records import Batch, DeliveryPhase, DeliveryState, RunInfo, RunStatus
from tracelet.redaction import redact_uri
from tracelet.reporting import logger
from tracelet.storage import LocalStore

READ_AHEAD = 16
"""Batches read from the journal at a time while catching up."""
START_ALONE_WAIT = 10.0
"""Seconds a backend waits for another one's start to end before it starts all the same
(a tool starts in 1-3 s here; one that takes longer waits on something else, such as an
unreachable server, and holds no other backend back for longer)."""
_STARTING = fork_safe(threading.Lock())
"""Held while a backend starts: backends start one at a time. Their tools import many
modules then, and ClearML's import hook (it wraps ``builtins.__import__``) makes imports
racing in two threads fail now and then: measured with MLflow, W&B, ClearML and Aim started
at once, 3 runs in 32 had a backend fail to import its tool; none in 50, one at a time."""


class BackingOff(Exception):
    """Raised by a :class:`Delivery` that does not wait on its thread (``waits=False``)
    instead of sleeping through a backoff: call the same step again at ``until`` (a
    ``time.monotonic()`` value); the delivery picks up where it left off."""

    def __init__(self, until: float) -> None:
        super().__init__(until)
        self.until = until


class _Abandoned(Exception):
    """The delivery was abandoned: the journal must not be touched."""


class Cursor(Protocol):
    """Where a delivery keeps its progress."""

    def load(self) -> int:
        """The last batch the backend accepted (0: none)."""
        ...

    def save(self, state: DeliveryState) -> None:
        """Persist ``state`` (its ``delivered`` is the cursor)."""
        ...

    def finished(self) -> None:
        """Record that the backend has the run's final status."""
        ...


@attrs.define
class JournalCursor:
    """The cursor kept in the journal itself, read by ``tracelet sync`` and ``show``."""

    store: LocalStore
    run_id: str
    backend: str

    def load(self) -> int:
        """The stored cursor."""
        return self.store.get_cursor(self.run_id, self.backend)

    def save(self, state: DeliveryState) -> None:
        """Store the cursor, phase and error."""
        error = state.error or state.rejection
        self.store.set_cursor(
            self.run_id, self.backend, state.delivered, error=error, state=state.phase.value
        )

    def finished(self) -> None:
        """Mark the backend as holding the final status."""
        self.store.mark_finished(self.run_id, self.backend)


@attrs.define
class MemoryCursor:
    """A cursor that lives only as long as its delivery (the conformance kit's replays)."""

    seq: int = 0
    done: bool = False

    def load(self) -> int:
        """The cursor."""
        return self.seq

    def save(self, state: DeliveryState) -> None:
        """Keep the cursor."""
        self.seq = state.delivered

    def finished(self) -> None:
        """Remember the final status was delivered."""
        self.done = True


class Delivery:
    """Delivers one run's batches to one backend.

    One step runs at a time (on a delivery worker, or the caller's thread in ``tracelet
    sync``); only :meth:`note_journaled` is called from elsewhere (the dispatcher).
    ``deadline`` (a ``time.monotonic()`` value) bounds the retries; :meth:`abandon` ends
    them at once. With ``waits`` (the default) a backoff sleeps on the calling thread, and
    setting ``wakeup`` cuts it short; without, a step raises :class:`BackingOff` instead.
    """

    def __init__(
        self,
        backend: BackendPlugin,
        journal: LocalStore,
        run: RunInfo,
        *,
        cursor: Cursor | None = None,
        retry: RetryPolicy | None = None,
        journaled: int = 0,
        on_update: Callable[[DeliveryState], object] | None = None,
        waits: bool = True,
    ) -> None:
        self.backend = backend
        self.journal = journal
        self.run = run
        self.cursor = cursor or JournalCursor(journal, run.id, backend.name)
        self.retry = retry or RetryPolicy()
        self.on_update = on_update
        """Told every change of the state: each batch delivered, each failed try."""
        self.deadline = float("inf")
        self.abort = threading.Event()
        """Set by :meth:`abandon`: nothing more is tried, and the journal is not touched."""
        self.wakeup = threading.Event()
        self._journal_use = threading.Lock()
        """Held around every use of the journal, so :meth:`abandon` can wait one out."""
        self.waits = waits
        self._delays: DelayIterator | None = None
        """The backoff of the failure episode in progress (None: the last try succeeded)."""
        self._down_since: float | None = None
        self._journaled = journaled
        self._journaled_lock = threading.Lock()
        self._state = DeliveryState(backend.name, DeliveryPhase.STARTING, 0, 0, time.time())

    @property
    def name(self) -> str:
        """The backend's registered name."""
        return self.backend.name

    @property
    def state(self) -> DeliveryState:
        """Where the delivery stands now."""
        return attrs.evolve(self._state, journaled=self._journaled)

    @property
    def delivered(self) -> int:
        """The last batch the backend accepted."""
        return self._state.delivered

    @property
    def failed(self) -> bool:
        """Whether the backend failed for good (nothing more is tried in this delivery)."""
        return self._state.phase is DeliveryPhase.FAILED

    # -- the steps -----------------------------------------------------------------------

    def open(self, resumed: bool) -> bool:
        """Read the cursor, start the backend and open the run; False if it gave up."""
        delivered: list[int] = []
        if not self._attempt(
            "reading its cursor", lambda: delivered.append(self.cursor.load()), remote=False
        ):
            return False
        self._update(delivered=delivered[0])
        held: list[int | None] = []

        def start() -> None:
            alone = self._wait_to_start_alone()
            try:
                if not self.backend.started:
                    self.backend.start()
                self.backend.start_run(self.run, resumed)
                process.exit_before_tools()  # a tool's own exit handler runs after ours
                held[:] = [self.backend.held_batches()]
            finally:
                if alone:
                    _STARTING.release()

        if not self._attempt("start", start):
            return False
        self._update(phase=DeliveryPhase.DELIVERING, **self._rewound(held[0]))
        return True

    def _rewound(self, held: int | None) -> dict[str, int]:
        """The cursor moved back to the last batch the tool says it holds, if it is behind
        (said once); else no change."""
        if held is None or held >= self._state.delivered:
            return {}
        logger.warning(
            "tracelet backend %r holds batches of run %s up to %d, not %d as its cursor says "
            "(it lost some it had accepted): delivering them again from batch %d",
            self.name,
            self.run.id,
            held,
            self._state.delivered,
            held + 1,
        )
        return {"delivered": max(held, 0)}

    def note_journaled(self, seq: int) -> None:
        """The journal now holds batches up to ``seq`` (from any thread)."""
        with self._journaled_lock:
            self._journaled = max(self._journaled, seq)

    def deliver(self, batch: Batch) -> bool:
        """Deliver ``batch`` (retrying) and move the cursor to it; False if it gave up."""
        self.note_journaled(batch.seq)
        if self.abort.is_set():  # abandoned (say, while its backend was starting)
            return False
        rejection = self._state.rejection
        batch, missing = _without_missing_files(batch)
        try:
            done = self._attempt(
                f"batch {batch.seq}", lambda: self.backend.log_batch(batch), refusable=True
            )
        except RejectedBatchError as error:
            done, rejection = True, self._rejected(batch, error)
        if not done:
            return False
        if missing:  # said once, when the batch has gone without them
            rejection = self._missing(batch, missing)
        self._update(delivered=batch.seq, rejection=rejection)
        return not self.abort.is_set()

    def catch_up(self, upto: int | None = None) -> bool:
        """Deliver the journaled batches after the cursor up to ``upto`` (default: all)."""
        last: list[int] = []
        if upto is None:
            if not self._attempt(
                "reading the journal", lambda: last.append(self._last_seq()), remote=False
            ):
                return False
            upto = last[0]
        self.note_journaled(upto)
        batches: list[Batch] = []
        while self.delivered < upto:
            batches.clear()
            if not self._attempt(
                "reading the journal", lambda: batches.extend(self._read(upto)), remote=False
            ):
                return False
            if not batches or batches[0].seq != self.delivered + 1:
                return self._fail_for_good(
                    f"the journal has no batch {self.delivered + 1} of run {self.run.id}"
                )
            for batch in batches:
                if not self.deliver(batch):
                    return False
        return True

    def finish(self, status: RunStatus) -> bool:
        """Deliver everything journaled, then the run's final ``status``."""
        if not self.catch_up():
            return False
        if not self._attempt("finish", lambda: self.backend.finish_run(status)):
            return False
        if self._attempt("recording the final status", self.cursor.finished, remote=False):
            self._update(finished=True)
        return True

    def give_up(self) -> None:
        """Record that this delivery ends with batches pending (the run stopped, or sync's
        deadline passed): they wait in the journal for ``tracelet sync``."""
        if self.state.pending and self._state.phase is not DeliveryPhase.FAILED:
            self._update(phase=DeliveryPhase.STOPPED)

    def abandon(self, timeout: float = 1.0) -> bool:
        """Stop this delivery where it is (its owner is closing the journal): nothing more
        is tried and the journal is not touched again. Returns whether no use of the journal
        is still under way (one may wait on a locked database for a while); a backend call
        in progress may go on, but nothing after it touches the journal."""
        self.abort.set()
        self.wakeup.set()
        if not self._journal_use.acquire(timeout=timeout):
            return False
        self._journal_use.release()
        return True

    def release(self) -> None:
        """Stop the backend if it was started, whether or not delivery completed."""
        if not self.backend.started:
            return
        try:
            self.backend.stop()
        except Exception as error:
            logger.warning("tracelet backend %r: stop failed (%r)", self.name, error)

    # -- retries and reports -------------------------------------------------------------

    def _attempt(
        self,
        what: str,
        action: Callable[[], object],
        refusable: bool = False,
        remote: bool = True,
    ) -> bool:
        """Run ``action`` until it succeeds (True) or delivery must give up (False).

        A :class:`RejectedBatchError` propagates when ``refusable`` (a batch the tool
        refuses); anywhere else it, like a ConfigurationError, is a permanent failure. So is
        an ImportError (the tool failed to import): Python cannot import again a module
        whose import failed midway, so every retry would fail the same way. Only
        a ``remote`` action (a call into the backend) that succeeds ends a failure episode:
        reading the journal between tries neither resets the backoff nor the phase.
        """
        while not self.abort.is_set() and not self.failed:
            try:
                action() if remote else self._using_journal(action)
            except _Abandoned:
                return False
            except RejectedBatchError as error:
                if not refusable:
                    return self._fail_for_good(f"{what}: {describe_error(error)}")
                if remote:
                    self._recovered()
                raise
            except (PermanentBackendError, ConfigurationError) as error:
                return self._fail_for_good(f"{what}: {describe_error(error)}")
            except ImportError as error:
                return self._fail_for_good(
                    f"{what}: the tool could not be imported ({describe_error(error)}); this "
                    "process cannot import it again"
                )
            except Exception as error:
                if refused_at_exit(error):
                    return self._left_for_sync(what, error)
                self._retrying(what, error)
                if self.deadline <= time.monotonic():
                    return False
                self._back_off()
                continue
            if remote:
                self._recovered()
            return True
        return False

    def _back_off(self) -> None:
        """Wait the next delay of this failure episode (never past ``deadline``), or raise
        :class:`BackingOff` when the delivery does not wait on its thread."""
        if self._delays is None:
            self._delays = self.retry.delays()
        until = min(time.monotonic() + next(self._delays), self.deadline)
        if not self.waits:
            raise BackingOff(until)
        self.wakeup.wait(max(0.0, until - time.monotonic()))
        self.wakeup.clear()

    def _recovered(self) -> None:
        self._delays = None
        if self._state.phase is DeliveryPhase.RETRYING:
            self._update(phase=DeliveryPhase.DELIVERING, error=None)

    def _retrying(self, what: str, error: Exception) -> None:
        message = describe_error(error)
        if self._state.phase is DeliveryPhase.RETRYING:
            self._state = attrs.evolve(self._state, error=message)
            if self.on_update is not None:
                self.on_update(self.state)
            return
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "tracelet backend %r is unreachable (%s: %s); retrying with backoff. Nothing is "
                "lost: %d batch(es) wait in the local store",
                self.name,
                what,
                message,
                self.state.pending,
            )
        self._update(phase=DeliveryPhase.RETRYING, error=message)

    def _left_for_sync(self, what: str, error: Exception) -> bool:
        """Python is exiting and the tool cannot start a thread now: no retry can succeed
        in this process, so stop at once and leave the batches to ``tracelet sync``."""
        logger.warning(
            "tracelet backend %r could not run while Python was exiting (%s: %s); %d "
            "batch(es) stay in the local store: `tracelet sync` delivers them (stop the run "
            "before the program ends to deliver it at once)",
            self.name,
            what,
            describe_error(error),
            self.state.pending,
        )
        self._update(phase=DeliveryPhase.FAILED, error=describe_error(error))  # in this run
        return False

    def _fail_for_good(self, reason: str) -> bool:
        self._update(phase=DeliveryPhase.FAILED, error=reason)
        logger.error(
            "tracelet backend %r failed for good (%s); it gets nothing more in this run. "
            "%d batch(es) stay in the local store: fix the cause, then run `tracelet sync`",
            self.name,
            reason,
            self.state.pending,
        )
        return False

    def _rejected(self, batch: Batch, error: RejectedBatchError) -> str:
        rejection = redact_uri(f"batch {batch.seq} rejected: {error}")
        logger.error(
            "tracelet backend %r: %s (%d records); it stays in the local store, and delivery "
            "goes on",
            self.name,
            rejection,
            len(batch),
        )
        return rejection

    def _missing(self, batch: Batch, paths: list[str]) -> str:
        """Report the stored files of ``batch`` that are gone (one line per batch)."""
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        skipped = f"batch {batch.seq}: {len(paths)} stored file(s) missing from the store"
        logger.error(
            "tracelet backend %r: %s (%s; deleted, or the store was copied without its "
            "files/ folder); the rest of the batch was delivered",
            self.name,
            skipped,
            shown,
        )
        return skipped

    def _update(self, **changes: object) -> None:
        """Change the state, persist it, tell ``on_update``, and say once when a backend
        that was down has caught up."""
        before = self._state
        if "phase" in changes and changes["phase"] != before.phase:
            changes["since"] = time.time()
        self._state = attrs.evolve(before, **changes)  # type: ignore[arg-type]
        state = self.state
        try:  # the in-memory state drives this delivery; the stored one serves `sync`
            self._using_journal(lambda: self.cursor.save(state))
        except _Abandoned:
            pass  # the store may be closed: leave it be
        except Exception as error:
            logger.warning("tracelet backend %r: cursor not saved (%r)", self.name, error)
        if self.on_update is not None:
            self.on_update(state)
        back = state.phase is DeliveryPhase.DELIVERING and not state.pending
        if self._down_since is not None and back:
            logger.warning(
                "tracelet backend %r is back and has caught up (down %.1f s; up to batch %d)",
                self.name,
                time.monotonic() - self._down_since,
                state.delivered,
            )
            self._down_since = None

    def _wait_to_start_alone(self) -> bool:
        """Take the start lock (:data:`_STARTING`); False (start all the same) once
        :data:`START_ALONE_WAIT` has passed or the delivery is abandoned."""
        deadline = time.monotonic() + START_ALONE_WAIT
        while not self.abort.is_set() and time.monotonic() < deadline:
            if _STARTING.acquire(timeout=0.1):
                return True
        return False

    def _using_journal(self, action: Callable[[], object]) -> None:
        """Run ``action`` (a use of the journal) unless the delivery was abandoned."""
        with self._journal_use:
            if self.abort.is_set():
                raise _Abandoned
            action()

    def _last_seq(self) -> int:
        return self.journal.last_seq(self.run.id)

    def _read(self, upto: int) -> list[Batch]:
        return self.journal.read_batches(self.run.id, self.delivered, upto, limit=READ_AHEAD)


def _without_missing_files(batch: Batch) -> tuple[Batch, list[str]]:
    """``batch`` less its images and artifacts whose stored file is gone, and their paths:
    no retry brings a deleted file back, and waiting for it would hold every later batch."""
    if not batch.images and not batch.artifacts:
        return batch, []
    gone = [r.path for r in (*batch.images, *batch.artifacts) if _gone(r.path)]
    if not gone:
        return batch, []
    images = tuple(image for image in batch.images if image.path not in gone)
    artifacts = tuple(artifact for artifact in batch.artifacts if artifact.path not in gone)
    return attrs.evolve(batch, images=images, artifacts=artifacts), gone


def _gone(path: str) -> bool:
    """Whether the file at ``path`` no longer exists (a file that cannot be read for now,
    say a stale network mount, is not gone: delivering it fails and is retried)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def refused_at_exit(error: BaseException) -> bool:
    """Whether ``error`` is a library refusing new threads or futures because Python is
    shutting down (``can't register atexit after shutdown``, ``cannot schedule new futures
    after interpreter shutdown``): nothing can succeed in this process any more."""
    exiting = getattr(threading, "_SHUTTING_DOWN", False) or sys.is_finalizing()
    return exiting and isinstance(error, RuntimeError) and "shutdown" in str(error)


def describe_error(error: BaseException) -> str:
    """``Type: message`` (a configuration error: its message) with credentials removed
    from any URI in it."""
    if isinstance(error, ConfigurationError):
        return redact_uri(str(error))
    return redact_uri(f"{type(error).__name__}: {error}")
