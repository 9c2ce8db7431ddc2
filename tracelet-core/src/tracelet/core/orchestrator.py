"""The orchestrator: training thread -> buffer -> dispatcher -> journal writer -> one sink
per backend.

The training thread only appends to :attr:`Orchestrator.buffer` (a deque: appends are
atomic, so any number of threads may log at once and each thread's records keep their
order). The metrics of a step logged together go in as one record
(:meth:`Orchestrator.put_step`), which travels as it is: the journal writer makes its
points (:mod:`tracelet.core.points`). One dispatcher thread wakes every ``flush_interval``
seconds, or sooner when the buffer is full, takes it in chunks and sends them to the run's
journal writer (a process of its own by default: :mod:`tracelet.core.journal_link`), which
journals each batch in one transaction. While logging goes on, a batch spans
:data:`BATCH_SPAN` cycles. Each batch the writer confirms is offered to every
:class:`~tracelet.core.sink.BackendSink`. When the buffer is full the caller waits
(back-pressure): nothing is ever dropped.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import call
from typing import Any

import attrs

from tracelet.core.journal_link import (
    JournalLink,
    LinkBroken,
    LinkTimeout,
    ProcessLink,
    ThreadLink,
    can_start_writer,
)
from tracelet.core.journal_writer import JournalWriter
from tracelet.core.points import (
    STEP_RECORD,
    ChunkedPoints,
    HeldChunk,
    chunk_size,
    chunks_of,
    packed,
)
from tracelet.core.retry import RetryPolicy
from tracelet.core.sink import BackendSink
from tracelet.core.workers import DeliveryWorkers
from tracelet.media import PendingArtifact, PendingImage
from tracelet.plugins import BackendPlugin
from tracelet.records import (
    Batch,
    CheckpointRequest,
    DeliveryState,
    Histogram,
    MetricPoint,
    Params,
    PendingMetric,
    RunInfo,
    RunStatus,
    Sample,
    Tags,
    Text,
)
from tracelet.reporting import logger, report_once
from tracelet.storage import LocalStore
from tracelet.values import check_name, check_step, to_metric_value

MAX_BATCH = 50_000
"""Most records journaled in one transaction."""
BATCH_SPAN = 4
"""Flush intervals a batch of metric points stays open while logging goes on (it ends
sooner for a flush, a stop, a checkpoint, other records, or :data:`MAX_BATCH` records).
Each cycle still sends the points it drained to the journal writer, which journals them
even if the training process dies, and live detection watches them then; only their commit
(what readers see), and delivery to backends, wait. Every batch costs a commit, a reply,
and each backend a call and a cursor write: about 2.3 ms of CPU in all, measured in a loop
logging 13,000 points a second (the journal path's CPU, both processes, fell from 153 to
126 ms per 8 s against a batch each interval)."""
JOURNAL_READ_TRIES = 3
"""Reads of the journal's newest batch, a moment apart, when a lost writer is replaced."""
WRITER_START_WAIT = 10.0
"""Seconds ``start`` waits for a writer process to be ready (it goes on regardless)."""
CHUNK = 2048
"""Buffer slots (each a point, a record, or a step record's empty slot) the dispatcher
takes at a time: the GIL it holds at once (0.3 to 0.7 ms a chunk with a writer process,
measured in a loop logging 200,000 points a second)."""
HANDOFF = 0.0002
"""Seconds the dispatcher sleeps after a chunk that leaves the buffer not empty, while it
keeps up (the buffer under a quarter full) and no flush or stop waits. Sending a chunk lets
go of the GIL only for an instant: the training thread, woken to take it, mostly loses that
race and then waits out the switch interval (5 ms). A sleep longer than its wake-up hands
the GIL over, so it waits one chunk at most. Behind, the dispatcher drains without pausing,
and the GIL is shared by the switch interval."""
_SENT_AS_THEY_ARE = frozenset((tuple, STEP_RECORD))
"""The kinds of record a chunk sends on unchanged: points, and step records."""
STEP_POINTS = range(4, CHUNK + 1)
"""Step sizes queued as one record. A smaller step's dict and record cost more memory a
point than point tuples do (and save little time); a larger one would make a chunk's points,
and a batch's, outgrow :data:`CHUNK` and :data:`MAX_BATCH`. (At least two: a chunk holding
a record then holds more points than items, which is how :class:`ChunkedPoints` tells.)"""
POINT_BYTES = 160
"""Memory a queued metric point holds (its tuple, two floats, the step, the buffer's slot),
measured: the default 200,000-record buffer holds at most about 32 MB of points. A point of
a step logged together (:meth:`Orchestrator.put_step`) holds less: about 62 bytes in a
step of 20 metrics, 112 in a step of 4."""


def payload_bytes(record: Any) -> int:
    """The bytes of payload ``record`` holds beyond its own small object: an image's
    pixels, a text, a sample, parameters and tags (0 for a metric point)."""
    kind = record.__class__
    if kind is PendingImage:
        return int(record.nbytes)
    if kind is Text:
        return sys.getsizeof(record.text)
    if kind is Histogram:
        return 16 * (len(record.counts) + len(record.edges))
    if kind is Sample:
        return sys.getsizeof(record.data)
    if kind is Params or kind is Tags:
        return sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in record.values.items())
    return 0


class Orchestrator:
    """Routes one run's records to the journal and on to every backend."""

    def __init__(
        self,
        store: LocalStore,
        run: RunInfo,
        *,
        flush_interval: float = 0.5,
        buffer_size: int = 200_000,
        retry: RetryPolicy | None = None,
        capture_samples: int = 5,
        media_bytes: int = 512 * 2**20,
        max_workers: int = 4,
        journal_process: bool = True,
    ) -> None:
        self.store = store
        self.run = run
        self.buffer: deque[Any] = deque()
        self.capacity = buffer_size
        self.payload_capacity = media_bytes
        """Bytes of payload (images, texts, samples, params) queued before ``put`` waits."""
        self.payload_bytes = 0
        """Bytes of payload queued and not journaled yet."""
        self.flush_interval = flush_interval
        self._batch_span = (BATCH_SPAN - 0.5) * flush_interval
        """How long after the cycle that began it a batch of points ends (half an interval
        early: a cycle may wake a moment before its interval)."""
        self.retry = retry or RetryPolicy()
        self.sinks: dict[str, BackendSink] = {}
        self.workers = DeliveryWorkers(max_workers)
        """The threads delivering to backends (at most ``max_workers``, shared)."""
        self.journal_process = journal_process
        """Whether the journal writer runs in a process of its own."""
        self.seq = store.last_seq(run.id)
        """The last batch journaled."""
        self.unjournaled = 0
        self.samples: deque[Sample] = deque(maxlen=capture_samples)
        self.detector: Any = None
        """The run's :class:`~tracelet.analysis.LiveDetector` (set before :meth:`start`)."""
        self._link: JournalLink = self._thread_link()
        self._link_lost = False
        self._send_lock = threading.RLock()
        self._open_chunks: list[HeldChunk] = []
        self._open_sizes: list[int] = []
        self._open_events: list[Any] = []
        """The batch being built: the chunks of points sent of it (and the points of each),
        and its other records."""
        self._batch_began: float | None = None
        """When the cycle that began the open batch began (``time.monotonic()``)."""
        self._sent = 0
        """Batches sent to the writer (each one's token: 1, 2, ...); the writer numbers them."""
        self._answered = 0
        """The last token the writer answered for (journaled or lost)."""
        self._pending: dict[int, Batch] = {}
        """Batches sent and not answered for yet, by token."""
        self._acks = threading.Condition()
        self._image_base = self.seq
        """Image files are named from ``_image_base + token`` (unique across sessions)."""
        self._from_writer: deque[tuple[Any, ...]] = deque()
        """Replies that run code on the dispatcher (findings, log records, a new store)."""
        self._cursors_stale = False
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._drain_lock = threading.Lock()
        self._drainer: int | None = None
        """The thread draining now (an ``on_anomaly`` callback logging from it must not
        wait for itself)."""
        self._cycled = threading.Condition()
        self._cycles = 0
        self._waiting = 0
        """Callers waiting for the cycles to journal what they queued (a flush)."""
        self._stopping = False
        self._abandoned = False
        self._in_flight = 0
        """Records of the batch being prepared (images encoded, artifacts copied)."""
        self._stop_deadline = float("inf")
        self._thread = threading.Thread(
            target=self._dispatch, name="tracelet-dispatcher", daemon=True
        )

    @property
    def running(self) -> bool:
        """Whether the dispatcher thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the journal writer, the dispatcher thread and every backend's sink."""
        self._link = self._open_link()
        self._introduce()
        self._link.wait_ready(WRITER_START_WAIT)  # its start-up is not the training loop's
        self._thread.start()
        for sink in list(self.sinks.values()):
            sink.start()

    # -- the training thread's side ------------------------------------------------------

    def route_metric(self, metric: MetricPoint | Any) -> None:
        """Queue one metric: a ``(name, value, step, timestamp)`` tuple, or an object with
        ``name``, ``value``, ``step`` and (optionally) ``timestamp`` attributes."""
        if isinstance(metric, tuple):
            name, value, step, timestamp = metric
        else:
            name, value, step = metric.name, metric.value, metric.step
            timestamp = getattr(metric, "timestamp", None) or time.time()
        name = check_name(name)
        self.put((name, to_metric_value(name, value), check_step(step, name), float(timestamp)))

    def put(self, record: Any) -> None:
        """Queue any record, waiting while the buffer is full. A record with a payload (an
        image, a text, a sample, parameters: :func:`payload_bytes`) also waits while those
        queued hold ``payload_capacity`` bytes or more (one larger than that still goes
        through an empty queue): memory stays bounded in records and in bytes."""
        size = payload_bytes(record)
        if size:
            self._reserve(size)
        if len(self.buffer) >= self.capacity:
            self.wait_for_room()
        self.buffer.append(record)

    def put_step(self, values: Mapping[str, float], step: int, timestamp: float) -> bool:
        """Queue one step's points (checked: known names, plain floats) as one record,
        ``[a copy of values, step, timestamp]`` (:data:`STEP_RECORD`), if the step has
        :data:`STEP_POINTS` points and the buffer has room for them all. False otherwise:
        the caller then queues them as point tuples.

        The record takes one slot per point: empty ones (``None``) and then the record, so
        the buffer's length still counts points and back-pressure and the memory bound are
        unchanged. A drain that runs between the two appends takes the empty slots now and
        the record (all its points) next cycle: nothing is lost or reordered.
        """
        count = len(values)
        if count not in STEP_POINTS or len(self.buffer) + count > self.capacity:
            return False
        snapshot = values.copy() if values.__class__ is dict else dict(values)  # callers reuse
        self.buffer.extend(repeat(None, len(snapshot) - 1))
        self.buffer.append([snapshot, step, timestamp])
        return True

    def put_journaled(self, record: Any) -> None:
        """Queue ``record`` and journal it, with everything queued before it, before
        returning (``async_writes`` off). A failure is reported; the dispatcher retries."""
        self.put(record)
        if self.running and not self._draining_here():
            self._drain_reporting(close=True)  # (from inside a drain, that drain takes it)
            self._wait_answered(self._sent, float("inf"))

    def _reserve(self, size: int) -> None:
        draining = self._draining_here()  # never wait for itself
        with self._room:
            while self.payload_bytes and self.payload_bytes + size > self.payload_capacity:
                if draining or not self.running:
                    break
                self._wake.set()
                self._room.wait(0.5)
            self.payload_bytes += size

    def _release(self, record: Any) -> None:
        size = payload_bytes(record)
        if size:
            with self._room:
                self.payload_bytes -= size
                self._room.notify_all()

    def wait_for_room(self) -> None:
        """Block until the dispatcher has made room in the buffer (back-pressure); not on
        the thread draining it (a hook or ``on_anomaly`` callback logging), which would wait
        for itself."""
        if self._draining_here():
            return
        self._wake.set()
        with self._room:
            while len(self.buffer) >= self.capacity and self.running:
                self._room.wait(0.5)

    # -- backends ------------------------------------------------------------------------

    def add_backend(self, backend: BackendPlugin, *, resumed: bool = False) -> BackendSink:
        """Attach a backend. Added mid-run, it first receives everything already journaled."""
        name = backend.name
        if name in self.sinks:
            raise ValueError(f"a backend named {name!r} is already attached to this run")
        sink = BackendSink(
            backend,
            self.store,
            self.run,
            self.workers,
            resumed=resumed,
            journaled=self.seq,
            retry=self.retry,
        )
        self.store.ensure_cursor(self.run.id, name)
        self.sinks[name] = sink
        if self.running:
            self._cursors_stale = True  # the dispatcher tells the writer
            self._wake.set()
            sink.start()
        return sink

    def remove_backend(self, backend: BackendPlugin | str, timeout: float | None = 30.0) -> bool:
        """Detach a backend after it has received what was logged so far (up to ``timeout``).

        The backend's run is left open. Returns whether it caught up in time.
        """
        name = backend if isinstance(backend, str) else backend.name
        if name not in self.sinks:
            raise ValueError(
                f"no backend named {name!r} is attached (attached: {list(self.sinks)})"
            )
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        self._journal_now(deadline)
        sink = self.sinks.pop(name)
        sink.close(None, deadline)
        return sink.join(timeout) and sink.cursor >= self.seq

    # -- flush and stop ------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Have everything queued so far journaled, then wait (up to ``timeout`` seconds in
        all) for every backend to accept it. Returns True when all backends are up to date.

        The dispatcher does the journaling; the caller only waits for it.
        """
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        if not self._journal_now(deadline):
            return False
        target = self.seq
        while any(s.cursor < target and not s.finished for s in self.sinks.values()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return all(s.cursor >= target for s in self.sinks.values())

    def settle(self, deadline: float) -> bool:
        """Have everything queued so far journaled and what live detection found in it
        announced (an ``on_anomaly`` callback may log more), by ``deadline``."""
        return self._journal_now(deadline) and self._journal_now(deadline)

    def _journal_now(self, deadline: float) -> bool:
        """Have everything queued so far journaled (by ``deadline``); True if it was."""
        if self._draining_here():
            self._drain(close=True)  # from inside a drain (a hook, an on_anomaly callback)
            return True
        return self._journal_queued(deadline)

    def _journal_queued(self, deadline: float) -> bool:
        """Wait until a whole dispatcher cycle has begun and ended since this call, then
        for the writer to journal what it was sent."""
        with self._cycled:
            target = self._cycles + 2
            self._waiting += 1  # the cycles end the batch they build
            try:
                while self._cycles < target and self.running:
                    self._wake.set()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    self._cycled.wait(min(remaining, 0.05))
            finally:
                self._waiting -= 1
        return self._wait_answered(self._sent, deadline)  # (newer records may wait)

    def stop(
        self,
        status: RunStatus = RunStatus.FINISHED,
        timeout: float = 30.0,
        deadline: float | None = None,
    ) -> dict[str, int]:
        """Journal everything, give backends up to ``timeout`` seconds (or until
        ``deadline``, a ``time.monotonic()`` value, when given), and stop.

        Returns, per backend, how many batches it has not accepted (they stay in the journal).
        """
        if deadline is None:
            deadline = time.monotonic() + timeout
        lost_before = self.unjournaled
        self._stop_deadline = deadline
        self._stopping = True
        self._wake.set()
        if self.running:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self.running:  # still encoding or writing at the deadline: leave it there
            self._abandoned = True
            self._link.kill()  # a writer process still busy is stopped
        elif self.buffer:
            self._drain_reporting()  # logged by another thread as the dispatcher ended
        left = self._stranded(lost_before)
        if left:
            report_once(
                f"tracelet run {self.run.id}",
                f"{left} record(s) were not journaled before the {timeout:g}s flush timeout "
                "(the journal was still busy: encoding images, or a full or failing disk); "
                "they are lost",
            )
        for sink in self.sinks.values():
            sink.close(status, deadline)
        for sink in self.sinks.values():
            sink.join(max(0.0, deadline - time.monotonic()))
        self.workers.close()
        return self.undelivered()

    def abort(self) -> None:
        """Undo a :meth:`start` that failed half-way: stop the writer and the threads."""
        self._stopping = self._abandoned = True
        self._wake.set()
        self._link.kill()
        self.workers.close()

    @property
    def journal_in_use(self) -> bool:
        """Whether an abandoned sink may still be inside the journal (do not close it)."""
        return any(sink.in_journal for sink in self.sinks.values())

    def delivery(self) -> dict[str, DeliveryState]:
        """Where each backend's delivery stands, by backend name."""
        return {name: sink.state for name, sink in self.sinks.items()}

    def undelivered(self) -> dict[str, int]:
        """Batches each backend has not accepted yet."""
        return {n: self.seq - s.cursor for n, s in self.sinks.items() if s.cursor < self.seq}

    # -- the dispatcher thread -----------------------------------------------------------

    def _dispatch(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            self._drain_reporting()
            if stopping:
                try:
                    self._finish_journal()
                except Exception as error:  # (a store that cannot even be read)
                    report_once("tracelet dispatcher", f"unexpected error {error!r} at stop")
            with self._cycled:
                self._cycles += 1
                self._cycled.notify_all()
            if stopping:
                return

    def _finish_journal(self) -> None:
        """At stop, on the dispatcher: let the writer process finish (by stop's deadline) and
        announce what it found; anything logged later is journaled in this process."""
        if isinstance(self._link, ThreadLink):
            return
        self._link.close(self._stop_deadline)
        with self._send_lock:
            if self._link_lost and not self._give_up():
                self._replace_link()  # it died: what it had not journaled is journaled here
            else:
                self._link_lost = False
                self._link = self._thread_link()
        self._drain_reporting()

    def _draining_here(self) -> bool:
        """Whether the calling thread is the one draining the buffer now (then it must not
        wait for the drain, nor for room only the drain makes)."""
        return self._drainer == threading.get_ident()

    def _drain_reporting(self, close: bool = False) -> None:
        """Drain under the lock, reporting (not raising) anything unexpected: the dispatcher,
        and a caller journaling synchronously, must outlive any bug."""
        try:
            with self._drain_lock:
                self._drainer = threading.get_ident()
                try:
                    if self._link_lost and not self._give_up():
                        self._replace_link()
                    if self._cursors_stale:
                        self._cursors_stale = False
                        self._send(("cursors", tuple(self.sinks)))
                    self._drain(close)
                    self._act_on_replies()
                finally:
                    self._drainer = None
        except LinkTimeout:  # past stop's deadline, the writer no longer reading
            self._abandoned = True
        except Exception as error:
            report_once("tracelet dispatcher", f"unexpected error {error!r}; going on")

    def _drain(self, close: bool = False) -> None:
        """Send what the buffer holds now to the writer, :data:`CHUNK` slots at a time.
        What is logged meanwhile waits for the next cycle (begun at once), so a cycle always
        ends. A batch ends at :data:`MAX_BATCH` records, before a checkpoint, and at the end
        of a cycle that :meth:`_batch_ends` says ends it (under sustained logging, batches
        stay large: each costs a commit, and every backend a call). The dispatcher pauses
        after each chunk that leaves the buffer not empty, while it keeps up and nobody
        waits for the drain (:data:`HANDOFF`)."""
        began = time.monotonic()
        buffer = self.buffer
        popleft = buffer.popleft
        on_dispatcher = threading.current_thread() is self._thread  # (not a caller's)
        left = len(buffer)
        while left and not self._abandoned:
            size = min(left, CHUNK)
            # the slots' records, less a step record's empty ones (nothing else queued is false)
            chunk = list(filter(None, map(call, repeat(popleft, size))))
            left -= size
            with self._room:
                self._room.notify_all()
            self._take(chunk)
            if on_dispatcher and (left or buffer) and self._keeping_up():
                time.sleep(HANDOFF)  # a training thread waiting for the GIL takes it now
            if sum(self._open_sizes) + len(self._open_events) >= MAX_BATCH:
                self._close_batch()
        if self._batch_began is None and self._open_chunks:
            self._batch_began = began
        if self._batch_ends(close, began):
            self._close_batch()
        if buffer:
            self._wake.set()  # logged meanwhile: another cycle at once

    def _batch_ends(self, close: bool, began: float) -> bool:
        """Whether the cycle that began at ``began`` ends the open batch: asked to, holding
        records other than points (they stay in this process until the batch ends, and
        hold the payload room callers may wait for), or :data:`BATCH_SPAN` intervals old."""
        if close or self._open_events or self._waiting or self._stopping:
            return True
        return self._batch_began is not None and began - self._batch_began >= self._batch_span

    def _keeping_up(self) -> bool:
        """Whether the buffer is under a quarter full and no flush or stop waits."""
        return len(self.buffer) < self.capacity // 4 and not (self._waiting or self._stopping)

    def _take(self, chunk: list[Any]) -> None:
        """Send ``chunk``'s points and step records on; keep its other records for the
        batch."""
        kinds = set(map(type, chunk))
        if kinds <= _SENT_AS_THEY_ARE:
            self._send_points(chunk, STEP_RECORD in kinds)
            return
        items: list[Any] = []
        any_records = False
        for record in chunk:
            kind = record.__class__
            if kind is tuple or kind is STEP_RECORD:
                items.append(record)
                any_records = any_records or kind is STEP_RECORD
            elif kind is PendingMetric:
                point = _resolved(record)
                if point is not None:
                    items.append(point)
            elif kind is CheckpointRequest:
                self._send_points(items, any_records)
                items, any_records = [], False
                self._close_batch()  # the checkpoint sees exactly what was logged before it
                self._send(("checkpoint", record, list(self.samples)))
                self.samples.clear()
            else:
                self._open_events.append(record)
        self._send_points(items, any_records)

    def _send_points(self, items: list[Any], any_records: bool) -> None:
        """Send points and step records (``any_records``: some) on as a chunk of the batch,
        packed when the writer is a process (the points' objects are freed here, a chunk at
        a time, not a whole batch at once on whichever thread lets the batch go)."""
        if not items:
            return
        chunk = tuple(items)
        size = chunk_size(chunk) if any_records else len(chunk)
        held = packed(chunk) if self._link.packs else chunk
        self._open_chunks.append(held)
        self._open_sizes.append(size)
        self._send(("points", held))

    def _close_batch(self) -> None:
        """End the batch being built: number it and have the writer journal it."""
        if not self._open_chunks and not self._open_events:
            return
        metrics = ChunkedPoints(self._open_chunks, self._open_sizes)
        events = self._open_events
        self._open_chunks, self._open_sizes = [], []
        self._open_events = []
        self._batch_began = None
        token = self._sent + 1
        self._in_flight = len(metrics) + len(events)
        try:
            batch = self._batch(self._image_base + token, metrics, events)
        finally:
            self._in_flight = 0
        if not len(batch):  # only samples: they wait for the next checkpoint
            return
        with self._acks:
            self._sent = token
            self._pending[token] = batch
        self._send(_batch_message(token, batch))

    def _send(self, message: tuple[Any, ...]) -> None:
        """Send ``message`` to the writer; if the writer process is gone, go on with one in
        this process (which is sent what the lost one had not journaled)."""
        with self._send_lock:
            if self._abandoned:
                raise LinkTimeout  # stop has given up on the journal
            if self._link_lost:
                self._replace_link()  # it sends the points and batches not journaled,
                if message[0] in ("points", "batch"):  # this one's among them
                    return
            try:
                self._link.send(message, self._give_up)
            except LinkBroken:
                self._replace_link()  # it resends the points and batches not journaled
                if message[0] not in ("points", "batch"):
                    self._link.send(message, self._give_up)

    def _act_on_replies(self) -> None:
        """Act on the writer's replies that run code: on the drainer, where a callback or a
        log handler may log (it never waits for room only this thread can make)."""
        while self._from_writer:
            reply = self._from_writer.popleft()
            kind = reply[0]
            if kind == "found" and self.detector is not None:
                self.detector.announce(reply[1], reply[2])
            elif kind == "log":
                logger.log(reply[1], "%s", reply[2])
            elif kind == "replaced" and self._link.pid is not None:
                self.store.reconnect()  # the writer process made a new file: use it here too

    # -- the journal writer --------------------------------------------------------------

    def _open_link(self) -> JournalLink:
        if self.journal_process and can_start_writer():
            try:
                return ProcessLink(self.store.path, self.run, self._on_reply, self._on_link_end)
            except Exception as error:
                report_once(
                    "tracelet journal",
                    f"could not start a journal writer process ({error!r}); journaling in "
                    "the training process instead",
                )
        return self._thread_link()

    def _thread_link(self) -> ThreadLink:
        return ThreadLink(JournalWriter(self.store, self.run, self._on_reply, self._give_up))

    def _introduce(self) -> None:
        """Tell the writer the run's backends and how to watch its metrics."""
        self._send(("cursors", tuple(self.sinks)))
        if self.detector is not None:
            self._send(("detect", self.detector.config, self.detector.limit))

    def _on_link_end(self, link: JournalLink, expected: bool) -> None:
        if not expected and link is self._link:
            self._link_lost = True
            self._wake.set()
            with self._acks:
                self._acks.notify_all()

    def _replace_link(self) -> None:
        """Go on journaling in this process after the writer process ended unexpectedly."""
        with self._send_lock:
            lost, pid = self._link, self._link.pid
            lost.kill()  # gone for good (its last replies read) before the journal is read
            if pid is not None:  # (else a replacement that failed half-way, retried)
                report_once(
                    "tracelet journal",
                    f"the journal writer process {pid} ended unexpectedly; run {self.run.id} "
                    "goes on journaling in the training process",
                )
            written_unanswered = self._written_unanswered()
            self._link = self._thread_link()
            self._link_lost = False
            try:
                self._introduce()
                with self._acks:
                    pending = sorted(self._pending.items())
                for token, batch in pending:
                    if written_unanswered > 0:
                        written_unanswered -= 1
                        self._on_reply(("journaled", token, self.seq + 1))
                        continue
                    self._resend_points(chunks_of(batch.metrics))
                    self._link.send(_batch_message(token, batch), self._give_up)
                self._resend_points(self._open_chunks)
            except BaseException:
                self._link_lost = True  # retried whole, by a new writer, next time
                raise

    def _resend_points(self, chunks: Iterable[HeldChunk]) -> None:
        for chunk in chunks:
            self._link.send(("points", chunk), self._give_up)

    def _written_unanswered(self) -> int:
        """Batches a writer process journaled without a word back before it ended: the
        writer journals them in the order sent, so they are the first ones unanswered. When
        the journal cannot be read (tried :data:`JOURNAL_READ_TRIES` times), none: a
        replacement journals them again (twice, rather than lost), and stop counts them as
        not journaled."""
        for attempt in range(1, JOURNAL_READ_TRIES + 1):
            try:
                return max(0, self.store.last_seq(self.run.id) - self.seq)
            except sqlite3.Error as error:
                if attempt == JOURNAL_READ_TRIES:
                    report_once(
                        "tracelet journal read",
                        f"could not read the journal's newest batch ({error!r}); the batches "
                        "its writer left unanswered are taken as not journaled",
                    )
                else:
                    time.sleep(0.05 * attempt)  # (a moment's contention passes)
        return 0

    def _on_reply(self, message: tuple[Any, ...]) -> None:
        """Act on a reply of the writer (see :mod:`tracelet.core.journal_writer`)."""
        kind = message[0]
        if kind == "journaled":
            self._journaled(message[1], message[2])
        elif kind == "lost":
            with self._acks:
                self._pending.pop(message[1], None)
                self._answered = max(self._answered, message[1])
                self.unjournaled += message[2]
                self._acks.notify_all()
        elif kind in ("found", "log", "replaced"):  # run code: on the dispatcher
            self._from_writer.append(message)
            if not self._draining_here():
                self._wake.set()

    def _journaled(self, token: int, seq: int) -> None:
        with self._acks:
            batch = self._pending.pop(token, None)
            self._answered = max(self._answered, token)
            self.seq = max(self.seq, seq)
            self._acks.notify_all()
        if batch is None:
            return
        batch = attrs.evolve(batch, seq=seq)
        for sink in list(self.sinks.values()):
            sink.offer(batch)

    def _wait_answered(self, token: int, deadline: float) -> bool:
        """Wait (until ``deadline``) for the writer to answer for batch ``token``."""
        with self._acks:
            while self._answered < token and self.running:
                if self._link_lost:
                    self._wake.set()  # the dispatcher replaces the writer
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._acks.wait(min(remaining, 0.05))
        return self._answered >= token

    def _stranded(self, lost_before: int) -> int:
        """Records queued, sent or being written and not journaled at stop's deadline, and
        those the writer gave up on since ``unjournaled`` was ``lost_before``."""
        written_unanswered = self._written_unanswered()
        with self._acks:
            held = [len(batch) for _, batch in sorted(self._pending.items())]
            self._pending.clear()
            lost = self.unjournaled - lost_before
        queued = len(self.buffer) + sum(self._open_sizes) + len(self._open_events)
        return queued + self._in_flight + sum(held[written_unanswered:]) + lost

    def _batch(self, seq: int, metrics: Sequence[MetricPoint], events: Iterable[Any]) -> Batch:
        params: dict[str, Any] = {}
        tags: dict[str, str] = {}
        texts, images, artifacts, histograms = [], [], [], []
        files = self.store.files_dir(self.run.id)
        for event in events:
            try:
                if isinstance(event, Params):
                    params.update(event.values)
                elif isinstance(event, Tags):
                    tags.update(event.values)
                elif isinstance(event, Text):
                    texts.append(event)
                elif isinstance(event, Histogram):
                    histograms.append(event)
                elif isinstance(event, PendingImage):
                    if self._give_up():  # past stop's deadline: no more encoding
                        self._count_lost(1)
                        continue
                    images.append(event.store(files / "images", seq, len(images)))
                elif isinstance(event, PendingArtifact):
                    if self._give_up():
                        self._count_lost(1)
                        continue
                    artifacts.append(event.store(files / "artifacts"))
                elif isinstance(event, Sample):
                    self.samples.append(event)
                else:
                    raise TypeError(f"unknown record type {type(event).__name__}")
            except Exception as error:
                report_once("tracelet", f"could not journal {event!r}: {error!r}; skipped")
            finally:
                self._release(event)
        return Batch(self.run.id, seq, metrics, params, tags, texts, images, artifacts, histograms)

    def _count_lost(self, records: int) -> None:
        with self._acks:
            self.unjournaled += records

    def _give_up(self) -> bool:
        """Whether journaling should stop retrying (only once stop's deadline has passed)."""
        return self._stopping and time.monotonic() > self._stop_deadline


def _resolved(pending: PendingMetric) -> MetricPoint | None:
    """``pending``'s point, or None (reported once) when its value cannot be had."""
    try:
        return pending.point()
    except Exception as error:
        report_once(
            f"tracelet metric {pending.name!r}",
            f"a value logged at step {pending.step} could not be read ({error!r}); it is left out",
        )
        return None


def _batch_message(token: int, batch: Batch) -> tuple[Any, ...]:
    """The message that ends ``batch`` (its points were sent before it)."""
    return (
        "batch",
        token,
        batch.params,
        batch.tags,
        batch.texts,
        batch.images,
        batch.artifacts,
        batch.histograms,
    )
