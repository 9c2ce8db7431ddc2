"""The local store: schema, journal, resume, and what a dead process leaves behind."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import tracelet
from tracelet import RunStatus, StoreError, TraceletSettings
from tracelet.records import Batch, RunInfo, Text
from tracelet.storage import LocalStore
from tracelet.storage.schema import SCHEMA_VERSION


def run_info(store: LocalStore, run_id: str = "r1") -> RunInfo:
    return RunInfo(run_id, "name", "proj", 1000.0, store_path=str(store.path))


def test_new_store_has_the_current_schema_in_wal_mode(store_path):
    store = LocalStore(store_path)
    con = store.connection()
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {
        "projects",
        "runs",
        "metrics",
        "params",
        "tags",
        "texts",
        "images",
        "artifacts",
        "batches",
        "cursors",
    } <= tables
    store.close()
    LocalStore(store_path).close()  # reopening migrates nothing and keeps the data


def test_store_from_a_newer_tracelet_is_refused(store_path):
    LocalStore(store_path).close()
    con = sqlite3.connect(store_path / "tracelet.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    with pytest.raises(StoreError, match="newer than this Tracelet understands"):
        LocalStore(store_path)


def test_unreadable_store_is_a_store_error(store_path):
    store_path.mkdir()
    (store_path / "tracelet.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the local store"):
        LocalStore(store_path)


def test_batches_are_idempotent_and_replayed_in_order(store_path):
    store = LocalStore(store_path)
    info = run_info(store)
    store.create_run(info)
    first = Batch("r1", 1, [("a", 1.0, 0, 10.0), ("b", math.nan, 0, 10.5)], {"lr": 0.1})
    second = Batch(
        "r1", 2, [("a", 2.0, 1, 11.0)], tags={"t": "v"}, texts=[Text("note", "hi", 1, 11.0)]
    )
    assert store.write_batch(first)
    assert store.write_batch(second)
    assert not store.write_batch(first), "a replayed batch is skipped"
    assert len(store.metrics("r1")) == 3
    replayed = store.read_batches("r1", after=0)
    assert [b.seq for b in replayed] == [1, 2]
    assert replayed[0].metrics[0] == ("a", 1.0, 0, 10.0)
    assert math.isnan(replayed[0].metrics[1][1])
    assert replayed[0].params == {"lr": 0.1}
    assert replayed[1].tags == {"t": "v"}
    assert replayed[1].texts == [Text("note", "hi", 1, 11.0)]
    assert [b.seq for b in store.read_batches("r1", after=1)] == [2]
    assert store.read_batches("r1", after=2) == []
    store.close()


def test_unknown_run_is_a_store_error(store_path):
    store = LocalStore(store_path)
    with pytest.raises(StoreError, match="no run 'missing'"):
        store.metrics("missing")
    store.close()


def test_resume_continues_the_same_run(read_store):
    settings = TraceletSettings.load({"flush_interval": 0.01})
    first = tracelet.Experiment("resumable", settings=settings).start()
    first.log_metric("loss", 1.0, 0)
    first.log_metric("loss", 0.5, 1)
    first.stop(status="failed")
    second = tracelet.Experiment("ignored name", settings=settings, run_id=first.id).start()
    assert second.name == "resumable"
    assert second.iteration == 2, "the step after the last one logged"
    second.log_metric("loss", 0.25, 2)
    second.stop()
    store = read_store()
    (run,) = store.list_runs()
    assert run.status is RunStatus.FINISHED
    assert [p[1] for p in store.metrics(run.id)] == [1.0, 0.5, 0.25]
    assert [b.seq for b in store.read_batches(run.id, 0)] == [1, 2]


def test_a_run_written_by_a_live_process_cannot_be_opened_twice():
    first = tracelet.start_logging("owner")
    with pytest.raises(StoreError, match="another live process"):
        tracelet.Experiment("intruder", run_id=first.id).start()


def run_python(code: str, cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


@pytest.mark.slow
def test_sigkill_leaves_a_crashed_run_with_every_flushed_point(tmp_path, read_store):
    child = run_python(
        """
        import tracelet
        exp = tracelet.start_logging("doomed", config={"flush_interval": 0.05})
        print("run", exp.id)
        step = 0
        while True:
            for _ in range(1000):
                exp.log_metric("loss", step * 0.5, step)
                step += 1
            exp.flush()
            print("flushed", step)
        """,
        tmp_path,
    )
    run_id = child.stdout.readline().split()[1]
    flushed = 0
    while flushed < 20_000:
        flushed = int(child.stdout.readline().split()[1])
    child.send_signal(signal.SIGKILL)
    child.wait()
    store = read_store()
    run = store.get_run(run_id)
    assert run.status is RunStatus.CRASHED
    assert run.ended_at is not None
    points = store.metrics(run_id)
    assert len(points) >= flushed
    assert [(p[2], p[1]) for p in points] == [(s, s * 0.5) for s in range(len(points))]


@pytest.mark.slow
def test_forgotten_stop_is_flushed_at_exit(tmp_path, read_store):
    child = run_python(
        """
        import tracelet
        exp = tracelet.start_logging("forgetful", config={"flush_interval": 10})
        for step in range(5000):
            exp.log_metric("loss", float(step), step)
        """,
        tmp_path,
    )
    assert child.wait(timeout=60) == 0
    store = read_store()
    (run,) = store.list_runs()
    assert run.status is RunStatus.FINISHED
    assert len(store.metrics(run.id)) == 5000


@pytest.mark.slow
def test_unhandled_exception_at_exit_marks_the_run_failed(tmp_path, read_store):
    child = run_python(
        """
        import tracelet
        exp = tracelet.start_logging("crashing")
        exp.log_metric("loss", 1.0, 0)
        raise SystemError("training diverged")
        """,
        tmp_path,
        stderr=subprocess.PIPE,
    )
    assert child.wait(timeout=60) == 1
    assert "training diverged" in child.stderr.read(), "the traceback is still printed"
    store = read_store()
    (run,) = store.list_runs()
    assert run.status is RunStatus.FAILED
    assert [p[1] for p in store.metrics(run.id)] == [1.0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ending", "code", "status"), [("sys.exit(3)", 3, "failed"), ("sys.exit(0)", 0, "finished")]
)
def test_sys_exit_code_at_exit_decides_the_status(tmp_path, read_store, ending, code, status):
    child = run_python(
        f"""
        import sys, tracelet
        exp = tracelet.start_logging("exiting")
        exp.log_metric("loss", 1.0, 0)
        {ending}
        """,
        tmp_path,
    )
    assert child.wait(timeout=60) == code
    (run,) = read_store().list_runs()
    assert run.status == status


@pytest.mark.slow
def test_sys_exit_in_another_thread_does_not_fail_the_run(tmp_path, read_store):
    child = run_python(
        """
        import sys, threading, tracelet
        exp = tracelet.start_logging("threads")
        worker = threading.Thread(target=sys.exit, args=(2,))
        worker.start(); worker.join()
        exp.log_metric("loss", 1.0, 0)
        """,
        tmp_path,
    )
    assert child.wait(timeout=60) == 0
    (run,) = read_store().list_runs()
    assert run.status == "finished"


@pytest.mark.parametrize(("code", "status"), [(None, "finished"), (0, "finished"), (2, "failed")])
def test_system_exit_inside_with_ends_the_run_by_its_code(read_store, code, status):
    with pytest.raises(SystemExit), tracelet.start_logging("exits") as exp:
        raise SystemExit(code)
    assert read_store().get_run(exp.id).status == status


def test_list_runs_filters(read_store):
    for project, status in [("a", "finished"), ("a", "failed"), ("b", "finished")]:
        tracelet.start_logging("r", project=project).stop(status=status)
    store = read_store()
    assert len(store.list_runs()) == 3
    assert len(store.list_runs(project="a")) == 2
    assert len(store.list_runs(project="a", status="failed")) == 1
    assert [r.project for r in store.list_runs(status="finished")] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown run status"):
        store.list_runs(status="exploded")


def test_secrets_never_reach_the_stored_run_config(read_store):
    from fakes import recording_backend

    with recording_backend():
        exp = tracelet.start_logging(
            "secret",
            backend=["local", "recording"],
            config={"recording": {"api_key": "sk-123", "delay": 0.0}},
        )
        exp.stop()
    stored = read_store().get_run(exp.id).config
    assert "sk-123" not in repr(stored)
    assert stored["backends"]["recording"]["api_key"] == "***"


def test_uri_credentials_are_redacted():
    from tracelet.redaction import redact

    clean = redact(
        {"tracking_uri": "http://user:pa55@host:5000/x", "nested": {"password": "p", "ok": 1}}
    )
    assert clean == {
        "tracking_uri": "http://host:5000/x",  # the place stays, the credentials go
        "nested": {"password": "***", "ok": 1},
    }


def test_an_older_store_is_migrated_in_place_keeping_its_data(store_path, monkeypatch, read_store):
    from tracelet.storage import schema

    with tracelet.start_logging("before upgrade") as exp:
        exp.log_metric("loss", 0.5, 0)
    upgrade = ("ALTER TABLE runs ADD COLUMN notes TEXT NOT NULL DEFAULT ''",)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, upgrade))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    store = read_store()
    con = store.connection()
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "notes" in {row[1] for row in con.execute("PRAGMA table_info(runs)")}
    assert [p[1] for p in store.metrics(exp.id)] == [0.5]


def test_a_failing_migration_leaves_the_store_as_it_was(store_path, monkeypatch):
    from tracelet.storage import schema

    LocalStore(store_path).close()
    broken = ("ALTER TABLE runs ADD COLUMN fine TEXT", "THIS IS NOT SQL")
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    with pytest.raises(StoreError, match="cannot open the local store"):
        LocalStore(store_path)
    con = sqlite3.connect(store_path / "tracelet.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert "fine" not in {row[1] for row in con.execute("PRAGMA table_info(runs)")}
    con.close()


def test_resume_continues_artifact_versions(tmp_path, read_store):
    (tmp_path / "ckpt.pt").write_bytes(b"first")
    first = tracelet.Experiment("resumable").start()
    assert first.log_artifact("ckpt.pt")["local"].version == "1"
    first.stop()
    (tmp_path / "ckpt.pt").write_bytes(b"second")
    second = tracelet.Experiment("resumable", run_id=first.id).start()
    assert second.log_artifact("ckpt.pt")["local"].version == "2"
    second.stop()
    stored = {a.version: Path(a.path).read_bytes() for a in read_store().artifacts(first.id)}
    assert stored == {1: b"first", 2: b"second"}


def test_only_backends_of_the_original_run_are_told_it_resumes():
    from fakes import recording_backend

    first = tracelet.Experiment("resumable").start()
    first.stop()
    with recording_backend() as backends:
        tracelet.Experiment(
            "resumable", backend=["local", "recording"], run_id=first.id
        ).start().stop()
        tracelet.Experiment(
            "resumable", backend=["local", "recording"], run_id=first.id
        ).start().stop()
    assert [b.resumed for b in backends] == [False, True]


def test_a_version_1_store_is_upgraded_to_the_current_schema(store_path, read_store):
    from tracelet.storage import schema

    con = sqlite3.connect(store_path.parent / "v1.db")
    for statement in schema.MIGRATIONS[0]:
        con.execute(statement)
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    store_path.mkdir()
    (store_path.parent / "v1.db").rename(store_path / "tracelet.db")
    store = read_store()
    tables = {r[0] for r in store.connection().execute("SELECT name FROM sqlite_master")}
    assert {"checkpoints", "anomalies"} <= tables
    assert store.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_checkpoints_and_anomalies_round_trip(store_path):
    store = LocalStore(store_path)
    store.create_run(run_info(store))
    checkpoint = {
        "step": 99,
        "timestamp": 5.0,
        "first_step": 0,
        "metrics": {"loss": 0.5},
        "gradient_stats": {"grad/total_norm": 1.0},
        "system_metrics": {},
        "samples": [{"text": "hi"}],
    }
    store.write_checkpoint("r1", checkpoint)
    assert store.checkpoints("r1") == [{"run_id": "r1", **checkpoint}]
    anomaly = {
        "run_id": "r1",
        "step": 7,
        "metric": "loss",
        "kind": "nan_or_inf",
        "severity": "critical",
        "value": math.nan,
        "message": "loss is NaN",
        "timestamp": 6.0,
    }
    assert store.add_anomalies([anomaly, anomaly]) == 1
    (stored,) = store.anomalies("r1")
    assert math.isnan(stored.pop("value"))
    assert stored == {k: v for k, v in anomaly.items() if k != "value"}
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize("inside_with", [True, False], ids=["with-block", "no-stop"])
def test_sigterm_ends_the_run_as_killed_and_keeps_its_points(tmp_path, read_store, inside_with):
    body = (
        "with tracelet.start_logging('terminated') as exp:\n    work(exp)\n"
        if inside_with
        else "exp = tracelet.start_logging('terminated')\nwork(exp)\n"
    )
    child = run_python(
        "import time, tracelet\n"
        "def work(exp):\n"
        "    for step in range(1000):\n"
        "        exp.log_metric('loss', float(step), step)\n"
        "    exp.flush()\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n" + body,
        tmp_path,
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 143
    store = read_store()
    (run,) = store.list_runs()
    assert run.status is RunStatus.KILLED
    assert len(store.metrics(run.id)) == 1000
