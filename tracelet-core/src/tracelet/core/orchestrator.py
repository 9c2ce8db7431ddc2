"""The orchestrator: training thread -> buffer -> dispatcher -> journal -> one sink per backend.

The training thread only appends to :attr:`Orchestrator.buffer` (a deque: appends are
atomic, so any number of threads may log at once and each thread's records keep their
order). One dispatcher thread wakes every ``flush_interval`` seconds, or sooner when the
buffer is full, drains it in batches, journals each batch in one transaction, and offers it
to every :class:`~tracelet.core.sink.BackendSink`. When the buffer is full the caller waits
(back-pressure): nothing is ever dropped.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from tracelet.core.journaling import write_batch
from tracelet.core.retry import RetryPolicy
from tracelet.core.sink import BackendSink
from tracelet.core.workers import DeliveryWorkers
from tracelet.media import PendingArtifact, PendingImage
from tracelet.plugins import BackendPlugin
from tracelet.records import (
    Batch,
    CheckpointRequest,
    DeliveryState,
    MetricPoint,
    Params,
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
POINT_BYTES = 160
"""Memory a queued metric point holds (its tuple, two floats, the step, the buffer's slot),
measured: the default 200,000-record buffer holds at most about 32 MB of points."""


def payload_bytes(record: Any) -> int:
    """The bytes of payload ``record`` holds beyond its own small object: an image's
    pixels, a text, a sample, parameters and tags (0 for a metric point)."""
    kind = record.__class__
    if kind is PendingImage:
        return int(record.nbytes)
    if kind is Text:
        return sys.getsizeof(record.text)
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
        self.retry = retry or RetryPolicy()
        self.sinks: dict[str, BackendSink] = {}
        self.workers = DeliveryWorkers(max_workers)
        """The threads delivering to backends (at most ``max_workers``, shared)."""
        self.seq = store.last_seq(run.id)
        self.unjournaled = 0
        self.samples: deque[Sample] = deque(maxlen=capture_samples)
        self.detector: Any = None
        self._window_start = store.last_metric_id()
        self._next_checkpoint_first_step = 0
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._drain_lock = threading.Lock()
        self._drainer: int | None = None
        """The thread draining now (an ``on_anomaly`` callback logging from it must not
        wait for itself)."""
        self._cycled = threading.Condition()
        self._cycles = 0
        self._stopping = False
        self._abandoned = False
        self._in_flight = 0
        """Records the dispatcher is journaling now."""
        self._stop_deadline = float("inf")
        self._thread = threading.Thread(
            target=self._dispatch, name="tracelet-dispatcher", daemon=True
        )

    @property
    def running(self) -> bool:
        """Whether the dispatcher thread is alive."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the dispatcher thread and every backend's sink."""
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

    def put_journaled(self, record: Any) -> None:
        """Queue ``record`` and journal it, with everything queued before it, before
        returning (``async_writes`` off). A failure is reported; the dispatcher retries."""
        self.put(record)
        if self.running and not self._draining_here():
            self._drain_reporting()  # (from inside a drain, that drain takes it)

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

    def _journal_now(self, deadline: float) -> bool:
        """Have everything queued so far journaled (by ``deadline``); True if it was."""
        if self._draining_here():
            self._drain()  # called from inside a drain (a hook, an on_anomaly callback)
            return True
        return self._journal_queued(deadline)

    def _journal_queued(self, deadline: float) -> bool:
        """Wait until a whole dispatcher cycle has begun and ended since this call."""
        with self._cycled:
            target = self._cycles + 2
            while self._cycles < target and self.running:
                self._wake.set()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cycled.wait(min(remaining, 0.05))
        return not self.buffer or not self.running

    def stop(self, status: RunStatus = RunStatus.FINISHED, timeout: float = 30.0) -> dict[str, int]:
        """Journal everything, give backends up to ``timeout`` seconds, and stop.

        Returns, per backend, how many batches it has not accepted (they stay in the journal).
        """
        deadline = time.monotonic() + timeout
        self._stop_deadline = deadline
        self._stopping = True
        self._wake.set()
        if self.running:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self.running:  # still encoding or writing at the deadline: leave it there
            self._abandoned = True
            left = len(self.buffer) + self.unjournaled + self._in_flight
            report_once(
                f"tracelet run {self.run.id}",
                f"{left} record(s) were not journaled before the {timeout:g}s flush timeout "
                "(the journal was still busy: encoding images, or a full or failing disk); "
                "they are lost",
            )
        else:
            self._drain_reporting()
        for sink in self.sinks.values():
            sink.close(status, deadline)
        for sink in self.sinks.values():
            sink.join(max(0.0, deadline - time.monotonic()))
        self.workers.close()
        return self.undelivered()

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
            self._drain_reporting(check_store=True)
            with self._cycled:
                self._cycles += 1
                self._cycled.notify_all()
            if stopping:
                return

    def _draining_here(self) -> bool:
        """Whether the calling thread is the one draining the buffer now (then it must not
        wait for the drain, nor for room only the drain makes)."""
        return self._drainer == threading.get_ident()

    def _drain_reporting(self, check_store: bool = False) -> None:
        """Drain under the lock, reporting (not raising) anything unexpected: the dispatcher,
        and a caller journaling synchronously, must outlive any bug."""
        try:
            with self._drain_lock:
                self._drainer = threading.get_ident()
                try:
                    if check_store:
                        self._check_store()
                    self._drain()
                finally:
                    self._drainer = None
        except Exception as error:
            report_once("tracelet dispatcher", f"unexpected error {error!r}; going on")

    def _drain(self) -> None:
        buffer = self.buffer
        popleft = buffer.popleft
        while buffer and not self._abandoned:
            items = [popleft() for _ in range(min(len(buffer), MAX_BATCH))]
            with self._room:
                self._room.notify_all()
            before = self.seq
            self._in_flight = len(items)
            try:
                self._journal(items)
            except BaseException:
                if self.seq == before:  # nothing of it was written: keep it for the next try
                    buffer.extendleft(reversed(items))
                    with self._room:  # their payload was released when the batch was built
                        self.payload_bytes += sum(map(payload_bytes, items))
                raise
            finally:
                self._in_flight = 0

    def _check_store(self) -> None:
        """Notice a journal deleted or replaced under the run, and start a new one."""
        if self.store.file_identity() == self.store.identity:
            return
        logger.error(
            "tracelet: the local store %s was deleted or replaced while run %s was writing "
            "to it; what it held is gone from there. A new one is created and the run goes on "
            "in it from batch %d",
            self.store.db_path,
            self.run.id,
            self.seq + 1,
        )
        self.store.reopen()
        self.store.create_run(self.run)
        for name in self.sinks:
            self.store.ensure_cursor(self.run.id, name)

    def _journal(self, items: list[Any]) -> None:
        """Journal ``items`` as one batch, or one per checkpoint request they contain (so
        that each checkpoint sees exactly what was logged before it was asked for)."""
        metrics = [r for r in items if r.__class__ is tuple]
        events = [r for r in items if r.__class__ is not tuple] if len(metrics) < len(items) else []
        if not any(e.__class__ is CheckpointRequest for e in events):
            self._journal_batch(metrics, events)
            return
        start = 0
        for end, item in enumerate(items, 1):
            if item.__class__ is CheckpointRequest:
                self._journal(items[start : end - 1])
                self._checkpoint(item)
                start = end
        self._journal(items[start:])

    def _journal_batch(self, metrics: list[MetricPoint], events: list[Any]) -> None:
        if not metrics and not events:
            return
        batch = self._batch(self.seq + 1, metrics, events)
        written = write_batch(self.store, batch, self._give_up)
        if written is None:
            self.unjournaled += len(batch)
            return
        batch = written
        self.seq = batch.seq
        for sink in list(self.sinks.values()):
            sink.offer(batch)
        if self.detector is not None and metrics:
            self._detect(metrics)

    def _checkpoint(self, request: CheckpointRequest) -> None:
        """Write the checkpoint of ``request.step`` from the metrics logged since the last."""
        try:
            latest = self.store.latest_metric_values(self.run.id, self._window_start)
            self._window_start = self.store.last_metric_id()
            self.store.write_checkpoint(
                self.run.id,
                {
                    "step": request.step,
                    "timestamp": request.timestamp,
                    "first_step": self._next_checkpoint_first_step,
                    "metrics": {k: v for k, (v, s) in latest.items() if s == request.step},
                    "gradient_stats": dict(request.gradient_stats),
                    "system_metrics": dict(request.system_metrics),
                    "samples": [json.loads(sample.data) for sample in self.samples],
                },
            )
        except Exception as error:
            report_once("tracelet checkpoints", f"could not write a checkpoint ({error!r})")
            return
        self.samples.clear()
        self._next_checkpoint_first_step = request.step + 1

    def _detect(self, metrics: Sequence[MetricPoint]) -> None:
        """Run the live anomaly detector over a journaled batch and store what it finds."""
        try:
            found = self.detector.observe(metrics)
            if found:
                self.store.add_anomalies(found)
        except Exception as error:
            report_once("tracelet anomaly detection", f"failed ({error!r}); training goes on")

    def _batch(self, seq: int, metrics: Sequence[MetricPoint], events: Iterable[Any]) -> Batch:
        params: dict[str, Any] = {}
        tags: dict[str, str] = {}
        texts, images, artifacts = [], [], []
        files = self.store.files_dir(self.run.id)
        for event in events:
            try:
                if isinstance(event, Params):
                    params.update(event.values)
                elif isinstance(event, Tags):
                    tags.update(event.values)
                elif isinstance(event, Text):
                    texts.append(event)
                elif isinstance(event, PendingImage):
                    if self._give_up():  # past stop's deadline: no more encoding
                        self.unjournaled += 1
                        continue
                    images.append(event.store(files / "images", seq, len(images)))
                elif isinstance(event, PendingArtifact):
                    if self._give_up():
                        self.unjournaled += 1
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
        return Batch(self.run.id, seq, metrics, params, tags, texts, images, artifacts)

    def _give_up(self) -> bool:
        """Whether journaling should stop retrying (only once stop's deadline has passed)."""
        return self._stopping and time.monotonic() > self._stop_deadline
