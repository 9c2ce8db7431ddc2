"""Orchestrator and sinks under load and faults: nothing is lost, nothing is duplicated."""

from __future__ import annotations

import enum
import itertools
import logging
import sqlite3
import threading
from collections import Counter, defaultdict

import fakes
import pytest
from fakes import built, recording_backend

import tracelet
from tracelet import RunStatus, TraceletSettings
from tracelet.core import delivery
from tracelet.core.registry import default_registry
from tracelet.plugins import BackendRegistration
from tracelet.records import MetricPoint


def start(backend="local", **settings):
    base = TraceletSettings.load({"flush_interval": 0.02, **settings})
    return tracelet.start_logging("delivery", project="tests", backend=backend, settings=base)


def assert_same_points(received: list[MetricPoint], stored: list[MetricPoint]) -> None:
    """Exactly the same points, each once, in the same order."""
    assert len(received) == len(stored)
    assert received == stored


def test_many_threads_lose_nothing_and_keep_each_metric_in_order(read_store):
    threads, per_thread = 8, 12_500
    with recording_backend() as backends:
        exp = start(["local", "recording"])

        def train(index: int) -> None:
            for step in range(per_thread):
                exp.log_metric(f"thread{index}", step * 0.5, step)

        workers = [threading.Thread(target=train, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        tracelet.stop_logging()
    store = read_store()
    points = store.metrics(exp.id)
    assert len(points) == threads * per_thread == 100_000
    by_name = defaultdict(list)
    for name, value, step, _ in points:
        by_name[name].append((step, value))
    for index in range(threads):
        assert by_name[f"thread{index}"] == [(s, s * 0.5) for s in range(per_thread)]
    assert_same_points(backends[0].points(), points)


class Name(enum.StrEnum):
    LOSS = "loss"


def test_steps_logged_together_reach_a_backend_as_the_points_the_journal_holds(read_store):
    names = ["loss"] + [f"metric_{i:02d}" for i in range(1, 20)]
    with recording_backend() as backends:
        exp = start(["local", "recording"])
        for step in range(3_000):
            values = {name: float(step * i) for i, name in enumerate(names)}
            if step % 7:  # a str enum member equal to the checked name, as some loops log
                values = {Name.LOSS: values.pop("loss"), **values}
            exp.log_metrics(values, step)  # a step record, sent to the journal as it is
            exp.log_metric("lr", 0.1, step)
        tracelet.stop_logging()
    stored = read_store().metrics(exp.id)
    received = backends[0].points()
    assert_same_points(received, stored)
    assert {p[0].__class__ for p in received} == {str}
    logged = [p[:3] for p in stored if not p[0].startswith("system/")]
    assert len(logged) == 3_000 * 21
    assert logged[:21] == [*((name, 0.0, 0) for name in names), ("lr", 0.1, 0)]
    assert logged[-21] == ("loss", 0.0, 2_999)
    assert logged[-20] == ("metric_01", 2_999.0, 2_999)


def test_failing_backend_is_retried_reported_once_and_caught_up(read_store, caplog):
    with recording_backend() as backends, caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging(
            "flaky",
            backend=["local", "recording"],
            config={"recording": {"fail_times": 4}, "flush_interval": 0.02},
        )
        for step in range(5_000):
            exp.log_metric("loss", 1.0 / (step + 1), step)
        tracelet.stop_logging()
    backend = backends[0]
    store = read_store()
    stored = store.metrics(exp.id)
    assert_same_points(backend.points(), stored)
    assert len(stored) == 5_000
    assert backend.final_status is RunStatus.FINISHED
    failures = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(failures) == 1, "one report per failure episode"
    assert "ConnectionError: injected failure" in failures[0].getMessage()
    recoveries = [r for r in caplog.records if "is back and has caught up" in r.getMessage()]
    assert len(recoveries) == 1, "one more report once it has caught up"
    assert exp.delivery["recording"].phase == "delivering"
    assert exp.delivery["recording"].pending == 0
    assert store.undelivered(exp.id) == {}
    assert store.get_cursor(exp.id, "recording") == store.last_seq(exp.id)


def test_hanging_backend_blocks_neither_training_nor_other_backends(read_store, caplog):
    with recording_backend("stuck", "healthy") as backends:
        exp = tracelet.start_logging(
            "hang",
            backend=["local", "stuck", "healthy"],
            config={"stuck": {"hang": True}, "flush_timeout": 0.5, "flush_interval": 0.02},
        )
        for step in range(20_000):
            exp.log_metric("loss", float(step), step)
        with caplog.at_level(logging.WARNING, "tracelet"):
            tracelet.stop_logging()
        stuck, healthy = sorted(backends, key=lambda b: not b.config.get("hang"))
        assert stuck.points() == []
    store = read_store()
    run = store.get_run(exp.id)
    assert run.status is RunStatus.FINISHED
    stored = store.metrics(exp.id)
    assert len(stored) == 20_000
    assert_same_points(healthy.points(), stored)
    pending = store.undelivered(exp.id)
    assert set(pending) == {"stuck"}
    assert pending["stuck"] == store.last_seq(exp.id)
    assert any("'stuck' did not accept" in r.getMessage() for r in caplog.records)


def test_backends_start_one_at_a_time(read_store):
    """A tool's start imports many modules; imports racing in two threads fail now and
    then (ClearML's import hook), so backends start one after another."""
    with recording_backend("one", "two", "three") as backends:
        config = {name: {"start_delay": 0.2} for name in ("one", "two", "three")}
        exp = tracelet.start_logging("starts", backend=["one", "two", "three"], config=config)
        exp.log_metric("loss", 1.0, 0)
        tracelet.stop_logging()
        spans = sorted(backend.start_span for backend in backends)
    assert len(spans) == 3
    assert all(end <= next_began for (_, end), (next_began, _) in itertools.pairwise(spans))
    assert all(len(b.points()) == 1 for b in backends)


def test_a_slow_start_holds_the_next_one_back_for_a_bounded_time(read_store, monkeypatch):
    monkeypatch.setattr(delivery, "START_ALONE_WAIT", 0.3)
    with recording_backend("one", "two") as backends:
        config = {name: {"start_delay": 2.0} for name in ("one", "two")}
        exp = tracelet.start_logging("slow starts", backend=["one", "two"], config=config)
        exp.log_metric("loss", 1.0, 0)
        tracelet.stop_logging()
        (_, first_end), (second_began, _) = sorted(backend.start_span for backend in backends)
        assert all(len(b.points()) == 1 for b in backends)
    assert second_began < first_end - 1.0, "the second start waited out the first"


def test_slow_backend_overflowing_its_queue_replays_from_the_journal(read_store):
    with recording_backend() as backends:
        exp = tracelet.start_logging(
            "slow",
            backend=["local", "recording"],
            config={"recording": {"delay": 0.002}, "flush_interval": 0.001},
        )
        for step in range(3_000):
            exp.log_metric("loss", float(step), step)
            if step % 10 == 0:
                exp.flush()  # many small batches: far more than the sink's queue holds
        tracelet.stop_logging()
    store = read_store()
    assert store.last_seq(exp.id) > 200
    deliveries = Counter(backends[0].batches)
    assert set(deliveries) == set(range(1, store.last_seq(exp.id) + 1))
    assert_same_points(backends[0].points(), store.metrics(exp.id))


def test_backend_added_mid_run_receives_everything_from_the_start(read_store):
    exp = start()
    for step in range(1_000):
        exp.log_metric("early", float(step), step)
    exp.flush()
    late = built("late")
    exp.orchestrator.add_backend(late)
    for step in range(1_000):
        exp.log_metric("later", float(step), step)
    tracelet.stop_logging()
    assert_same_points(late.points(), read_store().metrics(exp.id))
    assert late.final_status is RunStatus.FINISHED
    with pytest.raises(ValueError, match="already attached"):
        exp.orchestrator.add_backend(built("late"))


def test_removed_backend_gets_what_was_logged_before_removal(read_store):
    with recording_backend() as backends:
        exp = start(["local", "recording"])
        exp.log_metric("before", 1.0, 0)
        assert exp.orchestrator.remove_backend("recording", timeout=10)
        exp.log_metric("after", 2.0, 1)
        with pytest.raises(ValueError, match="no backend named 'recording'"):
            exp.orchestrator.remove_backend("recording")
        tracelet.stop_logging()
    assert [p[0] for p in backends[0].points()] == ["before"]
    assert backends[0].final_status is None, "a removed backend's run is left open"


def test_route_metric_accepts_tuples_and_metric_objects(read_store):
    exp = start()

    class Metric:
        name, value, step, timestamp = "obj", 2, 3, 1234.5

    exp.orchestrator.route_metric(("tuple", 1.0, 2, 1000.0))
    exp.orchestrator.route_metric(Metric())
    with pytest.raises(TypeError, match="metric 'bad'"):
        exp.orchestrator.route_metric(("bad", "x", 0, 0.0))
    tracelet.stop_logging()
    assert read_store().metrics(exp.id) == [("tuple", 1.0, 2, 1000.0), ("obj", 2.0, 3, 1234.5)]


def test_full_buffer_makes_the_caller_wait_and_drops_nothing(read_store):
    exp = start(buffer_size=64, flush_interval=5.0)  # the dispatcher only wakes when full
    for step in range(20_000):
        exp.log_metric("loss", float(step), step)
    tracelet.stop_logging()
    assert [p[1] for p in read_store().metrics(exp.id)] == [float(s) for s in range(20_000)]


def test_journal_write_failures_are_retried_without_loss(read_store, monkeypatch, caplog):
    exp = start(journal_process=False)  # the failure is injected in this process's store
    real_write = type(exp.store).write_batch
    failures = {"left": 3}

    def flaky_write(self, batch):
        if failures["left"]:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return real_write(self, batch)

    monkeypatch.setattr(type(exp.store), "write_batch", flaky_write)
    with caplog.at_level(logging.WARNING, "tracelet"):
        for step in range(1_000):
            exp.log_metric("loss", float(step), step)
        tracelet.stop_logging()
    monkeypatch.undo()
    assert len(read_store().metrics(exp.id)) == 1_000
    assert sum("cannot write" in r.getMessage() for r in caplog.records) == 1


class ForgetfulBackend(fakes.RecordingBackend):
    """Holds nothing of a run it reopens, as W&B's service killed with its training
    process before it wrote what it had been sent."""

    def held_batches(self) -> int | None:
        return 0 if self.resumed else None


class _Forgetful:
    @tracelet.hookimpl
    def tracelet_register_backends(self) -> list[BackendRegistration]:
        return [BackendRegistration("forgetful", ForgetfulBackend, options=fakes.OPTIONS)]


def test_a_backend_that_lost_batches_it_accepted_is_sent_them_again(caplog):
    """Its cursor says every batch was delivered; reopened, the tool says it holds none
    (``held_batches``): delivery goes on from there, and says so once."""
    registry = default_registry()
    registry.register(_Forgetful(), name="test-forgetful")
    try:
        first = tracelet.start_logging("forgetful", backend=["forgetful"], run_id="lost-1")
        for step in range(3):
            first.log_metric("loss", 1.0 / (step + 1), step)
            first.flush()
        first.stop()
        (before,) = ForgetfulBackend.instances[-1:]
        assert [p[2] for p in before.points()] == [0, 1, 2]
        with caplog.at_level(logging.WARNING, logger="tracelet"):
            again = tracelet.start_logging("forgetful", backend=["forgetful"], run_id="lost-1")
            again.log_metric("loss", 0.25, 3)
            again.stop()
        after = ForgetfulBackend.instances[-1]
        assert after is not before
        assert after.resumed
        assert [p[2] for p in after.points()] == [0, 1, 2, 3], "sent again, then the new one"
        said = [r.getMessage() for r in caplog.records if "delivering them again" in r.message]
        assert len(said) == 1, said
        assert "holds batches of run lost-1 up to 0, not 3" in said[0]
    finally:
        registry.manager.unregister(name="test-forgetful")
