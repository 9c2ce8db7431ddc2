"""The journal's writer: it journals a run's batches, runs live anomaly detection on them and
writes checkpoints, strictly in the order the dispatcher sends them.

By default it runs in a process of its own (``journal_process``, see
:mod:`tracelet.core.journal_link`): the training process only queues records and sends them
down a pipe, so journaling's Python work never holds the GIL the training loop needs, and
what the writer has received is journaled even when the training process is killed. The
same :class:`JournalWriter` also runs inside the training process, called directly.

Messages are tuples whose first item names them. To the writer:

- ``("points", chunk)``: metric points of the batch being built, and step records (kept
  as they are: their points' fields are written straight from them, and only the points
  live detection needs are made, :class:`WatchedPoints`); live detection watches them as
  they arrive, before their batch is journaled;
- ``("batch", token, params, tags, texts, images, artifacts, histograms)``: the batch
  ends; journal it
  as the run's next batch (``token`` counts the batches sent, from 1);
- ``("checkpoint", request, samples)``: write a checkpoint of what is journaled so far;
- ``("cursors", names)``: the run's backends (a store created anew gets their cursors);
- ``("detect", config, limit)``: run live detection (primed with the run's last points);
- ``("deadline", when)``: stop retrying a failing write at ``time.monotonic()`` ``when``;
- ``("end",)``: everything was sent; finish and exit (a process).

From the writer: ``("journaled", token, seq)`` (the batch is in the journal as batch
``seq``), ``("lost", token, count)``, ``("found", anomalies, muted)``, ``("replaced",)``
(the store file was created anew), ``("log", level, text)`` and ``("ready", pid)`` (only
from a process). The writer numbers the batches, so a lost batch leaves no gap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, BinaryIO

from tracelet.analysis.detector import RuleStream
from tracelet.core.framing import read_frame, write_frame
from tracelet.core.journaling import write_batch
from tracelet.core.points import (
    STEP_RECORD,
    Chunk,
    ChunkedPoints,
    chunk_size,
    plain_name,
    plain_names,
    step_points,
    unpacked,
)
from tracelet.records import Batch, CheckpointRequest, MetricPoint, RunInfo
from tracelet.reporting import logger, report_once
from tracelet.storage import LocalStore

Reply = Callable[[tuple[Any, ...]], None]

ORPHAN_DEADLINE = 30.0
"""Seconds an orphaned writer (its training process died) keeps retrying a failing write."""
MESSAGES_HELD = 16
"""Messages the writer process reads ahead; then the pipe fills and the dispatcher waits."""
PRIMING_BATCHES = 64
"""Batches of a resumed run's history that prime live detection."""
NAME_SETS_KEPT = 1024
"""Sets of names logged together whose watched names :class:`WatchedPoints` remembers."""


class JournalWriter:
    """Journals one run's batches from the messages the dispatcher sends, in order."""

    def __init__(
        self, store: LocalStore, run: RunInfo, reply: Reply, give_up: Callable[[], bool]
    ) -> None:
        self.store = store
        self.run = run
        self.reply = reply
        self.give_up = give_up
        self.chunks: list[Chunk] = []
        """The points of the batch being built, as the chunks they came in (step records
        as they are: a step's points are made into tuples only for what watches them)."""
        self.sizes: list[int] = []
        """The points of each chunk."""
        self.cursors: tuple[str, ...] = ()
        self.stream: RuleStream | None = None
        self.watched: WatchedPoints | None = None
        self._last_seq: int | None = None
        self._window_start: int | None = None
        """The first metric row of the next checkpoint (read before the first write)."""
        self._first_step = 0

    def handle(self, message: tuple[Any, ...]) -> None:
        """Act on one message (see the module's docstring)."""
        kind = message[0]
        if kind == "points":
            chunk = unpacked(message[1])  # (packed only if sent for a pipe, then resent here)
            self.chunks.append(chunk)
            self.sizes.append(chunk_size(chunk))
            if self.stream is not None:
                self._detect(chunk)  # as it arrives: its batch may be journaled seconds later
        elif kind == "batch":
            self._journal(*message[1:])
        elif kind == "checkpoint":
            self._checkpoint(message[1], message[2])
        elif kind == "cursors":
            self.cursors = tuple(message[1])
        elif kind == "detect":
            self._start_detection(message[1], message[2])
        else:
            raise ValueError(f"unknown journal message {kind!r}")

    def finish(self) -> None:
        """Journal points whose batch never ended (the training process died mid-batch)."""
        if self.chunks:
            self._journal(0, {}, {}, (), (), (), ())

    def _journal(
        self,
        token: int,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        texts: Sequence[Any],
        images: Sequence[Any],
        artifacts: Sequence[Any],
        histograms: Sequence[Any],
    ) -> None:
        self._check_store()
        metrics = ChunkedPoints(self.chunks, self.sizes)
        self.chunks, self.sizes = [], []
        if self._last_seq is None:
            self._last_seq = self.store.last_seq(self.run.id)
            self._window_start = self.store.last_metric_id()
        seq = self._last_seq + 1
        batch = Batch(self.run.id, seq, metrics, params, tags, texts, images, artifacts, histograms)
        written = write_batch(self.store, batch, self.give_up)
        if written is None:
            self.reply(("lost", token, len(batch)))
            return
        self._last_seq = written.seq
        self.reply(("journaled", token, written.seq))

    def _check_store(self) -> None:
        """Notice a journal deleted or replaced under the run, and start a new one (on a
        failure, a full disk, the file in use still takes what is written)."""
        try:
            self._replace_lost_store()
        except Exception as error:
            report_once("tracelet journal", f"could not start a new local store ({error!r})")

    def _replace_lost_store(self) -> None:
        """Start a new journal if the run's was deleted or replaced (reported once)."""
        store = self.store
        if store.file_identity() == store.identity:
            return
        logger.error(
            "tracelet: the local store %s was deleted or replaced while run %s was writing "
            "to it; what it held is gone from there. A new one is created and the run goes on "
            "in it from batch %d",
            store.db_path,
            self.run.id,
            store.last_seq(self.run.id) + 1,
        )
        store.reopen()
        self._last_seq = None  # numbered on from what the new file holds
        store.create_run(self.run)
        for name in self.cursors:
            store.ensure_cursor(self.run.id, name)
        self.reply(("replaced",))

    def _start_detection(self, config: Any, limit: int | None) -> None:
        self.stream = RuleStream(self.run.id, config, limit=limit)
        self.watched = WatchedPoints(self.stream)
        last = self.store.last_seq(self.run.id)
        recent = self.store.read_batches(
            self.run.id, max(0, last - PRIMING_BATCHES), last, limit=PRIMING_BATCHES
        )
        self.stream.feed(point for batch in recent for point in batch.metrics)

    def _detect(self, chunk: Chunk) -> None:
        """Watch a chunk's points; store and announce what is found, before the batch it
        belongs to is journaled (so a flush, which waits for that, sees it). A chunk that
        detection fails on is skipped (reported once)."""
        assert self.stream is not None
        assert self.watched is not None
        found: list[Any] = []
        try:
            found = self.stream.feed(self.watched(chunk))
        except Exception as error:
            report_once("tracelet anomaly detection", f"failed ({error!r}); training goes on")
        finally:
            muted = self.stream.muted  # (what it muted before failing, too)
            self.stream.muted = []  # taken: a chunk failing before its feed adds none
        if found:
            self._check_store()  # (its batch, journaled later, checks too late for these)
            try:
                self.store.add_anomalies(found)
            except Exception as error:  # announced all the same
                report_once("tracelet anomaly detection", f"could not store anomalies ({error!r})")
        if found or muted:
            self.reply(("found", found, muted))

    def _checkpoint(self, request: CheckpointRequest, samples: Sequence[Any]) -> None:
        """Write the checkpoint of ``request.step`` from the metrics logged since the last."""
        store = self.store
        try:
            if self._window_start is None:  # nothing journaled yet in this session
                self._window_start = store.last_metric_id()
            latest = store.latest_metric_values(self.run.id, self._window_start)
            self._window_start = store.last_metric_id()
            store.write_checkpoint(
                self.run.id,
                {
                    "step": request.step,
                    "timestamp": request.timestamp,
                    "first_step": self._first_step,
                    "metrics": {k: v for k, (v, s) in latest.items() if s == request.step},
                    "gradient_stats": dict(request.gradient_stats),
                    "system_metrics": dict(request.system_metrics),
                    "samples": [json.loads(sample.data) for sample in samples],
                },
            )
        except Exception as error:
            report_once("tracelet checkpoints", f"could not write a checkpoint ({error!r})")
            return
        self._first_step = request.step + 1


class WatchedPoints:
    """The points of a chunk that live detection needs: every non-finite value, the values
    of the metrics a rule watches (:meth:`RuleStream.watches`), and those of a metric that
    was non-finite before them (they end its run of non-finite values). The other metrics
    of a step record, most of a step's as a rule, are never made into points."""

    def __init__(self, stream: RuleStream) -> None:
        self.stream = stream
        self._by_names: dict[tuple[Any, ...], tuple[tuple[Any, str], ...]] = {}
        """The watched metrics among each set of names a step was logged with, as pairs (the
        name as the step's values hold it, the plain ``str`` name), while no check is muted
        (a muted check may leave a metric unwatched)."""
        self._checks_muted = stream.checks_muted

    def __call__(self, chunk: Chunk) -> Sequence[MetricPoint]:
        """``chunk``'s points that can change what the stream finds, in logged order."""
        kinds = set(map(type, chunk))
        if STEP_RECORD not in kinds:
            return chunk  # point tuples, as they are
        stream = self.stream
        if self._checks_muted != stream.checks_muted or len(self._by_names) >= NAME_SETS_KEPT:
            self._by_names.clear()
            self._checks_muted = stream.checks_muted
        if len(kinds) == 1 and not stream.in_nonfinite_run and _all_finite(chunk):
            return self._finite_steps(chunk)
        points: list[MetricPoint] = []
        nonfinite: set[str] = set()  # names with a non-finite value earlier in the chunk
        for item in chunk:
            if item.__class__ is not STEP_RECORD:
                points.append(item)
                if not math.isfinite(item[1]):
                    nonfinite.add(item[0])
                continue
            values, step, timestamp = item
            values = plain_names(values)
            if (
                not math.isfinite(sum(values.values()))
                or stream.any_nonfinite(values)
                or not nonfinite.isdisjoint(values)
            ):
                for point in step_points(values, step, timestamp):
                    name, value = point[0], point[1]
                    if not math.isfinite(value):
                        nonfinite.add(name)
                    elif name not in nonfinite and not stream.watches(name):
                        continue
                    points.append(point)
                continue
            watched = self._watched_keys(values)  # (a plain name is its own key)
            points += [(name, values[key], step, timestamp) for key, name in watched]
        return points

    def _finite_steps(self, records: Chunk) -> list[MetricPoint]:
        """The points of watched metrics of step records whose values are all finite, while
        every metric's last value was finite (the usual chunk: one pass, no tests a point)."""
        points: list[MetricPoint] = []
        by_names = self._by_names
        for values, step, timestamp in records:
            watched = by_names.get(tuple(values))
            if watched is None:
                watched = self._watched_keys(values)
            for key, name in watched:
                points.append((name, values[key], step, timestamp))
        return points

    def _watched_keys(self, values: Mapping[Any, float]) -> tuple[tuple[Any, str], ...]:
        """The watched metrics among ``values``, as (the name as ``values`` holds it, the
        plain ``str`` name): decided once for each set of names."""
        names = tuple(values)
        watched = self._by_names.get(names)
        if watched is None:
            plain = ((key, plain_name(key)) for key in names)
            watched = tuple((key, name) for key, name in plain if self.stream.watches(name))
            self._by_names[names] = watched
        return watched


def _all_finite(records: Chunk) -> bool:
    """Whether every value of step records ``records`` is finite (a sum of finite values
    that overflows says no: the caller then tests them one by one)."""
    return math.isfinite(sum(map(sum, map(dict.values, map(itemgetter(0), records)))))


# -- the writer process ----------------------------------------------------------------------


class _Replies:
    """The writer process's side of the reply pipe (any thread may send; a dead reader is
    ignored: what arrived is journaled all the same)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.broken = False

    def __call__(self, message: tuple[Any, ...]) -> None:
        with self._lock:
            if self.broken:
                return
            try:
                write_frame(self._stream, message)
            except OSError:
                self.broken = True


class _ShipLogs(logging.Handler):
    """Sends the writer's log records to the training process, which logs them there."""

    def __init__(self, replies: _Replies) -> None:
        super().__init__(logging.DEBUG)
        self._replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        self._replies(("log", record.levelno, record.getMessage()))


def main() -> None:
    """Run a writer process: read messages from stdin until ``("end",)`` (or until the
    training process is gone), journal them, reply on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the training process decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = _Replies(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)  # a stray print goes to stderr, never into the replies
    logger.handlers[:] = [_ShipLogs(replies)]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    stdin = sys.stdin.buffer
    _, store_path, run, parent = read_frame(stdin)
    state = _State(parent)
    store = LocalStore(store_path, recover=False)
    writer = JournalWriter(store, run, replies, state.give_up)
    replies(("ready", os.getpid()))
    messages: queue.Queue[tuple[Any, ...] | None] = queue.Queue(MESSAGES_HELD)
    threading.Thread(target=_read, args=(stdin, messages, state), daemon=True).start()
    while (message := state.next(messages)) is not None:
        writer.handle(message)
    if not state.ended:  # the training process is gone: keep what it sent
        writer.finish()
    store.close()


class _State:
    """What the writer process knows of the training process: its deadline, and whether it
    said everything was sent."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.deadline = float("inf")
        self.ended = False

    def give_up(self) -> bool:
        return time.monotonic() > self.deadline

    def orphaned(self) -> None:
        """The training process died without a word: bound the retries of what is left."""
        if self.deadline == float("inf"):
            self.deadline = time.monotonic() + ORPHAN_DEADLINE

    def next(self, messages: queue.Queue[tuple[Any, ...] | None]) -> tuple[Any, ...] | None:
        """The next message to act on; None when there are no more."""
        while True:
            try:
                return messages.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != self.parent:  # the pipe held open by a forked child
                    self.orphaned()
                    return None


def _read(stdin: BinaryIO, messages: queue.Queue[Any], state: _State) -> None:
    """Read messages into ``messages`` (None at the end); a deadline takes effect at once,
    even while a write is being retried."""
    try:
        while True:
            try:
                message = read_frame(stdin)
            except Exception as error:  # one that cannot be decoded: the rest can
                logger.error("tracelet: a message to the journal writer was lost (%r)", error)
                continue
            if message is None:
                state.orphaned()
                break
            if message[0] == "deadline":
                state.deadline = message[1]
            elif message[0] == "end":
                state.ended = True
                break
            else:
                messages.put(message)
    finally:
        messages.put(None)


if __name__ == "__main__":
    main()
