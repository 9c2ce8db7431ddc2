"""The Aim backend against real Aim repositories and a real ``aim server``, read back with
Aim's own API."""

from __future__ import annotations

import json
import math
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from option_forms import options_in_form
from python_script import run_script

import tracelet
from tracelet.exceptions import ConfigurationError

pytest.importorskip("aim")
from aim import Repo
from aim.storage.context import Context

from tracelet_aim.backend import server_uri
from tracelet_aim.names import name_of, sequence_of
from tracelet_aim.testing import AimReadBack, AimServer

QUIET = {"track_system": False, "track_env": False, "track_git": False, "flush_interval": 0.02}


def aim_config(repo: Path, **options) -> dict:
    return {**QUIET, "aim": {"repo_path": str(repo), **options}}


def test_aim_3_29_refuses_run_name_so_the_backend_names_runs_itself(tmp_path):
    """The published Tracelet passed ``Run(run_name=...)``, which aim 3.29 refuses; the
    backend sets ``run.name`` instead."""
    import aim

    with pytest.raises(TypeError, match="run_name"):
        aim.Run(repo=str(tmp_path / "repo"), run_name="x", system_tracking_interval=None)
    config = aim_config(tmp_path / "repo", run_name="baseline_run")
    with tracelet.start_logging("named", backend="aim", config=config) as exp:
        exp.log_metric("loss", 1.0, 0)
    assert AimReadBack(tmp_path / "repo").run(exp.id).name == "baseline_run"


@pytest.mark.parametrize("form", ["nested", "prefixed", "plain", "yaml"])
def test_options_in_every_documented_form(form, tmp_path):
    options = {
        "repo_path": str(tmp_path / "aim_repo"),
        "experiment_name": f"Tracelet Experiments {form}",
        "run_name": "baseline_run",
        "tags": {"model": "resnet", "dataset": "cifar10"},
    }
    config = {**QUIET, **options_in_form(form, "aim", options)}
    with tracelet.start_logging("forms", backend="aim", config=config) as exp:
        exp.log_metric("loss", 0.5, 0)
    run = AimReadBack(tmp_path / "aim_repo").run(exp.id)
    assert (run.name, run.experiment) == ("baseline_run", f"Tracelet Experiments {form}")
    assert sorted(run.props.tags) == ["dataset:cifar10", "model:resnet"]


def test_defaults_come_from_the_tracelet_run(tmp_path):
    with tracelet.start_logging(
        "run-7", project="vision", backend="aim", config=aim_config(tmp_path / "r")
    ) as exp:
        exp.log_metric("loss", 0.5, 0)
    run = AimReadBack(tmp_path / "r").run(exp.id)
    assert (run.name, run.experiment) == ("run-7", "vision")


def test_without_repo_path_the_nearest_aim_repo_above_is_used(tmp_path, monkeypatch):
    Repo.from_path(str(tmp_path), init=True)
    (tmp_path / "sub" / "dir").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "dir")
    with tracelet.start_logging("nearest", backend="aim", config=QUIET) as exp:
        exp.log_metric("loss", 0.5, 0)
    assert AimReadBack(tmp_path).run_count(exp.id) == 1


def test_remote_uri_forms():
    assert server_uri("http://aim-server:53800") == "aim://aim-server:53800"
    assert server_uri("aim://127.0.0.1:53800/") == "aim://127.0.0.1:53800"
    assert server_uri("aim-server:53800") == "aim://aim-server:53800"
    for bad in ("ftp://host:1", "http://host:1/path", "aim://"):
        with pytest.raises(ConfigurationError, match="aim://host:53800"):
            server_uri(bad)


def test_a_bad_remote_uri_is_refused_when_the_run_starts():
    with pytest.raises(ConfigurationError, match="remote_uri"):
        tracelet.start_logging("bad", backend="aim", config={"aim": {"remote_uri": "ftp://x"}})


def test_a_repository_whose_making_was_cut_short_is_made_again(tmp_path):
    """A training process killed while Aim made its repository leaves ``.aim`` without
    its tables (and without ``VERSION``, which Aim writes last): it is made again."""
    root = tmp_path / "r"
    (root / ".aim").mkdir(parents=True)
    sqlite3.connect(root / ".aim" / "run_metadata.sqlite").close()  # no tables yet
    with tracelet.start_logging("cut short", backend="aim", config=aim_config(root)) as exp:
        exp.log_metric("loss", 0.5, 0)
    readback = AimReadBack(root)
    assert readback.run_count(exp.id) == 1
    assert [(n, v, s) for n, v, s, _ in readback.metrics(exp.id)] == [("loss", 0.5, 0)]


def test_subset_prefixes_become_contexts_and_read_back_exactly(tmp_path):
    names = ["train/loss", "val/loss", "loss", "system/cpu_percent", "train/", "eval/acc/top1"]
    with tracelet.start_logging("ctx", backend="aim", config=aim_config(tmp_path / "r")) as exp:
        for i, name in enumerate(names):
            exp.log_metric(name, float(i), 0)
    run = AimReadBack(tmp_path / "r").run(exp.id)
    assert run.get_metric("loss", Context({"subset": "train"})).values.values_list() == [0.0]
    assert run.get_metric("loss", Context({"subset": "val"})).values.values_list() == [1.0]
    assert run.get_metric("system/cpu_percent", Context({})).values.values_list() == [3.0]
    assert run.get_metric("acc/top1", Context({"subset": "eval"})).values.values_list() == [5.0]
    assert all(name_of(*sequence_of(name)) == name for name in names)
    found = {n: v for n, v, _, _ in AimReadBack(tmp_path / "r").metrics(exp.id)}
    assert found == {name: float(i) for i, name in enumerate(names)}


def test_ten_thousand_points_out_of_order_and_repeated_read_back_point_for_point(tmp_path):
    rng = random.Random(5)
    points = []
    for i in range(10_000):
        step = rng.randrange(300) if i % 3 else i // 4  # shuffled, repeated, increasing
        value = rng.choice([rng.uniform(-5, 5), math.nan, math.inf, -math.inf, 1e-300])
        points.append((("loss", "train/loss", "lr")[i % 3], value, step))
    with tracelet.start_logging("pts", backend="aim", config=aim_config(tmp_path / "r")) as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
    found = AimReadBack(tmp_path / "r").metrics(exp.id)
    assert sorted((n, s, repr(v)) for n, v, s, _ in found) == sorted(
        (n, s, repr(v)) for n, v, s in points
    )
    run = AimReadBack(tmp_path / "r").run(exp.id)
    first = {}
    for name, value, step in points:
        if name == "lr":
            first.setdefault(step, value)
    lr = run.get_metric("lr", Context({}))
    steps, (values, _, _) = lr.data.items_list()
    assert {s: repr(v) for s, v in zip(steps, values, strict=True)} == {
        s: repr(v) for s, v in first.items()
    }


def test_numpy_params_and_texts_images_histograms_artifacts(tmp_path):
    import numpy

    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    config = aim_config(tmp_path / "r")
    with tracelet.start_logging("all", backend="aim", config=config) as exp:
        exp.log_params({"lr": numpy.float32(0.5), "layers": numpy.int64(3), "nested": {"a": 1}})
        exp.log_text("notes", "first", 0)
        exp.log_text("notes", "again at step 0", 0)
        exp.log_histogram("weights", numpy.arange(100.0), 0, bins=10)
        results = exp.log_artifact(model, "checkpoints/model.bin")
        exp.log_artifact(model, "checkpoints/model.bin")
    read = AimReadBack(tmp_path / "r")
    assert read.params(exp.id) == {"lr": 0.5, "layers": 3, "nested/a": 1}
    assert sorted(read.texts(exp.id)) == [("notes", 0, "again at step 0"), ("notes", 0, "first")]
    ((name, step, counts, edges),) = read.histograms(exp.id)
    assert (name, step, counts, edges[0], edges[-1]) == ("weights", 0, [10.0] * 10, 0.0, 99.0)
    uri = results["aim"].uri
    assert (
        uri == (tmp_path / "r" / ".aim" / "artifacts").as_uri() + f"/{exp.id}/checkpoints/model.bin"
    )
    assert Path(uri.removeprefix("file://")).read_bytes() == model.read_bytes()
    assert set(read.run(exp.id).artifacts) == {
        "checkpoints/model.bin",
        "checkpoints/model.bin (v2)",
    }


def _aim_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if "_stat_collector" in t.name}


def test_aims_background_threads_stay_off_unless_asked(tmp_path):
    config = aim_config(tmp_path / "r")
    with tracelet.start_logging("quiet", backend="aim", config=config) as exp:
        exp.log_metric("loss", 1.0, 0)
        assert exp.flush(30)
        assert not _aim_threads()  # Aim's system tracking
    assert AimReadBack(tmp_path / "r").run(exp.id).get_terminal_logs() is None
    config = aim_config(tmp_path / "r", system_tracking_interval=1.0, capture_terminal_logs=True)
    with tracelet.start_logging("asked", backend="aim", config=config) as exp:
        exp.log_metric("loss", 1.0, 0)
        assert exp.flush(30)
        assert _aim_threads()
        print("captured by Aim", flush=True)
        time.sleep(1.5)
    assert AimReadBack(tmp_path / "r").run(exp.id).get_terminal_logs() is not None


def backend_for(repo: Path):
    """The backend as a delivery builds it, started on a new Tracelet run ``r1``."""
    from tracelet.plugins import RunInfo
    from tracelet_aim.backend import AimBackend

    backend = AimBackend()
    backend.initialize(
        {"repo_path": str(repo), "log_system_params": False, "capture_terminal_logs": False}
    )
    backend.start()
    backend.start_run(RunInfo("r1", "retried", "p", 0.0), resumed=False)
    return backend


def test_a_batch_cut_off_halfway_and_delivered_again_lands_once(tmp_path):
    from tracelet.plugins import Artifact, Batch, RunStatus, Text

    backend = backend_for(tmp_path / "r")
    t = 1_800_000_000.0
    backend.log_batch(Batch("r1", 1, metrics=[("loss", float(s), s, t + s) for s in range(5)]))
    points = [("loss", 9.0, 2, t + 10), ("loss", 9.0, 2, t + 11), ("loss", 7.0, 1, t + 12)]
    texts = [Text("notes", "a", 0, t), Text("notes", "b", 0, t)]  # same step, same time
    missing = tmp_path / "model.bin"
    artifact = Artifact("model", "model.bin", str(missing), 3, "model")
    batch = Batch("r1", 2, metrics=points, texts=texts, artifacts=[artifact])
    with pytest.raises(Exception, match=r"model\.bin"):
        backend.log_batch(batch)  # cut off after its points and texts
    missing.write_bytes(b"abc")
    backend.log_batch(batch)
    backend.log_batch(batch)
    backend.finish_run(RunStatus.FINISHED)
    read = AimReadBack(tmp_path / "r")
    expected = [(float(s), s) for s in range(5)] + [(9.0, 2), (9.0, 2), (7.0, 1)]
    assert sorted((v, s) for _, v, s, _ in read.metrics("r1")) == sorted(expected)
    assert sorted(read.texts("r1")) == [("notes", 0, "a"), ("notes", 0, "b")]
    assert read.artifacts("r1") == {"model.bin": b"abc"}


def test_a_value_aim_refuses_is_skipped_and_the_rest_arrives(tmp_path, caplog):
    """Aim keeps one type per sequence: a text named like a metric is refused, once."""
    config = aim_config(tmp_path / "r")
    with tracelet.start_logging("types", backend="aim", config=config) as exp:
        for step in range(50):
            exp.log_metric("loss", float(step), step)
        assert exp.flush(30)
        exp.log_text("loss", "a text named like the metric", 50)
        exp.log_text("loss", "and another", 51)
        exp.log_metric("loss", 50.0, 50)
    read = AimReadBack(tmp_path / "r")
    assert sorted(s for _, _, s, _ in read.metrics(exp.id)) == list(range(51))
    assert read.texts(exp.id) == []
    assert sum("Aim refuses 'loss'" in r.getMessage() for r in caplog.records) == 1
    assert exp.delivery["aim"].pending == 0


def test_closed_runs_are_indexed_for_aims_queries_at_once(tmp_path):
    with tracelet.start_logging("idx", backend="aim", config=aim_config(tmp_path / "r")) as exp:
        exp.log_metric("loss", 1.0, 0)
    repo = Repo.from_path(str(tmp_path / "r"))
    found = list(repo.query_runs('run.name == "idx"', report_mode=0).iter_runs())
    assert len(found) == 1
    run = found[0].run
    assert run.end_time is not None
    assert not run.active
    assert run.get("tracelet")["status"] == "finished"


def test_a_crashed_run_is_recovered_and_resumed_as_the_same_aim_run(tmp_path):
    repo = tmp_path / "r"
    crash = (
        "import os, tracelet\n"
        f"exp = tracelet.start_logging('crash', backend='aim', config={aim_config(repo)!r})\n"
        "for step in range(50):\n"
        "    exp.log_metric('loss', float(step), step)\n"
        "exp.flush()\n"
        "print(exp.id, flush=True)\n"
        "os._exit(3)\n"
    )
    result = run_script(crash, timeout=120)
    run_id = result.stdout.split()[-1]
    read = AimReadBack(repo)
    assert read.status(run_id) == "running"  # indexed when it started, never closed
    again = tracelet.Experiment(
        "crash",
        backend="aim",
        options=QUIET,
        backend_options={"aim": {"repo_path": str(repo)}},
        run_id=run_id,
    ).start()
    for step in range(50, 80):
        again.log_metric("loss", float(step), step)
    again.stop()
    assert read.run_count(run_id) == 1
    assert sorted(s for n, _, s, _ in read.metrics(run_id)) == list(range(80))
    assert read.status(run_id) == "finished"


def test_sync_publishes_a_local_run_to_aim(tmp_path):
    from tracelet.cli import main

    with tracelet.start_logging("later", backend="local", config=QUIET) as exp:
        for step in range(100):
            exp.log_metric("train/loss", 1.0 / (step + 1), step)
        exp.log_params({"lr": 0.1})
    repo = tmp_path / "published"
    code = main(["sync", exp.id, "--to", "aim", "--option", f"repo_path={repo}"])
    assert code == 0
    read = AimReadBack(repo)
    assert len(read.metrics(exp.id)) == 100
    assert read.params(exp.id)["lr"] == 0.1
    assert read.status(exp.id) == "finished"


OUTAGE = """
import json, sys, tracelet
from pathlib import Path
from tracelet_aim.testing import AimReadBack, AimServer

server = AimServer(Path(sys.argv[1]))
server.start()
try:
    config = {"aim": {"remote_uri": server.uri}}  # every other setting as a user gets it
    with tracelet.start_logging("outage", backend="aim", config=config) as exp:
        for step in range(5_000):
            exp.log_metric("loss", float(step), step)
            if step == 2_000:
                exp.flush()
                server.stop()
            if step == 3_000:
                server.start()
    read = AimReadBack(server.uri)
    steps = sorted(s for name, _, s, _ in read.metrics(exp.id) if name == "loss")
    print(json.dumps({"steps": steps, "status": read.status(exp.id)}))
    read.close()
finally:
    server.stop()
"""


@pytest.mark.slow
@pytest.mark.collectors
def test_a_server_stopped_mid_run_and_restarted_loses_nothing(tmp_path):
    """In a process of its own, as a user's would be: after reconnecting, Aim's finalizers
    release some server resources twice and report it as ignored exceptions."""
    result = run_script(OUTAGE, timeout=240, args=(str(tmp_path / "server"),))
    found = json.loads(result.stdout.splitlines()[-1])
    assert found == {"steps": list(range(5_000)), "status": "finished"}


@pytest.mark.slow
def test_an_unreachable_server_never_holds_the_program(tmp_path):
    """Nothing listens: the run goes on, stop returns within the flush timeout with one
    warning, and the program exits at once (Aim itself would wait forever)."""
    from tracelet.testing.servers import free_port

    script = (
        "import time, tracelet\n"
        f"config = {{**{QUIET!r}, 'flush_timeout': 3, 'aim': {{'remote_uri': 'aim://127.0.0.1:{free_port()}'}}}}\n"
        "t = time.monotonic()\n"
        "with tracelet.start_logging('down', backend=['local', 'aim'], config=config) as exp:\n"
        "    for step in range(1000):\n"
        "        exp.log_metric('loss', float(step), step)\n"
        "print('stopped after', round(time.monotonic() - t, 1), flush=True)\n"
    )
    result = run_script(script, timeout=60)
    seconds = float(result.stdout.split()[-1])
    assert seconds < 10
    assert result.stderr.count("backend 'aim' is unreachable") == 1


FROZEN = """
import os, signal, sys, time, tracelet

uri, group = sys.argv[1], int(sys.argv[2])
config = {**QUIET, "flush_timeout": 3, "aim": {"remote_uri": uri}}
with tracelet.start_logging("frozen", backend=["local", "aim"], config=config) as exp:
    for step in range(200):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(60)
    os.killpg(group, signal.SIGSTOP)  # the server stops answering, connections stay open
    for step in range(200, 400):
        exp.log_metric("loss", float(step), step)
    began = time.monotonic()
print("stopped after", round(time.monotonic() - began, 1), flush=True)
"""


@pytest.mark.slow
def test_a_server_that_stops_answering_never_holds_the_program(tmp_path):
    """Aim itself would wait forever, at stop and again at exit."""
    import os
    import signal

    server = AimServer(tmp_path / "server")
    server.start()
    group = os.getpgid(server.process.pid)
    try:
        began = time.monotonic()
        script = f"QUIET = {QUIET!r}\n" + FROZEN
        result = run_script(script, timeout=120, args=(server.uri, str(group)))
        took = time.monotonic() - began
    finally:
        os.killpg(group, signal.SIGCONT)
        server.stop()
    assert float(result.stdout.split()[-1]) < 10, result.stderr[-2000:]
    assert took < 60
