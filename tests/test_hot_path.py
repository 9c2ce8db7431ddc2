"""The hot path under load, with the settings a user gets: nothing lost, memory bounded.
(Timings live in benchmarks/kernel.py and benchmarks/training_loop.py, not here.)"""

from __future__ import annotations

import contextlib
import enum
import functools
import gc
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator, Mapping

import pytest
from fakes import recording_backend

import tracelet
from tracelet.core.orchestrator import CHUNK, POINT_BYTES
from tracelet.core.points import ChunkedPoints, packed
from tracelet.media import PendingArtifact, PendingImage
from tracelet.records import (
    CheckpointRequest,
    Histogram,
    Params,
    PendingMetric,
    Sample,
    Tags,
    Text,
)


@pytest.mark.collectors
def test_a_million_points_with_default_settings_are_all_read_back(read_store):
    exp = tracelet.start_logging("million")
    assert exp.settings.buffer_size == 200_000, "the default buffer"
    assert exp.settings.detect_anomalies, "live detection on"
    log = exp.log_metric
    for step in range(1_000_000):
        log("loss", 1.0 / (step + 1), step)
    tracelet.stop_logging()
    points = read_store().metrics(exp.id, "loss")
    assert len(points) == 1_000_000
    assert [p[2] for p in points] == list(range(1_000_000))
    assert all(value == 1.0 / (step + 1) for _, value, step, _ in points)


def is_points(found: list[object] | tuple[object, ...]) -> bool:
    """Whether ``found`` holds metric points (its last item is a 4-tuple holding a name).
    Read through ``gc.get_referents``: a tuple being built has empty slots, which indexing
    would crash on."""
    first = gc.get_referents(found)[:1]
    if not first or first[0].__class__ is not tuple or len(first[0]) != 4:
        return False
    return str in {item.__class__ for item in gc.get_referents(first[0])}


def largest_young_run_of_points() -> Iterator[list[int]]:
    """Track the most metric points any container the garbage collector met in a young
    generation held (the collector's pause grows with it, in whichever thread collects)."""
    largest = [0]

    def look(phase: str, info: dict[str, int]) -> None:
        if phase != "start" or info["generation"] == 2:
            return
        for found in gc.get_objects(info["generation"]):
            if found.__class__ in (list, tuple) and len(found) > largest[0] and is_points(found):
                largest[0] = len(found)

    gc.callbacks.append(look)
    try:
        yield largest
    finally:
        gc.callbacks.remove(look)


@pytest.mark.parametrize("journal_process", [True, False], ids=["writer process", "thread"])
def test_the_garbage_collector_never_meets_more_points_at_once_than_a_chunk(
    read_store, journal_process
):
    exp = tracelet.start_logging("gc", config={"journal_process": journal_process})
    with contextlib.contextmanager(largest_young_run_of_points)() as largest:
        log_points(exp, 150_000)  # batches of up to 50,000 points
        log_steps(exp, 150_000, size=20)
        tracelet.stop_logging()
    assert len(read_store().metrics(exp.id)) >= 300_000
    # (a chunk's last step record may bring the points of empty slots in the chunk before)
    assert 0 < largest[0] < 2 * CHUNK, f"a young container held {largest[0]:,} points"


@pytest.mark.parametrize("held", [tuple, packed], ids=["as taken", "packed"])
def test_chunked_points_read_as_one_sequence(held):
    record = [{"a": 5.0, "b": 6.0, "c": 7.0}, 2, 3.0]  # a step record, sent as it is
    chunks = [(("a", 1.0, 0, 1.0), ("b", 2.0, 0, 1.0)), (), (("a", 3.0, 1, 2.0), record)]
    points = ChunkedPoints(map(held, chunks))
    flat = [*chunks[0], ("a", 3.0, 1, 2.0), ("a", 5.0, 2, 3.0), ("b", 6.0, 2, 3.0)]
    flat.append(("c", 7.0, 2, 3.0))
    assert len(points) == 6
    assert list(points) == flat
    assert points == flat
    assert flat == points
    assert points.chunks == (chunks[0], chunks[2]), "empty chunks left out, records kept"
    assert [points[i] for i in range(-6, 6)] == flat + flat
    assert points[1:] == flat[1:]
    assert points[::-1] == flat[::-1]
    assert list(reversed(points)) == flat[::-1]
    assert points.index(("b", 6.0, 2, 3.0)) == 4
    assert points.index(("a", 1.0, 0, 1.0), -6, 1) == 0
    with pytest.raises(ValueError, match="not among the points"):
        points.index(("b", 6.0, 2, 3.0), 0, 4)
    with pytest.raises(IndexError, match="point 6 of 6"):
        points[6]
    assert ChunkedPoints(map(held, chunks), sizes=[2, 0, 4]) == flat, "sizes given by caller"
    assert not ChunkedPoints()
    assert ChunkedPoints() == []
    assert points != flat[:2]
    assert points != "abc"
    assert repr(points) == "ChunkedPoints(6 points in 2 chunks)"
    assert list(points.fields()) == [field for point in flat for field in point]
    mixed = (record, record, ("a", 1.0, 0, 1.0), record, ("b", 2.0, 0, 1.0), ("c", 3.0, 1, 2.0))
    for chunk in (mixed, (record,) * 3, mixed[2:]):
        fields = [field for point in ChunkedPoints([held(chunk)]) for field in point]
        assert list(ChunkedPoints([held(chunk)]).fields()) == fields


def held_bytes(points: ChunkedPoints) -> int:
    """The memory ``points`` holds: its size and that of every object it reaches through its
    containers (not its class)."""
    seen, todo, total = set(), [points], 0
    while todo:
        item = todo.pop()
        if id(item) not in seen:
            seen.add(id(item))
            total += sys.getsizeof(item)
            if item.__class__ in (ChunkedPoints, tuple, list, dict):
                todo.extend(r for r in gc.get_referents(item) if not isinstance(r, type))
    return total


def test_a_batch_waiting_for_a_backend_holds_its_points_packed(read_store):
    """With the writer in a process of its own (the default), a batch holds its points as
    they were encoded for the pipe: a fifth of the memory, and freeing it frees no point."""
    with recording_backend() as backends:
        config = {"journal_process": True}
        exp = tracelet.start_logging("held", backend=["local", "recording"], config=config)
        assert exp.orchestrator._link.pid is not None, "a writer process journals the points"
        log_points(exp, 20_000)
        log_steps(exp, 20_000, size=20)
        tracelet.stop_logging()
    batches = backends[0].batches.values()
    assert sum(len(batch.metrics) for batch in batches) == 40_000
    per_point = sum(held_bytes(batch.metrics) for batch in batches) / 40_000
    assert per_point < 40, f"{per_point:.0f} bytes a point"  # (unpacked, this mix: about 105)
    stored = read_store().metrics(exp.id)
    assert [point for batch in batches for point in batch.metrics] == stored


def test_nothing_queued_but_an_empty_slot_is_false():
    """The dispatcher drops a step record's empty slots (``None``) by their truth value."""
    queued = (Params, Tags, Text, Histogram, Sample, CheckpointRequest, PendingMetric)
    for kind in (*queued, PendingImage, PendingArtifact):
        assert not hasattr(kind, "__len__"), kind
        assert not hasattr(kind, "__bool__"), kind


def stalled(exp: tracelet.Experiment) -> threading.Lock:
    """The dispatcher's drain lock: while held, nothing leaves the buffer."""
    return exp.orchestrator._drain_lock


STEP_NAMES = ["loss"] + [f"metric_{i:02d}" for i in range(1, 20)]


def log_points(exp: tracelet.Experiment, count: int) -> None:
    """``count`` points of "loss", one call each."""
    for step in range(count):
        exp.log_metric("loss", float(step), step)


def log_steps(exp: tracelet.Experiment, count: int, size: int) -> None:
    """``count`` points as steps of ``size`` metrics logged together."""
    metrics: dict[str, float] = {}
    for step in range(count // size):
        for i, name in enumerate(STEP_NAMES[:size]):
            metrics[name] = float(step * i)
        exp.log_metrics(metrics, step)  # the same dict each step, as loops often do


@pytest.mark.parametrize(
    "log",
    [log_points, *(functools.partial(log_steps, size=size) for size in (2, 4, 20))],
    ids=["points", "steps of 2", "steps of 4", "steps of 20"],
)
def test_queued_points_stay_under_the_byte_cap_while_the_journal_is_stuck(read_store, log):
    capacity = 20_000
    exp = tracelet.start_logging("stuck", config={"buffer_size": capacity})
    done = threading.Event()

    def train() -> None:
        log(exp, 3 * capacity)
        done.set()

    tracemalloc.start()
    try:
        with stalled(exp):
            before = tracemalloc.get_traced_memory()[0]
            trainer = threading.Thread(target=train)
            trainer.start()
            deadline = time.monotonic() + 10
            while len(exp.orchestrator.buffer) < capacity and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)
            held = tracemalloc.get_traced_memory()[0] - before
            assert not done.is_set(), "the caller waits (back-pressure)"
            assert len(exp.orchestrator.buffer) == capacity
        trainer.join(30)
    finally:
        tracemalloc.stop()
    tracelet.stop_logging()
    assert held <= capacity * POINT_BYTES * 1.1, f"{held / capacity:.0f} bytes a point"
    print(f"\n{held / capacity:.0f} bytes per queued point (documented: {POINT_BYTES})")
    assert len(read_store().metrics(exp.id)) == 3 * capacity, "nothing lost"


def test_queued_texts_stay_under_their_byte_cap_while_the_journal_is_stuck(read_store):
    text = "x" * 2**20  # 1 MiB each
    exp = tracelet.start_logging("stuck texts", config={"media_buffer_mb": 4})
    done = threading.Event()

    def write() -> None:
        for step in range(10):
            exp.log_text("notes", text + str(step), step)
        done.set()

    with stalled(exp):
        writer = threading.Thread(target=write)
        writer.start()
        time.sleep(0.5)
        assert not done.is_set(), "the caller waits once 4 MiB of text are queued"
        assert exp.orchestrator.payload_bytes <= 4 * 2**20
        assert len(exp.orchestrator.buffer) == 3
    writer.join(30)
    tracelet.stop_logging()
    assert exp.orchestrator.payload_bytes == 0
    assert len(read_store().texts(exp.id)) == 10


class Metrics(Mapping[str, float]):
    """A mapping that is not a dict (no ``copy``)."""

    def __init__(self, values: dict[str, float]) -> None:
        self._values = values

    def __getitem__(self, name: str) -> float:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_a_step_logged_together_keeps_its_values_order_and_moment(read_store):
    exp = tracelet.start_logging("steps")
    names = ("loss", "acc", "lr", "grad_norm")
    metrics = dict.fromkeys(names, 0.5)
    exp.log_metrics(metrics, step=0)  # names new: checked, point by point
    exp.flush()
    with stalled(exp):  # nothing leaves the buffer: what it holds must be a snapshot
        for step in range(1, 4):
            metrics.update({name: step + i / 10 for i, name in enumerate(names)})
            exp.log_metrics(metrics, step)  # one record a step
            exp.log_metric("epoch", 1.0, step)  # between steps, in order
        metrics["loss"] = 99.0  # changed after the last call: not what was logged
        exp.log_metrics(Metrics(dict.fromkeys(names, 4.0)), step=4)  # not a dict
        exp.log_metrics({}, step=9)  # nothing to log
        records = [r for r in exp.orchestrator.buffer if r is not None]
        assert [type(r) for r in records] == [list, tuple, list, tuple, list, tuple, list]
        assert len(exp.orchestrator.buffer) == 4 * 4 + 3, "one slot a point"
    tracelet.stop_logging()
    points = read_store().metrics(exp.id)
    expected = [(name, 0.5, 0) for name in names]
    for step in range(1, 4):
        expected += [(name, step + i / 10, step) for i, name in enumerate(names)]
        expected.append(("epoch", 1.0, step))
    expected += [(name, 4.0, 4) for name in names]
    assert [(n, v, s) for n, v, s, _ in points] == expected
    moments = {s: {t for n, _, s2, t in points if s2 == s and n != "epoch"} for s in range(5)}
    assert all(len(m) == 1 for m in moments.values()), "one timestamp a step"


@pytest.mark.parametrize("journal_process", [True, False], ids=["process", "thread"])
def test_a_str_enum_name_equal_to_a_checked_one_is_stored_as_its_value(read_store, journal_process):
    class Metric(enum.StrEnum):
        LOSS = "loss"

    class Named(str, enum.Enum):  # noqa: UP042 (the older spelling, still common)
        LOSS = "loss"

    others = {"acc": 0.5, "lr": 0.1, "grad_norm": 2.0}
    exp = tracelet.start_logging("str enums", config={"journal_process": journal_process})
    exp.log_metrics({"loss": 1.0, **others}, step=0)  # names checked: the fast path now
    exp.log_metrics({Metric.LOSS: 2.0, **others}, step=1)  # one record a step
    exp.log_metrics({Named.LOSS: 3.0}, step=2)  # a small step: point tuples
    exp.log_metric(Metric.LOSS, 4.0, 3)
    with stalled(exp):  # with the buffer full, the step is queued point by point
        exp.orchestrator.capacity = exp._capacity = len(exp.orchestrator.buffer)
        late = threading.Thread(target=exp.log_metrics, args=({Named.LOSS: 5.0, **others}, 4))
        late.start()
        time.sleep(0.2)
        assert late.is_alive(), "it waits for room"
        exp.orchestrator.capacity = exp._capacity = 1_000
    late.join(10)
    tracelet.stop_logging()
    points = [(n, v, s) for n, v, s, _ in read_store().metrics(exp.id) if n == "loss"]
    assert points == [("loss", float(i + 1), i) for i in range(5)]
    assert {type(n) for n, *_ in read_store().metrics(exp.id)} == {str}


def test_log_metrics_checks_every_value_before_queueing_any(read_store):
    exp = tracelet.start_logging("all or none")
    exp.log_metrics({"loss": 1.0, "acc": 0.5}, step=0)  # names now known: the fast path
    with pytest.raises(TypeError, match="'acc'"):
        exp.log_metrics({"loss": 2.0, "acc": "high"}, step=1)
    with pytest.raises(ValueError, match="name"):
        exp.log_metrics({"loss": 3.0, "": 1.0}, step=2)
    exp.log_metrics({"loss": 4.0, "acc": 1}, step=3)  # an int: converted, not refused
    tracelet.stop_logging()
    points = [(n, v, s) for n, v, s, _ in read_store().metrics(exp.id)]
    assert points == [("loss", 1.0, 0), ("acc", 0.5, 0), ("loss", 4.0, 3), ("acc", 1.0, 3)]


def test_a_callback_logging_on_the_dispatcher_never_waits_for_itself(read_store):
    def on_anomaly(anomaly: dict) -> None:  # runs on the dispatcher, which frees the room
        exp.log_text("anomaly", "x" * 600_000, anomaly["step"])

    exp = tracelet.start_logging(
        "callback", config={"media_buffer_mb": 1, "on_anomaly": on_anomaly}
    )
    for step in range(50):
        exp.log_text("notes", "y" * 600_000, step)  # keeps the byte budget full
        exp.log_metric("loss", float("nan") if step % 10 == 5 else 1.0, step)
    done = threading.Event()
    threading.Thread(target=lambda: (tracelet.stop_logging(), done.set()), daemon=True).start()
    assert done.wait(30), "the dispatcher waited for room only it could make"
    assert len(read_store().texts(exp.id)) == 50 + 5


def test_under_sustained_logging_a_batch_spans_several_flush_intervals(read_store):
    """Each batch costs a commit, a reply and every backend a call, so while logging goes
    on one spans BATCH_SPAN intervals; each cycle still sends its points to the writer, and
    a flush journals them at once."""
    from tracelet.core.orchestrator import BATCH_SPAN

    interval = 0.05
    exp = tracelet.start_logging("span", config={"flush_interval": interval})
    began = time.monotonic()
    step = 0
    while time.monotonic() - began < 1.5:
        exp.log_metrics({"loss": 1.0 / (step + 1), "acc": 0.5}, step)
        step += 1
        time.sleep(0.002)
    exp.log_metric("last", 1.0, step)
    exp.flush()
    elapsed = time.monotonic() - began
    store = read_store()
    assert store.metrics(exp.id)[-1][0] == "last"  # the flush ended the open batch
    batches = store.last_seq(exp.id)
    # a batch ends at least BATCH_SPAN - 0.5 intervals after it began, or at the flush
    assert batches <= elapsed / ((BATCH_SPAN - 0.5) * interval) + 2, batches
    tracelet.stop_logging()
    assert len(read_store().metrics(exp.id)) == 2 * step + 1
