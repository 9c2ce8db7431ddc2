"""The ClearML backend against real ClearML offline sessions, read back from their files."""

from __future__ import annotations

import json
import math
import os
import random
import socket
from pathlib import Path

import pytest
from option_forms import options_in_form
from python_script import run_script

import tracelet

pytest.importorskip("clearml")
from tracelet_clearml.names import LARGEST, text_block, text_blocks, title_series
from tracelet_clearml.testing import ClearmlReadBack

QUIET = {"track_system": False, "track_env": False, "track_git": False, "flush_interval": 0.02}


def task_json(offline_dir: Path, run_id: str) -> dict:
    """The latest session's ``task.json`` of the run."""
    (*_, folder) = ClearmlReadBack(offline_dir).sessions(run_id)
    return json.loads((folder / "task.json").read_text("utf-8"))


def test_ten_thousand_points_nan_included_read_back_in_order(clearml_offline):
    rng = random.Random(11)
    names = ["loss", "train/loss", "val/acc/top1", "lr"]
    points = []
    for i in range(10_000):
        step = rng.randrange(400) if i % 3 else i // 4  # shuffled, repeated, increasing
        value = rng.choice([rng.uniform(-5, 5), math.nan, math.inf, -math.inf, 1e-300])
        points.append((names[i % 4], value, step))
    with tracelet.start_logging("points", backend="clearml", config=QUIET) as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
    found = ClearmlReadBack(clearml_offline).metrics(exp.id)
    expected_value = {math.inf: LARGEST, -math.inf: -LARGEST}
    for name in names:
        logged = [
            (LARGEST if math.isnan(v) else expected_value.get(v, v), s)
            for n, v, s in points
            if n == name
        ]
        assert [(v, s) for n, v, s, _ in found if n == name] == logged, name


def test_names_split_into_title_and_series():
    assert title_series("train/loss") == ("train", "loss")
    assert title_series("val/acc/top1") == ("val/acc", "top1")
    assert title_series("loss") == ("loss", "loss")


def test_texts_read_back_exactly_whatever_they_hold():
    texts = [
        ("notes", 3, 'a "quoted" [tracelet] text "x" at step 1 (5 characters):\nnot a header'),
        ('we"ird\\name', -2, ""),
        ("multi", 7, "line 1\nline 2\n"),
    ]
    log = "ClearML's own line\n" + "\n".join(text_block(*t) for t in texts) + "\nmore output"
    assert list(text_blocks(log)) == texts


@pytest.mark.parametrize("form", ["nested", "prefixed", "plain", "yaml"])
def test_options_in_every_documented_form(form, clearml_offline, tmp_path, monkeypatch):
    options = {
        "project_name": f"Tracelet Experiments {form}",
        "task_name": "Training Session",
        "tags": ["pytorch", "experiment"],
        "output_uri": str(tmp_path / "clearml-output"),
    }
    from clearml import Task

    given = {}
    init = Task.init.__func__

    def init_seen(cls, **kwargs):  # offline, ClearML drops output_uri: see what it was given
        given.update(kwargs)
        return init(cls, **kwargs)

    monkeypatch.setattr(Task, "init", classmethod(init_seen))
    config = {**QUIET, **options_in_form(form, "clearml", options)}
    with tracelet.start_logging("tracelet-name", backend="clearml", config=config) as exp:
        exp.log_metric("loss", 0.5, 0)
    task = task_json(clearml_offline, exp.id)
    assert (task["project_name"], task["name"]) == (options["project_name"], "Training Session")
    assert {"pytorch", "experiment"} <= set(task["tags"])
    assert given["output_uri"] == options["output_uri"]


def test_project_and_task_name_default_to_tracelet_s(clearml_offline):
    with tracelet.start_logging(
        "my-experiment", project="vision", backend="clearml", config=QUIET
    ) as exp:
        pass
    task = task_json(clearml_offline, exp.id)
    assert (task["project_name"], task["name"]) == ("vision", "my-experiment")


def test_params_are_updated_never_replaced(clearml_offline):
    with tracelet.start_logging("params", backend="clearml", config=QUIET) as exp:
        exp.log_params({"lr": 0.1, "opt": {"name": "adam"}})
        assert exp.flush(30)
        exp.log_params({"lr": 0.01, "batch": 32})
    params = ClearmlReadBack(clearml_offline).params(exp.id)
    assert params == {"lr": 0.01, "opt/name": "adam", "batch": 32}


UNREACHABLE = """
import json, tracelet
exp = tracelet.start_logging("down", backend=["local", "clearml"], config={
    "track_system": False, "track_env": False, "track_git": False})
for step in range(1000):
    exp.log_metric("loss", float(step), step)
exp.stop()
state = exp.delivery["clearml"]
print(json.dumps([state.delivered, state.error, len(exp.store.metrics(exp.id))]))
"""


@pytest.mark.slow
def test_an_unreachable_server_never_holds_the_run(clearml_offline, tmp_path):
    """A ClearML server nobody answers (ClearML's own retries would hold Task.init for
    hours): logging never waits, stop returns within the default flush timeout, the local
    store has every point and the failure is reported. In a process of its own: ClearML's
    offline and online modes are per process, and switching leaves ClearML's threads of
    earlier tasks retrying."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        address = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k != "CLEARML_OFFLINE_MODE"}
    for variable in ("CLEARML_API_HOST", "CLEARML_WEB_HOST", "CLEARML_FILES_HOST"):
        env[variable] = address
    env.update(CLEARML_API_ACCESS_KEY="key", CLEARML_API_SECRET_KEY="secret")
    done = run_script(UNREACHABLE, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    delivered, error, stored = json.loads(done.stdout.splitlines()[-1])
    assert delivered == 0
    assert error, "no attempt ended: a ClearML request held the delivery worker"
    assert stored == 1000


def test_a_batch_retried_after_a_failure_partway_is_not_duplicated(clearml_offline, tmp_path):
    """The artifact upload fails once after the scalars and the text were reported: the
    retry goes on from the upload, so nothing is reported twice."""
    from clearml import Task

    (tmp_path / "model.bin").write_bytes(b"weights")
    upload = Task.upload_artifact
    failures = []

    def fails_once(self, *args, **kwargs):
        if not failures:
            failures.append(args)
            raise ConnectionError("upload cut off")
        return upload(self, *args, **kwargs)

    Task.upload_artifact = fails_once
    try:
        with tracelet.start_logging("partway", backend="clearml", config=QUIET) as exp:
            exp.log_metric("loss", 1.0, 0)
            exp.log_metric("loss", 2.0, 1)
            exp.log_text("notes", "once", 0)
            exp.log_artifact(tmp_path / "model.bin")
    finally:
        Task.upload_artifact = upload
    back = ClearmlReadBack(clearml_offline)
    assert failures, "the upload never failed"
    assert [v for _, v, _, _ in back.metrics(exp.id)] == [1.0, 2.0]
    assert back.texts(exp.id) == [("notes", 0, "once")]
    assert back.artifacts(exp.id) == {"model.bin": b"weights"}


def test_artifact_versions_keep_their_own_names_and_a_refused_upload_is_retried(
    clearml_offline, tmp_path
):
    from clearml import Task

    upload = Task.upload_artifact
    refused = []

    def refuses_once(self, *args, **kwargs):  # ClearML answers False for a failed upload
        if not refused:
            refused.append(args)
            return False
        return upload(self, *args, **kwargs)

    Task.upload_artifact = refuses_once
    try:
        with tracelet.start_logging("versions", backend="clearml", config=QUIET) as exp:
            for content in (b"first", b"second"):
                (tmp_path / "model.bin").write_bytes(content)
                results = exp.log_artifact(tmp_path / "model.bin")
                assert exp.flush(30)
    finally:
        Task.upload_artifact = upload
    assert refused
    names = [a["key"] for a in task_json(clearml_offline, exp.id)["execution"]["artifacts"]]
    assert sorted(names) == ["model.bin", "model.bin (v2)"]
    assert results["clearml"].uri.endswith("/model.bin (v2)")
    assert ClearmlReadBack(clearml_offline).artifacts(exp.id) == {"model.bin": b"second"}


def test_quiet_settings_hold_even_when_clearml_read_its_config_first(clearml_offline):
    """A program that used ClearML before the run (its SDK settings already read and
    cached) still gets no reporter subprocess."""
    from clearml import Task
    from clearml.storage.cache import CacheManager

    CacheManager.get_cache_manager()  # reads and caches ClearML's SDK settings
    with tracelet.start_logging("cached", backend="clearml", config=QUIET) as exp:
        exp.log_metric("loss", 1.0, 0)
        assert exp.flush(30)
        assert not Task._report_subprocess_enabled
    assert ClearmlReadBack(clearml_offline).status(exp.id) == "finished"


SCRIPT = """
import tracelet
with tracelet.start_logging("defaults", backend="clearml", config={
        "track_system": False, "track_env": False, "track_git": False}) as exp:
    for step in range(100):
        exp.log_metric("loss", float(step), step)
print(exp.id)
"""


@pytest.mark.slow
def test_clearml_s_own_defaults_do_not_hang_the_end_of_a_run(clearml_offline, tmp_path):
    """Nothing set but offline mode (ClearML's defaults otherwise: with them, closing a
    task takes 5-11 s and sometimes hangs about 300 s): the run ends within the default
    flush timeout, everything delivered, the task completed."""
    done = run_script(SCRIPT, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run_id = done.stdout.split()[-1]
    back = ClearmlReadBack(clearml_offline)
    assert [v for _, v, _, _ in back.metrics(run_id)] == [float(s) for s in range(100)]
    assert back.status(run_id) == "finished"


def test_sync_publishes_a_local_run_into_clearml(clearml_offline):
    from tracelet.cli import main

    with tracelet.start_logging("later", backend="local", config=QUIET) as exp:
        for step in range(100):
            exp.log_metric("loss", float(step), step)
    assert main(["sync", exp.id, "--to", "clearml", "--option", "offline=true"]) == 0
    back = ClearmlReadBack(clearml_offline)
    assert [v for _, v, _, _ in back.metrics(exp.id)] == [float(s) for s in range(100)]
    assert back.status(exp.id) == "finished"


CHILD_RUN = """
    import tracelet
    with tracelet.start_logging("child", backend=["clearml"], config={"offline": True}) as exp:
        exp.log_metric("loss", 0.5, 0)
    print(exp.id)
"""


@pytest.mark.parametrize("variable", ["CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID"])
def test_a_run_in_a_process_started_by_a_clearml_process_is_stored(
    clearml_offline, tmp_path, variable
):
    """ClearML marks the environment of a process that ran a task; a child inheriting the
    mark was taken for that task's subprocess and given a stub that stored nothing."""
    env = {**os.environ, variable: f"{os.getppid()}:"}  # (a parent that ran a task)
    done = run_script(CHILD_RUN, timeout=120, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip().splitlines()[-1]
    assert [p[:3] for p in ClearmlReadBack(clearml_offline).metrics(run_id)] == [("loss", 0.5, 0)]
