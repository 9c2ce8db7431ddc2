"""One backend's live delivery line: its own thread and bounded queue around a :class:`Delivery`.

The dispatcher offers every journaled batch to each sink. A sink whose queue is full simply
lets the batch go: it is in the journal, and the sink reads it back from there when it sees
a gap between its cursor and the next batch it is offered. So memory stays bounded, a slow
or failing backend delays nobody, and nothing is lost.
"""

from __future__ import annotations

import contextlib
import queue
import threading

from tracelet.core.delivery import Delivery
from tracelet.core.retry import RetryPolicy
from tracelet.plugins import BackendPlugin
from tracelet.records import Batch, DeliveryState, RunInfo, RunStatus
from tracelet.reporting import logger
from tracelet.storage import LocalStore


class BackendSink:
    """Delivers one run's batches to one backend on a dedicated thread."""

    def __init__(
        self,
        backend: BackendPlugin,
        store: LocalStore,
        run: RunInfo,
        *,
        resumed: bool = False,
        journaled: int = 0,
        queue_size: int = 64,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.name = backend.name
        self.backend = backend
        self.resumed = resumed
        self.delivery = Delivery(backend, store, run, retry=retry, journaled=journaled)
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=queue_size)
        self._closing = threading.Event()
        self._final_status: RunStatus | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name=f"tracelet-{self.name}", daemon=True
        )

    @property
    def state(self) -> DeliveryState:
        """Where delivery stands."""
        return self.delivery.state

    @property
    def cursor(self) -> int:
        """The last batch the backend accepted."""
        return self.delivery.delivered

    def start(self) -> None:
        """Start the sink's thread."""
        self._thread.start()

    def offer(self, batch: Batch) -> None:
        """Queue ``batch`` if there is room; otherwise it is replayed from the journal later."""
        self.delivery.note_journaled(batch.seq)
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(batch)

    def close(self, status: RunStatus | None, deadline: float) -> None:
        """Deliver what is left, finish the run with ``status`` (None: leave it open), stop.

        Retries go on until ``deadline`` (a ``time.monotonic()`` value), then the sink gives
        up; what it did not deliver stays in the journal behind its cursor. A backoff in
        progress is cut short, so a backend that has recovered is tried again at once.
        """
        self._final_status = status
        self.delivery.deadline = deadline
        self._closing.set()
        self.delivery.wakeup.set()

    def join(self, timeout: float | None) -> bool:
        """Wait for the sink to finish; True if it did (False: still busy or hanging)."""
        finished = self._done.wait(timeout)
        if not finished:
            self.delivery.abort.set()
            self.delivery.wakeup.set()
        return finished

    @property
    def finished(self) -> bool:
        """Whether the sink's thread has ended."""
        return self._done.is_set()

    # -- the sink thread -----------------------------------------------------------------

    def _main(self) -> None:
        delivery = self.delivery
        try:
            if delivery.open(self.resumed):
                self._deliver_until_closed()
        except Exception as error:  # the thread must never die silently
            if not delivery.abort.is_set():
                logger.exception("tracelet backend %r stopped unexpectedly: %r", self.name, error)
        finally:
            delivery.release()
            self._done.set()

    def _deliver_until_closed(self) -> None:
        delivery = self.delivery
        while not delivery.abort.is_set():
            try:
                batch = self._queue.get(timeout=0.05)
            except queue.Empty:
                if self._closing.is_set():
                    status = self._final_status
                    done = delivery.catch_up() if status is None else delivery.finish(status)
                    if not done:
                        delivery.give_up()
                    return
                if delivery.state.pending and not delivery.catch_up(delivery.state.journaled):
                    return  # batches dropped on overflow: read them back while idle
                continue
            if batch.seq > delivery.delivered and not (
                delivery.catch_up(batch.seq - 1) and delivery.deliver(batch)
            ):
                return
