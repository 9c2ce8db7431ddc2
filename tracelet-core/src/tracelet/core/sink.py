"""One backend's live delivery line: a bounded queue around a :class:`Delivery`, run in slices
by the run's :class:`~tracelet.core.workers.DeliveryWorkers`.

The dispatcher offers every journaled batch to each sink. A sink whose queue is full simply
lets the batch go: it is in the journal, and the sink reads it back from there when it sees
a gap between its cursor and the next batch it is offered. So memory stays bounded, a slow
or failing backend delays nobody, and nothing is lost. A sink backing off after a failure
holds no thread while it waits.
"""

from __future__ import annotations

import contextlib
import queue
import threading

from tracelet.core.delivery import BackingOff, Delivery
from tracelet.core.retry import RetryPolicy
from tracelet.core.workers import DeliveryWorkers, Next
from tracelet.plugins import BackendPlugin
from tracelet.records import Batch, DeliveryState, RunInfo, RunStatus
from tracelet.reporting import logger
from tracelet.storage import LocalStore

SLICE_BATCHES = 8
"""Queued batches a sink delivers before letting another sink have the worker."""


class BackendSink:
    """Delivers one run's batches to one backend, on the run's delivery workers."""

    def __init__(
        self,
        backend: BackendPlugin,
        store: LocalStore,
        run: RunInfo,
        workers: DeliveryWorkers,
        *,
        resumed: bool = False,
        journaled: int = 0,
        queue_size: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = backend.name
        self.backend = backend
        self.resumed = resumed
        self.delivery = Delivery(backend, store, run, retry=retry, journaled=journaled, waits=False)
        self._workers = workers
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=queue_size)
        self._started = False
        self._opened = False
        self._closing = threading.Event()
        self._final_status: RunStatus | None = None
        self._done = threading.Event()
        self.in_journal = False
        """Whether, abandoned, it was still inside the journal (which must not be closed)."""

    def __repr__(self) -> str:
        return f"<BackendSink {self.name!r}>"

    @property
    def state(self) -> DeliveryState:
        """Where delivery stands."""
        return self.delivery.state

    @property
    def cursor(self) -> int:
        """The last batch the backend accepted."""
        return self.delivery.delivered

    def start(self) -> None:
        """Start delivering (open the backend's run on a worker)."""
        self._started = True
        self._workers.wake(self)

    def offer(self, batch: Batch) -> None:
        """Queue ``batch`` if there is room; otherwise it is replayed from the journal later."""
        self.delivery.note_journaled(batch.seq)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(batch)
        if self._started:
            self._workers.wake(self)

    def close(self, status: RunStatus | None, deadline: float) -> None:
        """Deliver what is left, finish the run with ``status`` (None: leave it open), stop.

        Retries go on until ``deadline`` (a ``time.monotonic()`` value), then the sink gives
        up; what it did not deliver stays in the journal behind its cursor. A backoff in
        progress is cut short, so a backend that has recovered is tried again at once.
        """
        self._final_status = status
        self.delivery.deadline = deadline
        self._closing.set()
        self._started = True
        self._workers.wake(self, urgent=True)

    def join(self, timeout: float | None) -> bool:
        """Wait for the sink to finish; True if it did. If not (still busy, or hanging in a
        call), abandon it: it touches the journal no more, except for a use of the journal
        already under way (then :attr:`in_journal` is True)."""
        finished = self._done.wait(timeout)
        if not finished:
            self.in_journal = not self.delivery.abandon()
            self._workers.wake(self, urgent=True)
        return finished

    @property
    def finished(self) -> bool:
        """Whether the sink has ended (its backend stopped)."""
        return self._done.is_set()

    # -- on a delivery worker ------------------------------------------------------------

    def run_slice(self) -> float | Next:
        """Deliver some of what is queued; say when to come back (see :class:`Next`)."""
        delivery = self.delivery
        try:
            if delivery.abort.is_set():
                return self._end()
            if not self._opened:
                if not delivery.open(self.resumed):
                    return self._end()
                self._opened = True
            if not self._deliver_queued():
                return self._end()
            if not self._queue.empty():
                return Next.AGAIN
            if self._closing.is_set():
                status = self._final_status
                done = delivery.catch_up() if status is None else delivery.finish(status)
                if not done:
                    delivery.give_up()
                return self._end()
            if delivery.state.pending and not delivery.catch_up(delivery.state.journaled):
                return self._end()  # batches dropped on overflow are read back while idle
            return Next.IDLE
        except BackingOff as backoff:
            return backoff.until
        except Exception as error:  # a sink must never die silently
            if not delivery.abort.is_set():
                logger.exception("tracelet backend %r stopped unexpectedly: %r", self.name, error)
            return self._end()

    def _deliver_queued(self) -> bool:
        """Deliver up to :data:`SLICE_BATCHES` queued batches; False if delivery gave up."""
        delivery = self.delivery
        for _ in range(SLICE_BATCHES):
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return True
            if batch.seq > delivery.delivered and not (
                delivery.catch_up(batch.seq - 1) and delivery.deliver(batch)
            ):
                return False
        return True

    def _end(self) -> Next:
        try:
            self.delivery.release()
        finally:
            self._done.set()
        return Next.DONE
