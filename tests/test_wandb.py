"""The W&B backend against real W&B offline runs, read back from their ``.wandb`` files."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from option_forms import options_in_form
from python_script import run_script

import tracelet
from tracelet.plugins import RunStatus

pytest.importorskip("wandb")
from tracelet_wandb.names import NAMES_KEY, TAGS_KEY, legal_key, legal_tag
from tracelet_wandb.rows import group_rows
from tracelet_wandb.run_file import RunFileError, chunks, ended, records
from tracelet_wandb.testing import WandbReadBack

QUIET = {"track_system": False, "track_env": False, "track_git": False, "flush_interval": 0.02}


def read_back(folder: Path) -> WandbReadBack:
    return WandbReadBack(folder / "wandb")


def run_record(folder: Path, run_id: str):
    """The latest ``run`` record of the W&B run."""
    return [run for _, run in read_back(folder).records(run_id, "run")][-1]


def test_out_of_order_and_repeated_steps_all_read_back_in_order(wandb_offline):
    """10,000 points, steps shuffled and repeated, NaN and infinities among them: each
    point is in the run file once, with its own step, each name's points in logged order."""
    rng = random.Random(5)
    names = ["loss", "val/loss", "lr", "grad_norm"]
    points = []
    for i in range(10_000):
        step = rng.randrange(500) if i % 3 else i // 4  # shuffled, repeated, increasing
        value = rng.choice([rng.uniform(-5, 5), math.nan, math.inf, -math.inf, 1e300])
        points.append((names[i % 4], value, step))
    config = {"wandb": {"dir": str(wandb_offline)}, **QUIET}
    with tracelet.start_logging("steps", backend="wandb", config=config) as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
    found = read_back(wandb_offline).metrics(exp.id)
    for name in names:
        logged = [(_key(v), s) for n, v, s in points if n == name]
        stored = [(_key(v), s) for n, v, s, _ in found if n == name]
        assert stored == logged, name


def _key(value: float) -> object:
    return "nan" if math.isnan(value) else value


def test_rows_group_a_step_and_keep_every_name_in_order():
    entries = [
        ("loss", 1.0, 5, 0.0),
        ("acc", 0.5, 5, 0.0),  # same step: same row
        ("loss", 2.0, 5, 0.0),  # loss again at 5: a new row
        ("loss", 3.0, 3, 0.0),  # a lower step: its own row
        ("acc", 0.7, 3, 0.0),
        ("acc", 0.9, 5, 0.0),  # joins the second step-5 row: it comes after acc's last
        ("lr", 0.1, 5, 1.0),  # a second later: a row of its own
    ]
    rows = [(r.step, r.values) for r in group_rows(entries)]
    assert rows == [
        (5, {"loss": 1.0, "acc": 0.5}),
        (5, {"loss": 2.0}),
        (3, {"loss": 3.0, "acc": 0.7}),
        (5, {"acc": 0.9}),
        (5, {"lr": 0.1}),
    ]


def test_names_w_and_b_would_mangle_are_mapped_and_recorded(wandb_offline):
    config = {"wandb": {"dir": str(wandb_offline)}, **QUIET}
    long_tag = "t" * 100
    with tracelet.start_logging("names", backend="wandb", config=config) as exp:
        for name in ("val.loss", "_private", "Loss", "loss", "tracelet/step"):
            exp.log_metric(name, 1.0, 0)
        exp.add_tags([long_tag])
    back = read_back(wandb_offline)
    recorded = back.summary(exp.id)[NAMES_KEY]
    stored = {n for n, *_ in back.metrics(exp.id)}
    originals = {recorded.get(n, n) for n in stored}
    assert originals == {"val.loss", "_private", "Loss", "loss", "tracelet/step"}
    assert {"val_loss", "u_private", "Loss"} <= stored
    assert legal_tag(long_tag) in back.tags(exp.id)
    assert back.summary(exp.id)[TAGS_KEY] == {legal_tag(long_tag): long_tag}
    assert all(len(tag) <= 64 for tag in run_record(wandb_offline, exp.id).tags)


def test_legal_key_examples():
    assert legal_key("val.loss") == "val_loss"
    assert legal_key("_step") == "u_step"
    assert legal_key("-lr") == "u_lr"
    assert legal_key("train/loss") == "train/loss"


@pytest.mark.parametrize("form", ["nested", "prefixed", "plain", "yaml", "environment"])
def test_options_in_every_documented_form(form, wandb_offline, monkeypatch):
    options = {
        "project": f"proj-{form}",
        "entity": "team-a",
        "name": "run-001",
        "tags": ["pytorch", "baseline"],
        "notes": "first try",
        "group": "sweep-1",
        "job_type": "train",
        "dir": str(wandb_offline),
    }
    if form != "environment":
        config = {**QUIET, **options_in_form(form, "wandb", options)}
    else:
        config = dict(QUIET)
        variables = {"project": "WANDB_PROJECT", "entity": "WANDB_ENTITY", "name": "WANDB_NAME"}
        variables |= {"notes": "WANDB_NOTES", "group": "WANDB_RUN_GROUP"}
        variables |= {"job_type": "WANDB_JOB_TYPE", "dir": "WANDB_DIR"}
        for key, variable in variables.items():
            monkeypatch.setenv(variable, options[key])
        monkeypatch.setenv("WANDB_TAGS", ",".join(options["tags"]))
    with tracelet.start_logging("tracelet-name", backend="wandb", config=config) as exp:
        exp.log_metric("loss", 0.5, 0)
    run = run_record(wandb_offline, exp.id)
    assert (run.project, run.entity, run.display_name) == (f"proj-{form}", "team-a", "run-001")
    assert (run.notes, run.run_group, run.job_type) == ("first try", "sweep-1", "train")
    assert {"pytorch", "baseline"} <= set(run.tags)


def test_project_and_run_name_default_to_tracelet_s(wandb_offline):
    config = {"wandb": {"dir": str(wandb_offline)}, **QUIET}
    with tracelet.start_logging("my-experiment", project="vision", backend="wandb", config=config):
        pass
    (run_id,) = {p.stem.removeprefix("run-") for p in (wandb_offline / "wandb").rglob("*.wandb")}
    run = run_record(wandb_offline, run_id)
    assert (run.project, run.display_name) == ("vision", "my-experiment")


def test_a_changed_param_updates_the_config(wandb_offline):
    config = {"wandb": {"dir": str(wandb_offline)}, **QUIET}
    with tracelet.start_logging("params", backend="wandb", config=config) as exp:
        exp.log_params({"lr": 0.1, "opt": {"name": "adam"}})
        assert exp.flush(30)
        exp.log_params({"lr": 0.01})
    assert read_back(wandb_offline).params(exp.id) == {"lr": 0.01, "opt/name": "adam"}


def test_an_unknown_mode_names_the_choices(wandb_offline):
    config = {"wandb": {"mode": "offlne"}, **QUIET}
    with pytest.raises(tracelet.ConfigurationError, match="online, offline, disabled"):
        tracelet.start_logging("bad", backend="wandb", config=config)


def test_the_api_key_never_reaches_the_store(wandb_offline, read_store):
    secret = "0123456789abcdef0123456789abcdef01234567"
    config = {"wandb": {"dir": str(wandb_offline), "api_key": secret}, **QUIET}
    with tracelet.start_logging("secret", backend=["local", "wandb"], config=config) as exp:
        exp.log_metric("loss", 1.0, 0)
    store = read_store()
    assert secret not in repr(store.get_run(exp.id))
    assert secret not in (Path(store.path) / "tracelet.db").read_bytes().decode(errors="replace")
    for path in wandb_offline.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_batch_cut_off_halfway_resumes_at_its_first_missing_row(wandb_offline, tmp_path):
    """A batch's delivery fails after 3 of its rows, is retried and fails again after 5; a
    new session delivers the rest: every point once."""
    from tracelet.testing import BackendUnderTest
    from tracelet.testing.harness import Harness

    kit = Harness(
        BackendUnderTest("wandb", {"dir": str(wandb_offline)}, read_back(wandb_offline)), tmp_path
    )
    with kit.start("cut", journal_only=True) as exp:
        for step in range(10):
            exp.log_metric("loss", float(step), step)
    (batch,) = kit.journal.read_batches(exp.id, 0, limit=100)
    first = kit.build_backend()
    delivery = kit.delivery(first, exp.run_info)
    assert delivery.open(False)
    rows_logged, failed_at = [], set()
    log = first.run.log

    def fails_after_three_then_five(values, **kwargs):
        if len(rows_logged) in {3, 5} - failed_at:
            failed_at.add(len(rows_logged))
            raise ConnectionError("cut off")
        rows_logged.append(values)
        log(values, **kwargs)

    first.run.log = fails_after_three_then_five
    for _ in range(2):  # the second try, in this session, goes on from row 4
        with pytest.raises(ConnectionError):
            first.log_batch(batch)
    assert len(rows_logged) == 5
    first.stop()
    second = kit.build_backend()
    second.start()
    second.start_run(exp.run_info, True)
    second.log_batch(batch)
    second.finish_run(RunStatus.FINISHED)
    found = [(v, s) for n, v, s, _ in read_back(wandb_offline).metrics(exp.id) if n == "loss"]
    assert found == [(float(s), s) for s in range(10)]
    assert read_back(wandb_offline).status(exp.id) == "finished"
    kit.close()


def test_a_failed_start_or_finish_is_retried_on_the_same_w_and_b_run(wandb_offline, tmp_path):
    """define_metric fails once after wandb.init, finish fails once: the retries go on
    with the same W&B run (one session) and it ends with its status."""
    from tracelet.testing import BackendUnderTest
    from tracelet.testing.harness import Harness

    kit = Harness(
        BackendUnderTest("wandb", {"dir": str(wandb_offline)}, read_back(wandb_offline)), tmp_path
    )
    with kit.start("retry", journal_only=True) as exp:
        exp.log_metric("loss", 1.0, 0)
    (batch,) = kit.journal.read_batches(exp.id, 0, limit=10)
    backend = kit.build_backend()
    backend.start()
    import wandb

    original = wandb.sdk.wandb_run.Run.define_metric
    calls = []

    def fails_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("define_metric failed")
        return original(self, *args, **kwargs)

    wandb.sdk.wandb_run.Run.define_metric = fails_once
    try:
        with pytest.raises(ConnectionError):
            backend.start_run(exp.run_info, False)
        backend.start_run(exp.run_info, False)
    finally:
        wandb.sdk.wandb_run.Run.define_metric = original
    backend.log_batch(batch)
    finish = backend.run.finish
    backend.run.finish = lambda **kwargs: (_ for _ in ()).throw(ConnectionError("finish"))
    with pytest.raises(ConnectionError):
        backend.finish_run(RunStatus.KILLED)
    backend.run.finish = finish
    backend.finish_run(RunStatus.KILLED)
    back = read_back(wandb_offline)
    assert len(back.sessions(exp.id)) == 1
    assert back.status(exp.id) == "killed"
    assert [v for _, v, _, _ in back.metrics(exp.id)] == [1.0]
    kit.close()


def test_a_long_tag_gets_its_new_value_and_long_option_tags_are_recorded(wandb_offline):
    long_key = "k" * 70
    option_tag = "o" * 80
    config = {"wandb": {"dir": str(wandb_offline), "tags": [option_tag, "short"]}, **QUIET}
    with tracelet.start_logging("tags", backend="wandb", config=config) as exp:
        exp.add_tags({long_key: "first"})
        assert exp.flush(30)
        exp.add_tags({long_key: "second"})
    back = read_back(wandb_offline)
    tags = run_record(wandb_offline, exp.id).tags
    recorded = back.summary(exp.id)[TAGS_KEY]
    originals = sorted(recorded.get(tag, tag) for tag in tags)
    assert originals == sorted([option_tag, "short", f"{long_key}:second"])


def test_the_live_state_of_a_resumed_online_run():
    """Online, W&B hands a resumed run its summary, config and step (the online path cannot
    be reached from these machines; this checks how Tracelet reads what W&B hands back)."""
    from tracelet_wandb.sessions import from_live_run

    class Resumed:
        summary = {"tracelet/seq": 7, "tracelet/rows": 40, "tracelet/names": {"a_b": "a.b"}}
        config = {"lr": 0.1}
        step = 43

    state = from_live_run(Resumed())
    assert (state.seq, state.rows, state.next_row) == (7, 40, 43)
    assert state.names == {"a_b": "a.b"}
    assert {"lr", "tracelet/seq"} <= state.existing


def test_run_file_reader_stops_at_a_cut_off_record_and_refuses_others(tmp_path):
    with pytest.raises(RunFileError, match="not a W&B run file"):
        list(chunks(b"not a run file at all"))
    whole = _one_run_file(tmp_path)
    data = whole.read_bytes()
    complete = list(chunks(data))
    assert len(list(chunks(data[:-3]))) == len(complete) - 1  # the cut record is left out
    damaged = bytearray(data)
    damaged[20] ^= 0xFF
    with pytest.raises(RunFileError, match="damaged"):
        list(chunks(bytes(damaged)))


def _one_run_file(tmp_path: Path) -> Path:
    import wandb

    run = wandb.init(
        project="p",
        dir=str(tmp_path),
        mode="offline",
        reinit="create_new",
        settings={"console": "off"},
    )
    run.log({"a": 1.0})
    run.finish()
    path = Path(run.settings.sync_file)
    deadline = time.monotonic() + 30
    while not ended(path) and time.monotonic() < deadline:  # wandb-core writes it after finish
        time.sleep(0.01)
    assert [r.WhichOneof("record_type") for r in records(path)][:2] == ["header", "run"]
    return path


@pytest.mark.slow
def test_a_failing_backend_beside_it_does_not_delay_w_and_b(wandb_offline):
    from tracelet_mlflow.testing import free_port

    config = {
        "wandb": {"dir": str(wandb_offline)},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}", "request_timeout": 1.0},
        **QUIET,
    }
    exp = tracelet.start_logging("beside", backend=["wandb", "mlflow"], config=config)
    started = time.monotonic()
    for step in range(5_000):
        exp.log_metric("loss", 1.0 / (step + 1), step)
    while exp.delivery["wandb"].pending and time.monotonic() - started < 20:
        time.sleep(0.05)
    caught_up = time.monotonic() - started
    assert exp.delivery["wandb"].pending == 0, "W&B waited for the failing MLflow"
    assert exp.delivery["mlflow"].delivered == 0, "MLflow at a closed port received batches"
    exp.stop()
    assert len(read_back(wandb_offline).metrics(exp.id)) == 5_000
    assert caught_up < 20


SCRIPT = """
import os, sys, time, psutil, tracelet
exp = tracelet.start_logging("exit", backend="wandb", config={{
    "wandb": {{"dir": {dir!r}}}, "track_system": False, "track_env": False, "track_git": False}})
exp.log_metric("loss", 0.0, 0)
deadline = time.monotonic() + 60
while exp.delivery["wandb"].phase.value != "delivering" and time.monotonic() < deadline:
    time.sleep(0.05)  # the W&B run (and wandb-core) starts on the delivery worker
core = [p.pid for p in psutil.Process().children(recursive=True) if "wandb-core" in p.name()]
print(exp.id, *core, flush=True)
for step in range(1, 20_000):  # most still queued when the program ends
    exp.log_metric("loss", float(step), step)
{ending}
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("ending", "status"),
    [("", "finished"), ("sys.exit(3)", "failed"), ("raise KeyboardInterrupt", "killed")],
)
def test_at_exit_the_run_is_delivered_ended_and_wandb_core_gone(wandb_offline, ending, status):
    """A run never stopped is delivered and ended at exit, before W&B's own exit handler
    tears its service down; no wandb-core process outlives the program."""
    script = SCRIPT.format(dir=str(wandb_offline), ending=ending)
    done = run_script(script, timeout=120)
    run_id, *children = done.stdout.split()
    assert children, "wandb-core was not running during the run"
    deadline = time.monotonic() + 10
    import psutil

    while any(psutil.pid_exists(int(pid)) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in children if psutil.pid_exists(int(pid))]
    assert not left, f"processes left behind: {left}"
    back = read_back(wandb_offline)
    assert [v for _, v, _, _ in back.metrics(run_id)] == [float(s) for s in range(20_000)]
    assert back.status(run_id) == status, done.stderr[-2000:]


def test_sync_publishes_a_local_run_into_w_and_b(wandb_offline, capsys):
    from tracelet.cli import main

    with tracelet.start_logging("later", backend="local", config=QUIET) as exp:
        for step in range(100):
            exp.log_metric("loss", float(step), step)
    assert main(["sync", exp.id, "--to", "wandb", "--option", f"dir={wandb_offline}"]) == 0
    back = read_back(wandb_offline)
    assert [v for _, v, _, _ in back.metrics(exp.id)] == [float(s) for s in range(100)]
    assert back.status(exp.id) == "finished"
