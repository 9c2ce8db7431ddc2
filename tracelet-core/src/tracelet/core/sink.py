"""One backend's delivery line: its own thread, bounded queue, retries and journal cursor.

The dispatcher offers every journaled batch to each sink. A sink whose queue is full simply
lets the batch go: it is in the journal, and the sink reads it back from there when it sees
a gap between its cursor and the next batch it is offered. So memory stays bounded, a slow
or failing backend delays nobody, and nothing is lost. After each accepted batch the sink
persists its cursor in the journal; a later ``sync`` starts from there.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from functools import partial

from tracelet.core.plugins import BackendPlugin
from tracelet.core.registry import logger, report_once
from tracelet.core.retry import RetryPolicy
from tracelet.exceptions import RejectedBatchError
from tracelet.records import Batch, RunInfo, RunStatus
from tracelet.redaction import redact_uri
from tracelet.storage import LocalStore


class BackendSink:
    """Delivers one run's batches to one backend on a dedicated thread."""

    def __init__(
        self,
        name: str,
        backend: BackendPlugin,
        store: LocalStore,
        run: RunInfo,
        *,
        resumed: bool = False,
        journaled: int = 0,
        queue_size: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        self.store = store
        self.run = run
        self.resumed = resumed
        self.retry = retry or RetryPolicy()
        self.cursor = 0
        self.journaled = journaled
        """The newest batch journaled for the run, as far as this sink was told."""
        self.error: str | None = None
        self.rejection: str | None = None
        """The latest batch the backend refused for good (kept with the cursor)."""
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._abort = threading.Event()
        self._interrupt = threading.Event()
        self._final_status: RunStatus | None = None
        self._deadline = float("inf")
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"tracelet-{name}", daemon=True)

    def start(self) -> None:
        """Start the sink's thread."""
        self._thread.start()

    def offer(self, batch: Batch) -> None:
        """Queue ``batch`` if there is room; otherwise it is replayed from the journal later."""
        self.journaled = max(self.journaled, batch.seq)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(batch)

    def close(self, status: RunStatus | None, deadline: float) -> None:
        """Deliver what is left, finish the run with ``status`` (None: leave it open), stop.

        Retries go on until ``deadline`` (a ``time.monotonic()`` value), then the sink gives
        up; what it did not deliver stays in the journal behind its cursor. A backoff in
        progress is cut short, so a backend that has recovered is tried again at once.
        """
        self._final_status = status
        self._deadline = deadline
        self._closing.set()
        self._interrupt.set()

    def join(self, timeout: float | None) -> bool:
        """Wait for the sink to finish; True if it did (False: still busy or hanging)."""
        finished = self._done.wait(timeout)
        if not finished:
            self._abort.set()
            self._interrupt.set()
        return finished

    @property
    def finished(self) -> bool:
        """Whether the sink's thread has ended."""
        return self._done.is_set()

    # -- the sink thread -----------------------------------------------------------------

    def _main(self) -> None:
        opened = False
        try:
            opened = self._attempt("reading its cursor", self._read_cursor) and self._attempt(
                "start", self._open
            )
            if opened:
                self._deliver_until_closed()
        except Exception as error:  # the thread must never die silently
            if not self._abort.is_set():
                logger.exception("tracelet backend %r stopped unexpectedly: %r", self.name, error)
        finally:
            if opened:
                self._release()
            self._done.set()

    def _read_cursor(self) -> None:
        self.cursor = self.store.get_cursor(self.run.id, self.name)

    def _release(self) -> None:
        """Call the backend's ``stop`` once, whether or not delivery completed."""
        try:
            self.backend.stop()
        except Exception as error:
            logger.warning("tracelet backend %r: stop failed (%r)", self.name, error)

    def _open(self) -> None:
        self.backend.start()
        self.backend.start_run(self.run, self.resumed)

    def _deliver_until_closed(self) -> None:
        while not self._abort.is_set():
            try:
                batch = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closing.is_set():
                    self._finish()
                    return
                if self.cursor < self.journaled and not self._catch_up(self.journaled):
                    return  # batches dropped on overflow: read them back while idle
                continue
            if batch.seq > self.cursor and not (
                self._catch_up(batch.seq - 1) and self._deliver(batch)
            ):
                return

    def _finish(self) -> None:
        last: list[int] = []
        if not self._attempt("reading the journal", lambda: last.append(self._last_seq())):
            return
        if not self._catch_up(last[0]):
            return
        status = self._final_status
        if status is not None and self._attempt("finish", lambda: self.backend.finish_run(status)):
            with contextlib.suppress(Exception):  # a later sync would only repeat the status
                self.store.mark_finished(self.run.id, self.name)

    def _last_seq(self) -> int:
        return self.store.last_seq(self.run.id)

    def _catch_up(self, upto: int) -> bool:
        """Deliver journaled batches ``cursor+1 .. upto``; False if the sink gave up."""
        while self.cursor < upto:
            batches: list[Batch] = []
            if not self._attempt("reading the journal", partial(self._read, batches, upto)):
                return False
            if not batches or batches[0].seq != self.cursor + 1:
                report_once(
                    f"tracelet backend {self.name!r}",
                    f"the journal has no batch {self.cursor + 1} of run {self.run.id}; "
                    "delivery stops here",
                )
                return False
            for batch in batches:
                if not self._deliver(batch):
                    return False
        return True

    def _read(self, into: list[Batch], upto: int) -> None:
        into[:] = self.store.read_batches(self.run.id, self.cursor, upto, limit=16)

    def _deliver(self, batch: Batch) -> bool:
        try:
            delivered = self._attempt(f"batch {batch.seq}", lambda: self.backend.log_batch(batch))
        except RejectedBatchError as error:
            self._reject(batch, error)
            delivered = True
        if not delivered or self._abort.is_set():  # stop gave up on this sink meanwhile
            return False
        self.cursor = batch.seq
        try:  # the in-memory cursor drives this run; the stored one serves a later sync
            self.store.set_cursor(self.run.id, self.name, batch.seq, error=self.rejection)
        except Exception as error:
            report_once(f"tracelet backend {self.name!r}", f"cursor not saved ({error!r})")
        return True

    def _reject(self, batch: Batch, error: RejectedBatchError) -> None:
        """The backend will never take ``batch``: record that, and go on with the next."""
        self.rejection = redact_uri(f"batch {batch.seq} rejected: {error}")
        logger.error(
            "tracelet backend %r: %s (%d records); it stays in the local store, and delivery "
            "goes on",
            self.name,
            self.rejection,
            len(batch),
        )

    def _attempt(self, what: str, action: Callable[[], object]) -> bool:
        """Run ``action`` until it succeeds (True) or the sink must give up (False).

        :class:`RejectedBatchError` is not retried: it propagates to the caller.
        """
        delays = self.retry.delays()
        while not self._abort.is_set():
            try:
                action()
            except RejectedBatchError:
                raise
            except Exception as error:
                self._failed(what, error)
                wait = min(next(delays), self._deadline - time.monotonic())
                if wait <= 0:
                    return False
                self._interrupt.wait(wait)
                self._interrupt.clear()
                continue
            if self.error is not None:
                logger.warning("tracelet backend %r recovered; delivery resumed", self.name)
                self.error = None
            return True
        return False

    def _failed(self, what: str, error: Exception) -> None:
        first = self.error is None
        self.error = redact_uri(f"{type(error).__name__}: {error}")
        if first:
            logger.warning(
                "tracelet backend %r failed (%s: %s); retrying with backoff, nothing is lost "
                "(records stay in the local store until delivered)",
                self.name,
                what,
                self.error,
            )
            with contextlib.suppress(Exception):  # recording the error must not end delivery
                self.store.set_cursor(self.run.id, self.name, self.cursor, error=self.error)
