"""The delivery engine's states: permanent failures, retry bounds, and what users are shown."""

from __future__ import annotations

import logging
import time

from fakes import RecordingBackend, built, recording_backend

import tracelet
from tracelet.cli import main as cli
from tracelet.core.delivery import Delivery, DeliveryPhase, MemoryCursor
from tracelet.core.retry import RetryPolicy
from tracelet.plugins import PermanentBackendError, RunStatus
from tracelet.storage import LocalStore


class FailsAtStart(RecordingBackend):
    """A backend whose every start raises its ``error``; ``starts`` counts the tries."""

    error: Exception
    starts = 0

    def start(self):
        type(self).starts += 1
        raise self.error


class Denied(FailsAtStart):
    """A backend whose credentials are refused: every start fails for good."""

    error = PermanentBackendError("401 Unauthorized: the API key was revoked")


def seconds_to_stop_beside(exp: tracelet.Experiment, name: str, kind: type, points: int) -> float:
    """Add backend ``kind`` as ``name`` to ``exp``, log ``points`` of "loss", stop; return
    how long the stop took."""
    exp.orchestrator.add_backend(built(name, kind))
    for step in range(points):
        exp.log_metric("loss", float(step), step)
    started = time.monotonic()
    exp.stop()
    return time.monotonic() - started


def test_a_permanent_failure_in_start_is_reported_once_and_never_retried(read_store, caplog):
    Denied.starts = 0
    with recording_backend("healthy") as healthy, caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging("denied", backend=["local", "healthy"])
        took = seconds_to_stop_beside(exp, "denied", Denied, 2_000)
    assert Denied.starts == 1, "never retried"
    assert took < 5, f"stop waited {took:.1f} s for a backend that failed for good"
    reports = [r for r in caplog.records if "'denied'" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].levelno == logging.ERROR
    assert "failed for good" in reports[0].getMessage()
    assert "the API key was revoked" in reports[0].getMessage()
    state = exp.delivery["denied"]
    assert state.phase is DeliveryPhase.FAILED
    assert "401 Unauthorized" in state.error
    assert len(healthy[0].points()) == 2_000, "the other backends finish normally"
    assert healthy[0].final_status is RunStatus.FINISHED
    assert len(read_store().metrics(exp.id)) == 2_000
    (stored,) = [d for d in read_store().deliveries(exp.id) if d.backend == "denied"]
    assert stored.phase is DeliveryPhase.FAILED
    assert "the API key was revoked" in stored.error
    assert stored.pending == read_store().last_seq(exp.id), "kept for tracelet sync"


class HalfImported(FailsAtStart):
    """A backend whose tool fails to import (as when a tool's own thread races its import):
    Python cannot import a module whose import failed midway again, so no retry can help."""

    error = ImportError("cannot import name 'unknown_fields' from 'google.protobuf'")


def test_a_tool_that_fails_to_import_fails_for_good_at_once(read_store, caplog):
    HalfImported.starts = 0
    with caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging("half imported")
        took = seconds_to_stop_beside(exp, "half", HalfImported, 100)
    assert HalfImported.starts == 1, "never retried"
    assert took < 5, f"stop waited {took:.1f} s for a tool that cannot be imported"
    (report,) = [r.getMessage() for r in caplog.records if "'half'" in r.getMessage()]
    assert "failed for good" in report
    assert "could not be imported" in report
    assert "unknown_fields" in report
    assert exp.delivery["half"].phase is DeliveryPhase.FAILED
    assert len(read_store().metrics(exp.id)) == 100, "kept for tracelet sync"


def test_show_says_where_each_backend_stands(read_store, capsys):
    Denied.starts = 0
    exp = tracelet.start_logging("shown")
    exp.orchestrator.add_backend(built("denied", Denied))
    exp.log_metric("loss", 1.0, 0)
    exp.stop()
    assert cli(["show", exp.id[:8]]) == 0
    out = capsys.readouterr().out
    assert "-> local" in out
    assert "up to date" in out
    assert "-> denied" in out
    assert "failed for good" in out
    assert "the API key was revoked" in out
    assert cli(["show", exp.id[:8], "--json"]) == 0
    assert '"phase": "failed"' in capsys.readouterr().out


def test_the_default_backoff_is_capped_so_a_recovered_tool_is_found_fast():
    delays = RetryPolicy().delays()
    waits = [next(delays) for _ in range(20)]
    assert max(waits) <= 2.0
    assert waits[0] < 0.3


def test_a_delivery_reports_its_state_while_retrying_then_recovers(read_store, caplog):
    with caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging("flaky", config={"flush_interval": 0.01})
        flaky = built("flaky", fail_times=3)
        exp.orchestrator.add_backend(flaky)
        exp.log_metric("loss", 1.0, 0)
        deadline = time.monotonic() + 10
        phases = set()
        while time.monotonic() < deadline and not flaky.batches:
            phases.add(exp.delivery["flaky"].phase)
            time.sleep(0.005)
        exp.stop()
    assert DeliveryPhase.RETRYING in phases
    state = exp.delivery["flaky"]
    assert (state.phase, state.pending, state.error) == (DeliveryPhase.DELIVERING, 0, None)
    messages = [r.getMessage() for r in caplog.records if "'flaky'" in r.getMessage()]
    assert len(messages) == 2, messages
    assert "unreachable" in messages[0]
    assert "is back and has caught up" in messages[1]


def test_the_engine_stops_retrying_at_its_deadline(tmp_path):
    with tracelet.start_logging("journal") as exp:
        exp.log_metric("loss", 1.0, 0)
    store = LocalStore(tmp_path / ".tracelet")
    backend = built("down", fail_times=10**6)
    delivery = Delivery(backend, store, exp.run_info, cursor=MemoryCursor())
    delivery.deadline = time.monotonic() + 0.5
    started = time.monotonic()
    assert delivery.open(False)
    assert delivery.catch_up() is False
    assert time.monotonic() - started < 2.5
    assert delivery.state.phase is DeliveryPhase.RETRYING
    assert delivery.state.pending == 1
    store.close()


def test_a_batch_whose_stored_file_is_gone_goes_without_it_said_once(tmp_path, caplog):
    from tracelet.core.delivery import BackingOff
    from tracelet.records import Artifact, Batch, RunInfo

    store = LocalStore(tmp_path / ".tracelet")
    run = RunInfo("f" * 32, "gone", "tests", time.time())
    store.create_run(run)
    kept = tmp_path / "kept.bin"
    kept.write_text("kept")
    files = [
        Artifact("kept", "kept.bin", str(kept), 4, "-"),
        Artifact("lost", "lost.bin", str(tmp_path / "deleted.bin"), 4, "-"),
    ]
    batch = Batch(run.id, 1, [("loss", 1.0, 0, 1.0)], artifacts=files)
    backend = built("flaky", fail_times=3)  # a live sink: each try comes back to deliver
    retry = RetryPolicy(initial=0.001, maximum=0.001)
    delivery = Delivery(backend, store, run, cursor=MemoryCursor(), retry=retry, waits=False)
    assert delivery.open(False)
    with caplog.at_level(logging.ERROR, "tracelet"):
        for _ in range(100):
            try:
                if delivery.deliver(batch):
                    break
            except BackingOff:
                time.sleep(0.002)
    assert [a.artifact_path for a in backend.batches[1].artifacts] == ["kept.bin"]
    assert backend.points() == [("loss", 1.0, 0, 1.0)]
    (report,) = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert "deleted.bin" in report
    assert "kept.bin" not in report
    assert delivery.state.rejection == "batch 1: 1 stored file(s) missing from the store"
    store.close()
