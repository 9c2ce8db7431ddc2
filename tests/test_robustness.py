"""Regressions from the kernel review: inputs that cannot be stored, forks, duplicate
writers, idle catch-up, permanent rejections, backoff during stop, secrets."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import threading
import time
from unittest.mock import Mock

import pytest
from fakes import RecordingBackend, built, recording_backend

import tracelet
from tracelet import ConfigurationError, TraceletSettings
from tracelet.core.session import RunSession
from tracelet.exceptions import RejectedBatchError, StoreError
from tracelet.records import Batch


def start(**config):
    return tracelet.start_logging("robust", config={"flush_interval": 0.01, **config})


@pytest.mark.parametrize("step", [2**63, 2**64, 1e19, -1])
def test_steps_outside_the_storable_range_raise_at_the_call(step):
    exp = start()
    with pytest.raises(ValueError, match="between 0 and 2"):
        exp.log_metric("m", 1.0, step)
    with pytest.raises(ValueError, match="between 0 and 2"):
        exp.set_iteration(step) if step != -1 else exp.set_iteration(-1)


def test_steps_up_to_the_largest_storable_one_are_kept(read_store):
    """Steps from 2**30 up are checked off the inline test (which CPython specialises
    only for one-digit ints): they are kept all the same."""
    exp = start()
    steps = [2**30 - 1, 2**30, 2**40, 2**63 - 1]
    for step in steps:
        exp.log_metric("one", 1.0, step)
        exp.log_metrics({"both": 2.0}, step=step)
    run_id = exp.id
    tracelet.stop_logging()
    points = [(n, s) for n, _, s, _ in read_store().metrics(run_id) if n in ("one", "both")]
    assert sorted(points) == sorted([("one", s) for s in steps] + [("both", s) for s in steps])


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.log_params({"bad\ud800": 1}),
        lambda e: e.log_params({"key": "bad\ud800"}),
        lambda e: e.log_text("note", "bad\ud800"),
        lambda e: e.log_text("bad\ud800", "x"),
        lambda e: e.add_tags(["bad\ud800"]),
        lambda e: e.add_tags({"key": "bad\ud800"}),
        lambda e: e.log_hyperparameter("bad\ud800", 1),
    ],
)
def test_text_that_cannot_be_stored_raises_at_the_call(call):
    exp = start()
    with pytest.raises(ValueError, match="UTF-8"):
        call(exp)


def test_a_name_that_cannot_be_stored_is_refused_at_the_call(read_store):
    exp = start()
    exp.log_metric("good", 2.0, 1)
    with pytest.raises(ValueError, match="cannot be stored as UTF-8"):
        exp.log_metric("bad\ud800", 3.0, 1)
    exp.log_metric("good_after", 4.0, 2)
    exp.stop()
    assert [p[0] for p in read_store().metrics(exp.id)] == ["good", "good_after"]


def test_a_record_that_slips_past_every_check_is_left_out_alone(read_store, caplog):
    exp = start()
    exp.log_metric("good_before", 1.0, 0)
    exp.flush()
    with caplog.at_level(logging.WARNING, "tracelet"):
        exp.log_metric("good", 2.0, 1)
        exp.orchestrator.put(("bad\ud800", 3.0, 1, 0.0))  # the raw buffer checks nothing
        exp.log_metric("good_after", 4.0, 2)
        assert exp.flush(timeout=10)
    exp.stop()
    assert [p[0] for p in read_store().metrics(exp.id)] == ["good_before", "good", "good_after"]
    assert "could not be stored" in caplog.text


def test_constructor_checks_tags_and_run_ids():
    with pytest.raises(TypeError, match="tag name must be a str"):
        tracelet.Experiment("x", tags=[None])
    for bad in ("../../victim", "a b", "", 42):
        with pytest.raises(ValueError, match="run id must be"):
            tracelet.Experiment("x", run_id=bad)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_settings_must_be_finite(value):
    with pytest.raises(ConfigurationError, match="finite"):
        TraceletSettings(flush_interval=value)
    with pytest.raises(ConfigurationError, match="finite"):
        TraceletSettings.load(environ={"TRACELET_FLUSH_TIMEOUT": str(value)})


FORKING_PROGRAM = """
import os, sys, tracelet
exp = tracelet.start_logging("forking", config={"flush_interval": 0.01})
exp.log_metric("before_fork", 1.0, 0)
pid = os.fork()
if pid == 0:  # the child: logging raises; a normal exit must not stop the parent's run
    try:
        exp.log_metric("child", 1.0, 1)
        sys.exit(1)
    except RuntimeError as error:
        sys.exit(0 if "forked" in str(error) else 2)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
print("status after child exit", exp.store.get_run(exp.id).status.value)
exp.log_metric("parent_after_fork", 2.0, 1)
exp.stop()
print("metrics", [p[0] for p in exp.store.metrics(exp.id)])
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_logs_into_nor_finishes_the_parents_run(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", FORKING_PROGRAM],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "child 0",
        "status after child exit running",
        "metrics ['before_fork', 'parent_after_fork']",
    ]


def test_a_batch_number_taken_by_another_writer_is_renumbered(read_store):
    exp = start()
    exp.log_metric("first", 1.0, 0)
    exp.flush()
    intruder = Batch(exp.id, exp.orchestrator.seq + 1, [("intruder", 9.0, 0, 1.0)])
    exp.store.write_batch(intruder)
    exp.log_metric("second", 2.0, 1)
    exp.stop()
    assert {p[0] for p in read_store().metrics(exp.id)} == {"first", "intruder", "second"}


def test_a_dropped_tail_is_delivered_while_the_run_is_idle(read_store):
    with recording_backend() as backends:
        exp = start(backend=["local", "recording"], recording={"delay": 0.003})
        for step in range(300):  # far more batches than the sink's queue holds
            exp.log_metric("loss", float(step), step)
            exp.flush(timeout=0)
        assert exp.flush(timeout=30), "caught up with no further batch to trigger it"
        assert len(backends[0].points()) == 300
        exp.stop()


def test_a_backend_added_to_an_idle_run_gets_the_history():
    exp = start()
    exp.log_metric("loss", 1.0, 0)
    exp.flush()
    late = built("late")
    exp.orchestrator.add_backend(late)
    assert exp.flush(timeout=10)
    assert [p[0] for p in late.points()] == ["loss"]
    exp.stop()


class Picky(RecordingBackend):
    def log_batch(self, batch):
        if any(p[0] == "forbidden" for p in batch.metrics):
            raise RejectedBatchError("name 'forbidden' is not allowed here")
        super().log_batch(batch)


def test_a_rejected_batch_is_skipped_recorded_and_delivery_goes_on(read_store, caplog):
    exp = start()
    picky = built("picky", Picky)
    exp.orchestrator.add_backend(picky)
    exp.log_metric("ok", 1.0, 0)
    exp.flush(timeout=10)
    exp.log_metric("forbidden", 2.0, 1)
    exp.flush(timeout=10)
    with caplog.at_level(logging.ERROR, "tracelet"):
        exp.log_metric("ok", 3.0, 2)
        exp.stop()
    assert [p[1] for p in picky.points()] == [1.0, 3.0]
    assert picky.final_status is tracelet.RunStatus.FINISHED
    store = read_store()
    assert store.undelivered(exp.id) == {}
    row = store.connection().execute("SELECT error FROM cursors WHERE backend = 'picky'")
    assert "batch 2 rejected: name 'forbidden' is not allowed here" in row.fetchone()[0]


def test_stop_cuts_a_backoff_short_when_the_backend_recovers(read_store):
    with recording_backend() as backends:
        exp = start(
            backend=["local", "recording"], flush_timeout=20, recording={"fail_times": 6}
        )  # backoff grows past 6 s
        exp.log_metric("loss", 1.0, 0)
        time.sleep(1.0)
        backend = backends[0]
        backend.fail_times = 0  # recovered while the sink sleeps
        started = time.monotonic()
        exp.stop()
        took = time.monotonic() - started
    assert [p[0] for p in backend.points()] == ["loss"]
    assert backend.final_status is tracelet.RunStatus.FINISHED
    assert took < 10, f"stop waited out the backoff ({took:.1f}s)"


def test_flush_after_stop_does_not_wait_for_a_hanging_backend():
    with recording_backend() as backends:
        exp = start(backend=["local", "recording"], recording={"hang": True}, flush_timeout=0.2)
        exp.log_metric("loss", 1.0, 0)
        exp.stop()
        assert exp.flush() is False
        assert backends[0].points() == []


def test_remove_backend_without_timeout_waits_for_it():
    with recording_backend() as backends:
        exp = start(backend=["local", "recording"], recording={"fail_times": 2})
        exp.log_metric("loss", 1.0, 0)
        assert exp.orchestrator.remove_backend("recording", timeout=None) is True
        assert [p[0] for p in backends[0].points()] == ["loss"]
        exp.stop()


def test_resume_tells_only_backends_with_a_cursor_that_they_resume():
    with recording_backend() as backends:
        first = tracelet.Experiment("r", backend=["local", "recording"]).start()
        first.stop()
        tracelet.Experiment("r", run_id=first.id).start().stop()
        tracelet.Experiment("r", backend=["local", "recording"], run_id=first.id).start().stop()
    assert [b.resumed for b in backends] == [False, True]


def test_a_failed_start_leaves_the_run_unlocked(monkeypatch):
    exp = tracelet.start_logging("ok")
    exp.stop()
    broken = tracelet.Experiment("again", run_id=exp.id)
    with monkeypatch.context() as patch:
        patch.setattr(RunSession, "_create_run", Mock(side_effect=OSError("disk gone")))
        with pytest.raises(OSError, match="disk gone"):
            broken.start()
    tracelet.Experiment("again", run_id=exp.id).start().stop()


def test_a_failed_artifact_call_does_not_take_a_version(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    exp = start()
    with pytest.raises(ValueError, match="must be relative"):
        exp.log_artifact("model.pt", artifact_path=".")
    bundle = exp.create_artifact("bundle").add_file(str(tmp_path / "model.pt"))
    (tmp_path / "model.pt").unlink()
    with pytest.raises(FileNotFoundError):
        exp.log_artifact(bundle)
    (tmp_path / "model.pt").write_bytes(b"y")
    assert exp.log_artifact("model.pt")["local"].version == "1"
    assert exp.log_artifact(bundle)["local"].version == "1"


def test_gc_cannot_delete_a_live_run(read_store):
    exp = start()
    with pytest.raises(StoreError, match="being written by a live process"):
        read_store().delete_run(exp.id)


def test_secrets_in_captured_locals_and_backend_errors_are_hidden(read_store):
    apiKey = "sk-SECRET1"
    batch_size = 8
    exp = start()
    assert exp.capture_hyperparams() == {"batch_size": 8}
    exp.stop()

    class Leaky(RecordingBackend):
        def log_batch(self, batch):
            raise ConnectionError("cannot reach https://alice:SECRET2@example.invalid/api")

    exp = start(flush_timeout=0.3)
    exp.orchestrator.add_backend(built("leaky", Leaky))
    exp.log_metric("m", 1.0, 0)
    exp.stop()
    (error,) = read_store().connection().execute("SELECT error FROM cursors WHERE backend='leaky'")
    assert "SECRET2" not in error[0]
    assert "https://***@example.invalid" in error[0]
    del apiKey, batch_size


def test_the_watcher_never_logs_its_own_store(tmp_path, read_store, monkeypatch):
    from tracelet.artifact_watch import ArtifactWatcher

    monkeypatch.setattr(ArtifactWatcher, "poll_seconds", 0.05)
    store = tmp_path / "visible_store"
    config = {
        "watch_filesystem": True,
        "artifact_watch_dirs": [str(tmp_path)],
        "store_path": str(store),
    }
    with tracelet.start_logging("watch", config=config) as exp:
        exp.log_image("img", [[0, 255]])
        (tmp_path / "result.txt").write_text("r")
        time.sleep(0.4)
    paths = [a.artifact_path for a in read_store(store).artifacts(exp.id)]
    assert paths == ["result.txt"]


def test_many_short_lived_threads_flushing_do_not_leak_connections():
    exp = start()
    for _ in range(30):
        worker = threading.Thread(target=lambda: exp.flush(timeout=5))
        worker.start()
        worker.join()
    assert len(exp.store._connections) <= 3
    exp.stop()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (__import__("numpy").zeros((0, 0)), "has no pixels"),
        (__import__("numpy").array([["a", "b"]], dtype=object), "are not numbers"),
    ],
)
def test_unusable_images_raise_at_the_call(image, message):
    exp = start()
    with pytest.raises(TypeError, match=message):
        exp.log_image("img", image)
