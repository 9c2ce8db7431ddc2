"""The journal writer process: what it survives, what it leaves behind, and its fallback."""

from __future__ import annotations

import enum
import io
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tracelet
from tracelet.artifacts import TraceletArtifact
from tracelet.core.framing import encode, read_frame
from tracelet.core.orchestrator import JOURNAL_READ_TRIES
from tracelet.core.points import packed, unpacked
from tracelet.records import Text
from tracelet.storage import LocalStore


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


def writer_pid(exp: tracelet.Experiment) -> int:
    pid = exp.orchestrator._link.pid
    assert pid is not None, "the journal writer runs in a process"
    assert pid != os.getpid()
    return pid


@pytest.mark.parametrize("journal_process", [True, False])
def test_both_writers_journal_everything_a_run_logs(read_store, journal_process):
    seen = []
    exp = tracelet.start_logging(
        "both",
        config={
            "journal_process": journal_process,
            "checkpoint_interval": 50,
            "on_anomaly": lambda a: seen.append(a["step"]),
        },
    )
    exp.log_params({"lr": 0.1})
    for step in range(200):
        exp.log_metric("loss", float("nan") if step == 120 else 1.0 / (step + 1), step)
        exp.step()
    exp.log_text("notes", "done", 199)
    tracelet.stop_logging()
    store = read_store()
    points = [(n, s) for n, _, s, _ in store.metrics(exp.id)]
    assert points == [("loss", step) for step in range(200)]
    assert store.params(exp.id) == {"lr": 0.1}
    assert [c["step"] for c in store.checkpoints(exp.id)] == [49, 99, 149, 199]
    assert seen == [120], "on_anomaly called before stop returned"
    assert [a["step"] for a in store.anomalies(exp.id)] == [120]


def test_the_writer_process_ends_with_the_run(read_store):
    exp = tracelet.start_logging("ends")
    pid = writer_pid(exp)
    exp.log_metric("loss", 1.0, 0)
    tracelet.stop_logging()
    wait_gone(pid, timeout=1.0)
    assert len(read_store().metrics(exp.id)) == 1


def test_a_writer_that_dies_mid_run_is_replaced_and_nothing_is_lost(read_store, caplog):
    exp = tracelet.start_logging("writer killed")
    with caplog.at_level(logging.WARNING, "tracelet"):
        for step in range(50_000):
            exp.log_metric("loss", float(step), step)
        os.kill(writer_pid(exp), signal.SIGKILL)
        for step in range(50_000, 100_000):
            exp.log_metric("loss", float(step), step)
        tracelet.stop_logging()
    points = [(v, s) for _, v, s, _ in read_store().metrics(exp.id)]
    assert points == [(float(step), step) for step in range(100_000)], "each point once, in order"
    assert sum("ended unexpectedly" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("finds_it_dead", ["points", "batch"])
def test_what_is_being_sent_when_the_writer_is_found_dead_is_journaled_once(
    read_store, finds_it_dead
):
    exp = tracelet.start_logging("writer found dead")
    exp.log_metric("loss", 0.0, 0)
    assert exp.flush()
    orchestrator = exp.orchestrator
    with orchestrator._drain_lock:  # the dispatcher waits: this thread drains, as it would
        if finds_it_dead == "batch":
            orchestrator._send_points([("loss", 1.0, 1, time.time())], False)
        os.kill(writer_pid(exp), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not orchestrator._link_lost and time.monotonic() < deadline:
            time.sleep(0.01)  # the replies thread sees the pipe close
        assert orchestrator._link_lost, "the writer's death was not seen"
        if finds_it_dead == "points":  # the message that finds it dead: resent, not twice
            orchestrator._send_points([("loss", 1.0, 1, time.time())], False)
        orchestrator._close_batch()
    tracelet.stop_logging()
    store = read_store()
    assert [p[1:3] for p in store.metrics(exp.id)] == [(0.0, 0), (1.0, 1)]
    assert store.last_seq(exp.id) == 2, "no batch journaled twice"


@pytest.mark.parametrize("failed_reads", [1, JOURNAL_READ_TRIES])
def test_a_writer_replaced_while_the_journal_is_hard_to_read_loses_nothing(
    read_store, monkeypatch, caplog, failed_reads
):
    """The batches a dead writer journaled without a word back are read from the journal
    (tried again a moment later); when it cannot be read, every batch not answered is
    journaled again: twice rather than lost."""
    exp = tracelet.start_logging("writer replaced, journal hard to read")
    exp.log_metric("loss", 0.0, 0)
    assert exp.flush()
    orchestrator, pid = exp.orchestrator, writer_pid(exp)
    link = orchestrator._link
    answer = link._on_reply
    monkeypatch.setattr(link, "_on_reply", lambda m: m[0] == "journaled" or answer(m))
    read_seq, failed = orchestrator.store.last_seq, []

    def last_seq_failing(run_id: str) -> int:
        if len(failed) < failed_reads:
            failed.append(run_id)
            raise sqlite3.OperationalError("disk I/O error")
        return read_seq(run_id)

    with orchestrator._drain_lock:  # the dispatcher waits: this thread drains, as it would
        orchestrator._send_points([("loss", 1.0, 1, time.time())], False)
        orchestrator._close_batch()  # journaled; its answer lost
        deadline = time.monotonic() + 10
        while read_seq(exp.id) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(pid, signal.SIGSTOP)  # the next batch is sent and never journaled
        orchestrator._send_points([("loss", 2.0, 2, time.time())], False)
        orchestrator._close_batch()
        os.kill(pid, signal.SIGKILL)
        monkeypatch.setattr(orchestrator.store, "last_seq", last_seq_failing)
    with caplog.at_level(logging.WARNING, "tracelet"):
        exp.log_metric("loss", 3.0, 3)
        tracelet.stop_logging()
    steps = [p[2] for p in read_store().metrics(exp.id)]
    reported = "could not read the journal's newest batch" in caplog.text
    if failed_reads < JOURNAL_READ_TRIES:  # read on the next try: each point once
        assert steps == [0, 1, 2, 3]
        assert not reported
    else:  # the journaled, unanswered batch journaled again: none lost
        assert steps == [0, 1, 1, 2, 3]
        assert reported


def test_a_hung_writer_cannot_hold_stop_past_its_timeout(caplog):
    exp = tracelet.start_logging("writer hung", config={"flush_timeout": 1.0})
    pid = writer_pid(exp)
    os.kill(pid, signal.SIGSTOP)
    try:
        with caplog.at_level(logging.WARNING, "tracelet"):
            for step in range(100_000):  # more than the pipe holds, less than the buffer
                exp.log_metric("loss", float(step), step)
            started = time.monotonic()
            tracelet.stop_logging()
            took = time.monotonic() - started
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert took < 1.0 + 3.0, f"stop took {took:.1f} s with flush_timeout=1"
    assert "were not journaled before the 1s flush timeout" in caplog.text
    wait_gone(pid, timeout=5.0)


TRAINER = textwrap.dedent(
    """
    import os, signal, sys, time
    import tracelet

    exp = tracelet.start_logging("killed", config={"store_path": sys.argv[1]})
    for step in range(300_000):
        exp.log_metric("loss", float(step), step)
    orchestrator = exp.orchestrator
    while orchestrator.buffer or orchestrator._open_chunks or orchestrator._in_flight:
        time.sleep(0.001)  # everything sent to the writer, not necessarily journaled
    print(exp.id, orchestrator._link.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_what_the_writer_received_is_journaled_after_a_sigkill_of_the_trainer(tmp_path: Path):
    store_path = tmp_path / "store"
    trainer = subprocess.run(
        [sys.executable, "-c", TRAINER, str(store_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert trainer.returncode == -signal.SIGKILL, trainer.stderr
    run_id, pid = trainer.stdout.split()
    wait_gone(int(pid))
    store = LocalStore(store_path)
    try:
        points = [(v, s) for _, v, s, _ in store.metrics(run_id)]
        assert points == [(float(step), step) for step in range(300_000)]
        assert store.get_run(run_id).status.value == "crashed"
    finally:
        store.close()


def test_a_reply_larger_than_the_pipe_does_not_end_the_writer(read_store, caplog):
    names = [f"layer_{i:04d}/grad_norm" for i in range(3000)]
    exp = tracelet.start_logging("storm")
    with caplog.at_level(logging.WARNING, "tracelet"):
        for step in range(3):
            exp.log_metrics({n: float("nan") if step == 1 else 1.0 for n in names}, step)
        exp.flush(timeout=60)
        assert exp.orchestrator._link.pid is not None, "still the writer process"
        tracelet.stop_logging()
    assert "ended unexpectedly" not in caplog.text
    assert len(read_store().metrics(exp.id)) == 3 * 3000, "each point once"
    assert len(read_store().anomalies(exp.id)) == 3000, "one reply with 3,000 findings"


class Metric(enum.StrEnum):
    LOSS = "loss"


class Bundle(str, enum.Enum):  # noqa: UP042 (a mixin enum: formatted as "Bundle.MODEL")
    MODEL = "bundle"


def test_a_str_subclass_name_is_stored_as_its_value(read_store):
    exp = tracelet.start_logging("enum names")
    for step in range(3000):  # more than one chunk
        exp.log_metric(Metric.LOSS, float(step), step)
    tracelet.stop_logging()
    points = read_store().metrics(exp.id)
    assert len(points) == 3000
    assert {type(name) for name, *_ in points} == {str}
    assert {name for name, *_ in points} == {"loss"}


def test_a_forked_child_holding_the_pipe_does_not_delay_stop(read_store):
    exp = tracelet.start_logging("forked", config={"flush_timeout": 10.0})
    exp.log_metric("loss", 1.0, 0)
    child = os.fork()
    if child == 0:  # a DataLoader worker, still running when training stops
        time.sleep(15)
        os._exit(0)
    try:
        started = time.monotonic()
        tracelet.stop_logging()
        took = time.monotonic() - started
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    assert took < 3.0, f"stop waited {took:.1f} s for a writer the child kept open"
    assert len(read_store().metrics(exp.id)) == 1


def frames(*messages: object) -> io.BytesIO:
    return io.BytesIO(b"".join(encode(m) for m in messages))


def test_records_of_local_subclasses_reach_the_store_as_plain_values(read_store, caplog, tmp_path):
    """Names, texts and values of subclasses of str, int and float (defined where pickle
    cannot find them) are stored as their plain values: the writer process is sent plain
    types (an unpicklable record would lose its whole batch)."""

    class Key(str):
        pass

    class Count(int):
        pass

    class Rate(float):
        pass

    with caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging(Key("local subclasses"), project=Key("subclassed"))
        assert writer_pid(exp), "the run journals through a writer process"
        exp.log_params({Key("layers"): Count(3), "opt": {Key("lr"): Rate(0.5)}, "name": Key("x")})
        exp.add_tags({Key("team"): Key("ml")})
        exp.log_text(Key("note"), Key("hello"), 0)
        exp.log_histogram(Key("weights"), counts=[1, 2], edges=[0.0, 1.0, 2.0], step=0)
        exp.log_image(Key("picture"), np.zeros((4, 4), dtype=np.uint8), 0)
        (tmp_path / "weights.bin").write_bytes(b"w")
        exp.log_artifact(tmp_path / "weights.bin", artifact_path=Key("model/weights.bin"))
        bundle = TraceletArtifact(Bundle.MODEL).add_file(str(tmp_path / "weights.bin"), Key("w"))
        exp.log_artifact(bundle)
        exp.log_metric("loss", 1.0, 0)
        tracelet.stop_logging()
    store = read_store()
    params = store.params(exp.id)
    assert params == {"layers": 3, "opt/lr": 0.5, "name": "x"}
    assert {k: type(v) for k, v in params.items()} == {"layers": int, "opt/lr": float, "name": str}
    tags = store.tags(exp.id)
    assert tags["team"] == "ml"
    assert {type(k) for k in tags} | {type(v) for v in tags.values()} == {str}
    assert [(type(t.name), type(t.text), t.text) for t in store.texts(exp.id)] == [
        (str, str, "hello")
    ]
    assert [type(h.name) for h in store.histograms(exp.id)] == [str]
    assert [type(i.name) for i in store.images(exp.id)] == [str]
    assert [(type(a.artifact_path), a.artifact_path) for a in store.artifacts(exp.id)] == [
        (str, "model/weights.bin"),
        (str, "bundle/w"),
        (str, "bundle/tracelet-artifact.json"),  # (the bundle's manifest)
    ]
    run = store.get_run(exp.id)
    assert (run.name, run.project) == ("local subclasses", "subclassed")
    assert "could not" not in caplog.text
    assert "unexpected" not in caplog.text


def test_points_are_marshalled_and_come_back_exactly():
    points = ("points", [("loss", 0.1, 3, 1.5), ("acc", float("inf"), 2**63 - 1, 2.0)])
    frame = encode(points)
    assert frame[4] == 2, "plain data takes the fast codec (marshal)"
    assert encode(("points", packed(points[1]))) == frame, "a chunk packed before is sent so"
    back = read_frame(frames(points))
    assert back == points
    assert [tuple(map(type, p)) for p in back[1]] == [(str, float, int, float)] * 2


def test_a_chunk_naming_a_metric_with_a_str_enum_is_marshalled_with_plain_names():
    record = [{Metric.LOSS: 0.5, "acc": 0.9, "lr": 0.1, "wd": 0.0}, 4, 2.0]
    chunk = ("points", ((Metric.LOSS, 0.1, 3, 1.5), record))
    assert encode(chunk)[4] == 2, "marshal, once the names are made plain"
    back = read_frame(frames(chunk))
    assert back == ("points", (("loss", 0.1, 3, 1.5), [{"loss": 0.5, **record[0]}, 4, 2.0]))
    assert type(back[1][0][0]) is str
    assert {type(name) for name in back[1][1][0]} == {str}
    assert type(next(iter(record[0]))) is Metric, "the chunk itself is left as it was"
    assert unpacked(packed(chunk[1])) == back[1]


def test_every_other_message_is_pickled_and_keeps_its_types():
    text = Text("notes", "hello", 1, 2.0)
    params = {"lr": np.float64(0.1), "layers": np.int64(3), "kind": Metric.LOSS}
    message = ("batch", 1, params, {}, [text], (), (), ())
    assert encode(message)[4] == 0, "pickle: marshal would make NumPy scalars bytes"
    back = read_frame(frames(message))
    assert back == message
    assert [type(v) for v in back[2].values()] == [np.float64, np.int64, Metric]
    assert type(back[4][0]) is Text


def test_numpy_parameters_and_points_reach_the_store_through_the_writer_process(read_store):
    exp = tracelet.start_logging("numpy params")
    exp.log_params({"lr": np.float64(0.1), "layers": np.int64(3)})
    exp.log_metric(np.str_("loss"), np.float32(0.5), np.int64(2))
    tracelet.stop_logging()
    store = read_store()
    assert store.params(exp.id) == {"lr": 0.1, "layers": 3}
    assert [p[:3] for p in store.metrics(exp.id)] == [("loss", 0.5, 2)]


def test_a_frame_cut_short_ends_the_stream():
    whole = encode(("points", [("loss", 1.0, 0, 0.0)]))
    for cut in (2, len(whole) - 1):
        assert read_frame(io.BytesIO(whole[:cut])) is None


def test_a_frame_that_cannot_be_decoded_leaves_the_stream_in_step():
    good = encode(("end",))
    bad = good[:4] + bytes([2]) + b"\xff" * (len(good) - 5)  # marshal cannot read this
    stream = io.BytesIO(bad + good)
    with pytest.raises((ValueError, EOFError)):
        read_frame(stream)
    assert read_frame(stream) == ("end",)
