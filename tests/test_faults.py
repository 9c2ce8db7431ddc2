"""Faults that used to lose or misplace data (issue 8): secrets, names and values, sync."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from fakes import recording_backend
from python_script import run_script

import tracelet
from tracelet.cli import main as cli
from tracelet.redaction import REDACTED

SECRETS = {
    "password": "hunter2",
    "db": {"password": "p4ss", "host": "db.internal"},
    "api_key": "sk-live-123",
    "apiKey": "sk-live-456",
    "conn": "postgresql://u:pw@db/x",
    "max_tokens": 512,
    "token_budget": 1000,
}


def test_secrets_in_params_and_tags_are_masked_before_anything_sees_them(read_store):
    with recording_backend() as backends:
        exp = tracelet.start_logging("secrets", backend=["local", "recording"])
        exp.log_params(SECRETS)
        exp.add_tags({"api_token": "t0k3n", "team": "ml"})
        exp.stop()
    expected = {
        "password": REDACTED,
        "db/password": REDACTED,
        "db/host": "db.internal",
        "api_key": REDACTED,
        "apiKey": REDACTED,
        "conn": "postgresql://***@db/x",
        "max_tokens": 512,
        "token_budget": 1000,
    }
    assert read_store().params(exp.id) == expected
    assert read_store().tags(exp.id) == {"api_token": REDACTED, "team": "ml"}
    sent = {k: v for batch in backends[0].batches.values() for k, v in batch.params.items()}
    assert sent == expected
    everything = repr(read_store().get_run(exp.id).config) + repr(backends[0].batches)
    for secret in ("hunter2", "p4ss", "sk-live", "u:pw", "t0k3n"):
        assert secret not in everything


def test_redaction_can_be_turned_off_by_a_user_who_means_it(read_store):
    with tracelet.start_logging("in clear", config={"redact_secrets": False}) as exp:
        exp.log_params({"password": "hunter2"})
    assert read_store().params(exp.id) == {"password": "hunter2"}


def test_a_lone_surrogate_is_refused_at_the_call_for_every_name():
    exp = tracelet.start_logging("names")
    bad = "bad\ud800"
    calls = [
        lambda: exp.log_metric(bad, 1.0, 0),
        lambda: exp.log_metrics({bad: 1.0}),
        lambda: exp.log_params({bad: 1}),
        lambda: exp.log_params({"ok": bad}),
        lambda: exp.log_text(bad, "x"),
        lambda: exp.log_image(bad, b"\x89PNG\r\n\x1a\n"),
        lambda: exp.add_tags([bad]),
        lambda: exp.log_metric("loss", 1.0, 0) or exp.log_metric(bad, 1.0, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="cannot be stored as UTF-8"):
            call()
    exp.stop()
    assert exp.store.metrics(exp.id) == [("loss", 1.0, 0, exp.store.metrics(exp.id)[0][3])]


def test_a_recursive_structure_in_params_names_the_key():
    config = {"lr": 0.1, "model": {"layers": 2}}
    config["model"]["parent"] = config
    with tracelet.start_logging("cycle") as exp, pytest.raises(ValueError, match="'model/parent'"):
        exp.log_params(config)


def test_a_decimal_too_large_for_a_float_raises_like_an_int():
    with tracelet.start_logging("huge") as exp:
        with pytest.raises(ValueError, match="too large for a float"):
            exp.log_metric("m", Decimal("1e400"), 0)
        with pytest.raises(ValueError, match="too large for a float"):
            exp.log_metric("m", 10**400, 0)
        exp.log_metric("m", Decimal("Infinity"), 1)
    assert math.isinf(exp.store.metrics(exp.id)[0][1])


@pytest.fixture
def run_with_a_secret_option(monkeypatch):
    """A finished run whose ``recording`` backend (api_key given) missed everything."""
    monkeypatch.delenv("RECORDING_KEY", raising=False)
    with recording_backend() as backends:
        config = {"recording": {"api_key": "sk-abc", "hang": True}, "flush_timeout": 0.2}
        exp = tracelet.start_logging("secret option", backend=["local", "recording"], config=config)
        exp.log_metric("loss", 1.0, 0)
        exp.stop()
        backends[0].hang.set()
        yield exp, backends


def test_sync_refuses_a_backend_whose_secret_option_it_cannot_recover(
    run_with_a_secret_option, capsys
):
    exp, _ = run_with_a_secret_option
    assert exp.store.get_run(exp.id).config["backends"]["recording"]["api_key"] == REDACTED
    assert cli(["sync", "--backend", "recording"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "option 'api_key' of backend 'recording' was withheld" in line
    assert "--option api_key=..." in line
    assert "RECORDING_KEY" in line
    assert exp.store.undelivered(exp.id)["recording"] == 1


@pytest.mark.parametrize("source", ["option", "environment"])
def test_sync_takes_a_secret_option_from_the_command_line_or_the_environment(
    run_with_a_secret_option, source, monkeypatch
):
    exp, backends = run_with_a_secret_option
    extra = ["--option", "hang=false", "--option", "api_key=sk-abc"]
    if source == "environment":
        monkeypatch.setenv("RECORDING_KEY", "sk-abc")
        extra = extra[:2]
    assert cli(["sync", "--backend", "recording", *extra]) == 0
    synced = backends[-1]
    assert synced.config["api_key"] == "sk-abc"
    assert [p[0] for p in synced.points()] == ["loss"]
    assert exp.store.undelivered(exp.id) == {}


def test_a_backend_call_that_hangs_cannot_hold_sync_past_its_timeout(
    run_with_a_secret_option, capsys
):
    import time

    exp, _ = run_with_a_secret_option  # its backend hangs in every delivery
    started = time.monotonic()
    code = cli(["sync", "--timeout", "1", "--option", "api_key=sk-abc"])
    assert code == 1
    assert time.monotonic() - started < 1 + 5
    assert "did not return" in capsys.readouterr().err
    assert exp.store.undelivered(exp.id)["recording"] == 1


def noise(size: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_stop_returns_within_flush_timeout_whatever_is_queued(read_store, caplog):
    import logging
    import time

    with recording_backend() as _, caplog.at_level(logging.WARNING, "tracelet"):
        config = {"recording": {"hang": True}, "flush_timeout": 1.0, "flush_interval": 5}
        exp = tracelet.start_logging("busy stop", backend=["local", "recording"], config=config)
        for step in range(16):  # about 0.5 s each to encode: 8 s in all
            exp.log_image("noise", noise(2500, step), step)
        exp.log_metric("loss", 1.0, 0)
        started = time.monotonic()
        exp.stop()
        took = time.monotonic() - started
    assert took < 1.0 + 3.0, f"stop took {took:.1f} s with flush_timeout=1"
    assert "were not journaled before the 1s flush timeout" in caplog.text
    assert exp.delivery["recording"].phase in ("stopped", "starting", "delivering")


def test_queued_images_are_bounded_in_bytes(read_store):
    one = noise(512, 0).nbytes  # 786,432 bytes
    config = {"media_buffer_mb": 2 * one / 2**20}
    with tracelet.start_logging("bounded media", config=config) as exp:
        orchestrator = exp.orchestrator
        most = 0
        for step in range(10):
            exp.log_image("noise", noise(512, step), step)
            most = max(most, orchestrator.payload_bytes)
        assert most <= 2 * one, "log_image waited for room"
    assert orchestrator.payload_bytes == 0
    assert len(read_store().images(exp.id)) == 10, "nothing dropped"


@pytest.mark.slow
def test_a_second_sigterm_during_stop_neither_restarts_nor_cuts_the_wait(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time, tracelet\n"
        "from fakes import recording_backend\n"
        "with recording_backend():\n"
        "    config = {'recording': {'hang': True}, 'flush_timeout': 6}\n"
        "    both = ['local', 'recording']\n"
        "    with tracelet.start_logging('t', backend=both, config=config) as e:\n"
        "        e.log_metric('loss', 1.0, 0)\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
    )
    tests = str(__import__("pathlib").Path(__file__).parent)
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": tests},
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    first = time.monotonic()
    time.sleep(3)
    child.send_signal(signal.SIGTERM)  # while stop waits for the hung backend
    assert child.wait(timeout=30) == 143
    took = time.monotonic() - first
    assert 6 - 1 < took < 6 + 2, f"exited {took:.1f} s after the first signal (flush_timeout 6)"


FORKS = """
import os, sys, threading, time
import tracelet

exp = tracelet.start_logging("parent", config={"flush_interval": 0.001})
stop = threading.Event()

def keep_logging():
    step = 0
    while not stop.is_set():
        exp.log_metric("loss", 1.0, step)
        step += 1

writer = threading.Thread(target=keep_logging)
writer.start()
for trial in range(8):
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:
        try:
            with tracelet.start_logging(f"child {trial}") as child:
                child.log_metric("x", float(trial), 0)
        except BaseException as error:
            print("child failed:", repr(error), flush=True)
            os._exit(2)
        os._exit(0)
    started = time.monotonic()
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), round(time.monotonic() - started, 2), flush=True)
stop.set()
writer.join()
exp.stop()
"""


@pytest.mark.slow
def test_a_forked_child_starts_its_own_run_at_once_while_the_parent_journals(tmp_path):
    done = run_script(FORKS, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    children = [line.split() for line in done.stdout.splitlines()]
    assert [code for code, _ in children] == ["0"] * 8, done.stdout
    assert max(float(took) for _, took in children) < 5, "no child waited on a lock"
    from tracelet.storage import LocalStore

    store = LocalStore(tmp_path / ".tracelet")
    runs = {run.name: run for run in store.list_runs()}
    assert {f"child {i}" for i in range(8)} <= set(runs)
    assert all(runs[f"child {i}"].status.value == "finished" for i in range(8))
    assert store.metrics(runs["child 3"].id)[0][:3] == ("x", 3.0, 0)
    assert runs["parent"].status.value == "finished"
    store.close()


HELD_AT_FORK = """
import importlib, os, pkgutil, signal, sys, threading, time
import tracelet

LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition)
locks = {}  # by identity: a lock one module imports from another is taken once
for package in ("tracelet", "tracelet_torch", "tracelet_mlflow", "tracelet_wandb",
                "tracelet_clearml", "tracelet_aim"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
for name, module in list(sys.modules.items()):
    if name.split(".")[0] == "tracelet" or name.startswith("tracelet_"):
        for attr, value in vars(module).items():
            if isinstance(value, LOCK_TYPES):
                locks.setdefault(id(value), (f"{name}.{attr}", value))
print("module locks", ",".join(sorted(name for name, _ in locks.values())), flush=True)
exp = tracelet.start_logging("parent", config={"track_stdout": True})  # stdout is copied
for name, lock in (("the run's stop lock", exp._stop_lock), ("stdout's copy", sys.stdout._lock)):
    locks[id(lock)] = (name, lock)

held, done = threading.Event(), threading.Event()
def hold_them_all():  # as a backend starting, an import, a print, a stop on another thread
    for _, lock in locks.values():
        lock.acquire()
    tracelet.core.process.stopping.add(exp)  # (inside its stop)
    held.set()
    done.wait()
    tracelet.core.process.stopping.discard(exp)
    for _, lock in locks.values():
        lock.release()
threading.Thread(target=hold_them_all, daemon=True).start()
held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(30)  # a lock the child can never take would hang it
    stuck = [name for name, lock in locks.values() if not lock.acquire(timeout=1)]
    for name, lock in locks.values():
        if name not in stuck:
            lock.release()
    started = time.monotonic()
    with tracelet.start_logging("child") as child:  # stops the parent's run here first
        child.log_metric("x", 1.0, 0)
    tracelet.plugins.report_once("child", "reports too")
    print("runs stopping", len(tracelet.core.process.stopping), flush=True)  # SIGTERM acts
    print("stuck", ", ".join(stuck) or "none", flush=True)
    print("run took", round(time.monotonic() - started, 2), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
done.set()
exp.stop()
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
"""


@pytest.mark.slow
def test_a_forked_child_never_waits_on_a_lock_its_parent_s_threads_held(tmp_path):
    """A lock held by another thread at ``fork()`` stays held in the child for good: every
    module-level lock of every distribution, and those a child meets through its parent's
    run (its stop, the stdout copy), is made afresh there (``tracelet.forks``)."""
    done = run_script(HELD_AT_FORK, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.partition(" ")[::2] for line in done.stdout.splitlines())
    found = set(lines["module"].removeprefix("locks ").split(","))
    assert {  # (the discovery finds them)
        "tracelet.core.delivery._STARTING",
        "tracelet.interface._guard",
        "tracelet.reporting._lock",
        "tracelet_torch.imports._lock",
    } <= found, done.stdout
    assert lines["child"] == "exit 0", done.stdout + done.stderr
    assert lines["stuck"] == "none", f"locks a forked child cannot take: {lines['stuck']}"
    assert float(lines["run"].split()[-1]) < 8, "the child's run waited on a lock"
    assert lines["runs"] == "stopping 0", "the parent's stop is not the child's"


@pytest.fixture
def small_disk(tmp_path):
    """A real 3 MB tmpfs (skipped where mounting is not permitted), and a way to fill it."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> None:
    """Write zeros into ``folder/filler`` until the disk is full."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_a_full_disk_mid_run_holds_records_until_space_returns(small_disk, read_store):
    import time

    config = {"store_path": str(small_disk / "store")}
    exp = tracelet.start_logging("full then free", config=config)
    for step in range(1000):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(timeout=30)
    fill(small_disk)
    for step in range(1000, 3000):  # the journal cannot take these now
        exp.log_metric("loss", float(step), step)
    time.sleep(1)
    (small_disk / "filler").unlink()
    exp.stop()
    store = read_store(small_disk / "store")
    assert [p[2] for p in store.metrics(exp.id)] == list(range(3000)), "nothing lost"
    assert store.get_run(exp.id).status.value == "finished"


def test_a_store_that_cannot_be_written_at_stop_has_a_defined_outcome(small_disk, capsys, caplog):
    import logging
    import time

    from tracelet.storage import LocalStore

    path = small_disk / "store"
    config = {"store_path": str(path), "flush_timeout": 2}
    exp = tracelet.start_logging("cannot finish", config=config)
    for step in range(500):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(timeout=30)
    fill(small_disk)
    for step in range(500, 1500):
        exp.log_metric("loss", float(step), step)
    with caplog.at_level(logging.WARNING, "tracelet"):
        started = time.monotonic()
        exp.stop()  # no raw sqlite3 error reaches the caller
        took = time.monotonic() - started
    assert took < 2 + 3
    assert "1000 record(s) were not journaled" in caplog.text, "reported with its count"
    assert "could not be recorded" in caplog.text
    store = LocalStore(path)  # readable while the disk is full
    assert len(store.metrics(exp.id)) == 500
    store.close()
    capsys.readouterr()
    assert cli(["--store", str(path), "list"]) == 0
    assert "cannot finish" in capsys.readouterr().out
    (small_disk / "filler").unlink()
    store = LocalStore(path)
    assert store.get_run(exp.id).status.value == "crashed", "the lock was released"
    store.close()


@pytest.mark.parametrize("fault", ["deleted", "replaced"])
def test_a_store_deleted_or_replaced_mid_run_is_recreated_and_later_points_kept(
    fault, tmp_path, read_store, caplog
):
    import logging

    exp = tracelet.start_logging("moved under")
    for step in range(100):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(timeout=30)
    store_dir = tmp_path / ".tracelet"
    for part in store_dir.glob("tracelet.db*"):
        part.unlink()
    if fault == "replaced":
        (store_dir / "tracelet.db").write_text("my notes, not a database")
    with caplog.at_level(logging.ERROR, "tracelet"):
        for step in range(100, 300):
            exp.log_metric("loss", float(step), step)
        exp.stop()
    assert "was deleted or replaced while run" in caplog.text, "reported loudly"
    store = read_store()
    assert [p[2] for p in store.metrics(exp.id)] == list(range(100, 300))
    assert store.get_run(exp.id).status.value == "finished"
    if fault == "replaced":
        (kept,) = store_dir.glob("tracelet.db.replaced-*")
        assert kept.read_text() == "my notes, not a database"
    with tracelet.start_logging("next run") as again:
        again.log_metric("loss", 1.0, 0)
    assert len(read_store().metrics(again.id)) == 1


def test_a_read_only_store_is_readable_and_refuses_new_runs_clearly(small_disk, capsys):
    import subprocess

    from tracelet.exceptions import StoreError
    from tracelet.storage import LocalStore

    with tracelet.start_logging("before", config={"store_path": str(small_disk / "store")}) as e:
        e.log_metric("loss", 1.0, 0)
    view = small_disk.parent / "read-only"
    view.mkdir()
    subprocess.run(["mount", "--bind", str(small_disk), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        store = LocalStore(view / "store")
        assert len(store.metrics(e.id)) == 1, "readable"
        store.close()
        assert cli(["--store", str(view / "store"), "list"]) == 0
        assert "before" in capsys.readouterr().out
        with pytest.raises(StoreError, match="is read-only; it can be read"):
            tracelet.start_logging("after", config={"store_path": str(view / "store")})
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


EXITS_AT_ONCE = """
    import sys, tracelet
    exp = tracelet.start_logging("quick", backend=["local", "mlflow"],
                                 config={"tracking_uri": sys.argv[1]})
    exp.log_metric("loss", 0.5, 0)
"""


@pytest.mark.slow
def test_a_program_that_ends_at_once_exits_promptly_and_sync_delivers_later(tmp_path):
    """Python refuses new threads at exit, so a backend not started by then cannot be:
    the program must not wait the flush timeout for it, and its batch stays for sync."""
    import time

    from python_script import run_script

    from tracelet_mlflow.testing import MlflowReadBack

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    began = time.monotonic()
    done = run_script(EXITS_AT_ONCE, timeout=120, cwd=tmp_path, args=(uri,))
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr
    assert took < 20, f"waited {took:.0f} s: the 30 s flush timeout for a backend that cannot start"
    assert "could not run while Python was exiting" in done.stderr
    assert "tracelet sync" in done.stderr
    assert cli(["--store", str(tmp_path / ".tracelet"), "sync"]) == 0
    (point,) = MlflowReadBack(uri).metrics(
        tracelet.storage.LocalStore(tmp_path / ".tracelet").list_runs()[0].id
    )
    assert point[:3] == ("loss", 0.5, 0)
