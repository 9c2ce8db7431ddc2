"""The delivery workers: a bounded number of threads shared by a run's backends, that a
backend which is down, slow or hung cannot take from the others."""

from __future__ import annotations

import threading
import time

import pytest
from fakes import recording_backend

import tracelet
from tracelet.analysis.rules import LossSpikeThresholds
from tracelet.core import workers
from tracelet.core.workers import DeliveryWorkers, Next


class Hanging:
    """A task whose first slice blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ran = threading.Event()

    def run_slice(self) -> Next:
        self.ran.set()
        self.release.wait(10)
        return Next.DONE


class Quick:
    def __init__(self) -> None:
        self.ran = threading.Event()

    def run_slice(self) -> Next:
        self.ran.set()
        return Next.DONE


def test_two_tasks_woken_at_once_get_two_workers():
    pool = DeliveryWorkers(4)
    for _ in range(50):
        hanging, quick = Hanging(), Quick()
        pool.wake(hanging)
        pool.wake(quick)
        assert quick.ran.wait(2), "the second task is not stuck behind the first"
        hanging.release.set()
    pool.close()


def test_a_stuck_worker_is_replaced_so_waiting_tasks_run(monkeypatch):
    monkeypatch.setattr(workers, "STUCK_AFTER", 0.2)
    pool = DeliveryWorkers(1)
    hanging, quick = Hanging(), Quick()
    pool.wake(hanging)
    assert hanging.ran.wait(2)
    pool.wake(quick)
    assert not quick.ran.wait(0.1), "one worker, and it is busy"
    time.sleep(0.2)
    pool.wake(quick)  # the next wake finds the worker stuck
    assert quick.ran.wait(2)
    assert pool.threads == 2
    hanging.release.set()
    pool.close()


def test_a_backend_that_hangs_does_not_starve_the_others(monkeypatch, read_store):
    monkeypatch.setattr(workers, "STUCK_AFTER", 0.3)
    with recording_backend("hung", "fine") as backends:
        exp = tracelet.start_logging(
            "hang", backend=["local", "hung", "fine"], config={"max_workers": 1}
        )
        hung, fine = backends
        hung.hang.clear()
        for step in range(2_000):
            exp.log_metric("loss", float(step), step)
            if step % 500 == 0:
                exp.orchestrator.flush(timeout=0)
        assert exp.orchestrator.flush(timeout=5) is False
        assert fine.points() == read_store().metrics(exp.id), "the other is up to date"
        exp.settings = exp.settings.replace(flush_timeout=1.0)
        tracelet.stop_logging()
        assert fine.final_status is tracelet.RunStatus.FINISHED
        assert not fine.started, "stopped, although the one worker was held"


def test_a_backend_that_is_down_is_not_retried_at_every_batch(read_store):
    with recording_backend("down") as backends:
        exp = tracelet.start_logging(
            "backoff", backend=["local", "down"], config={"flush_interval": 0.01}
        )
        (down,) = backends
        down.fail_times = 10**9
        began = time.monotonic()
        while time.monotonic() - began < 3:
            exp.log_metric("loss", 1.0)
            time.sleep(0.001)
        tries = down.deliveries
        down.fail_times = 0
        tracelet.stop_logging()
    assert tries <= 12, f"{tries} tries in 3 s: the backoff (0.2 s doubling to 1 s) holds"
    assert down.points() == read_store().metrics(exp.id)


def test_logging_from_on_anomaly_without_async_writes_does_not_deadlock(read_store):
    seen = []

    def on_anomaly(anomaly: dict) -> None:
        seen.append(anomaly)
        tracelet.log({"anomalies_seen": float(len(seen))})

    exp = tracelet.init(
        "p",
        async_writes=False,
        on_anomaly=on_anomaly,
        anomaly_config=LossSpikeThresholds(warmup=5),
    )
    done = threading.Event()

    def train() -> None:
        for step in range(40):
            tracelet.log({"loss": 1.0 if step != 30 else 50.0}, step)
        done.set()

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    assert done.wait(10), "a callback logging from inside the journal's drain deadlocked"
    tracelet.finish()
    assert [a["step"] for a in seen] == [30]
    assert [p[1] for p in read_store().metrics(exp.id, "anomalies_seen")] == [1.0]


@pytest.mark.parametrize("max_workers", [1, 2])
def test_one_backend_never_gets_more_than_one_worker(max_workers):
    with recording_backend("only"):
        exp = tracelet.start_logging("one", backend=["only"], config={"max_workers": max_workers})
        for step in range(5_000):
            exp.log_metric("loss", float(step), step)
            if step % 100 == 0:
                exp.orchestrator.flush(timeout=0)
        assert exp.orchestrator.workers.threads == 1
        tracelet.stop_logging()
