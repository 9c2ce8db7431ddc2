"""The MLflow backend against real MLflow: a SQLite tracking URI and a real ``mlflow server``."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from option_forms import options_in_form

import tracelet
from tracelet.core.registry import default_registry

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

QUIET = {"track_system": False, "track_env": False, "track_git": False, "flush_interval": 0.02}


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    """One SQLite tracking database for the module (creating its schema takes a second)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-sqlite') / 'mlflow.db'}"


def mlflow_run(uri: str, tracelet_run_id: str):
    """The MLflow run carrying ``tracelet.run_id``."""
    client = MlflowClient(uri)
    found = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{tracelet_run_id}'",
    )
    assert len(found) == 1, f"{len(found)} MLflow runs for one Tracelet run"
    return client, found[0]


def history(client, run, name: str) -> list[tuple[int, float, int]]:
    return sorted(
        (m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, name)
    )


@pytest.mark.parametrize(
    "form",
    ["nested", "prefixed", "plain"],
)
def test_options_in_every_documented_form(form, sqlite_uri, tmp_path):
    options = {
        "tracking_uri": sqlite_uri,
        "experiment_name": f"exp-{form}",
        "run_name": "r1",
        "tags": {"team": "ml", "version": "v1.0"},
    }
    config = options_in_form(form, "mlflow", options)
    with tracelet.start_logging(
        "ignored-name", project="p", backend="mlflow", config={**config, **QUIET}
    ) as exp:
        exp.log_metric("loss", 0.5, 1)
    client, run = mlflow_run(sqlite_uri, exp.id)
    assert client.get_experiment(run.info.experiment_id).name == f"exp-{form}"
    assert run.info.run_name == "r1"
    assert run.data.tags["team"] == "ml"
    assert run.info.status == "FINISHED"
    assert [(s, v) for s, v, _ in history(client, run, "loss")] == [(1, 0.5)]


def test_project_and_name_by_default_and_environment(sqlite_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    with tracelet.start_logging(
        "my-run", project="my-project", backend="mlflow", config=QUIET
    ) as a:
        a.log_metric("m", 1.0, 0)
    client, run = mlflow_run(sqlite_uri, a.id)
    assert client.get_experiment(run.info.experiment_id).name == "my-project"
    assert run.info.run_name == "my-run"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-environment")
    with tracelet.start_logging("other", project="my-project", backend="mlflow", config=QUIET) as b:
        b.log_metric("m", 1.0, 0)
    client, run = mlflow_run(sqlite_uri, b.id)
    assert client.get_experiment(run.info.experiment_id).name == "from-environment"


def test_tracelet_yaml_section(sqlite_uri, tmp_path):
    (tmp_path / "tracelet.yaml").write_text(
        f"backend: mlflow\nproject: from-file\nmlflow:\n  tracking_uri: {sqlite_uri}\n"
        "  experiment_name: Yaml Experiments\n"
    )
    with tracelet.start_logging("yaml-run", config=QUIET) as exp:
        exp.log_metric("m", 1.0, 0)
    client, run = mlflow_run(sqlite_uri, exp.id)
    assert client.get_experiment(run.info.experiment_id).name == "Yaml Experiments"


def test_bad_options_fail_at_start():
    with pytest.raises(tracelet.ConfigurationError, match="unknown setting 'trackin_uri'"):
        tracelet.start_logging("x", backend="mlflow", config={"trackin_uri": "x"})
    with pytest.raises(
        tracelet.ConfigurationError, match="mlflow option 'tracking_uri' expects str, got int 5"
    ):
        tracelet.start_logging("x", backend="mlflow", config={"mlflow": {"tracking_uri": 5}})


def test_everything_arrives_with_mlflow_semantics(sqlite_uri, tmp_path, read_store):
    (tmp_path / "model.pt").write_bytes(b"weights")
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "all"}, **QUIET}
    with tracelet.start_logging("everything", backend=["local", "mlflow"], config=config) as e:
        e.log_params({"optimizer": {"lr": 1e-3, "name": "adam"}, "notes": "x" * 7000})
        assert e.flush(timeout=60)
        e.log_params({"optimizer": {"lr": 2e-3}})  # MLflow never changes a param
        e.add_tags({"stage": "dev"})
        for step in range(1500):
            e.log_metric("loss@train", 1.0 / (step + 1), step)
        e.log_metric("weird", math.nan, 0)
        e.log_metric("weird", math.inf, 1)
        e.log_text("summary", "it worked", 7)
        e.log_image("sample", np.full((4, 4, 3), 200, dtype=np.uint8), 3)
        e.log_artifact("model.pt", "checkpoints/model.pt")
    client, run = mlflow_run(sqlite_uri, e.id)
    params = run.data.params
    assert params["optimizer/lr"] == "0.001"
    assert run.data.tags["tracelet.param.optimizer/lr"] == "0.002"
    assert len(params["notes"]) == 6000
    assert params["notes"].endswith("the full value is in the local store]")
    assert read_store().params(e.id)["notes"] == "x" * 7000
    assert run.data.tags["stage"] == "dev"
    assert run.data.tags["tracelet.name.loss_train"] == "loss@train"
    points = history(client, run, "loss_train")
    stored = read_store().metrics(e.id, "loss@train")
    assert [(s, v, t) for s, v, t in points] == [(p[2], p[1], round(p[3] * 1000)) for p in stored]
    weird = [v for _, v, _ in history(client, run, "weird")]
    assert math.isnan(weird[0])
    assert weird[1] == 1.7976931348623157e308
    run_id = run.info.run_id
    assert (
        Path(client.download_artifacts(run_id, "checkpoints/model.pt", tmp_path / "d")).read_bytes()
        == b"weights"
    )
    text = client.download_artifacts(run_id, "tracelet/texts/summary/step_7.txt", tmp_path / "t")
    assert Path(text).read_text() == "it worked"
    image = client.download_artifacts(run_id, "tracelet/images/sample/step_3.png", tmp_path / "i")
    assert Path(image).read_bytes() == Path(read_store().images(e.id)[0].path).read_bytes()


@pytest.mark.parametrize(
    ("ending", "expected"),
    [
        ("finish", "FINISHED"),
        ("error", "FAILED"),
        ("stop-failed", "FAILED"),
        ("interrupt", "KILLED"),
    ],
)
def test_run_status(ending, expected, sqlite_uri):
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "status"}, **QUIET}
    exp = tracelet.start_logging(f"status-{ending}", backend="mlflow", config=config)
    exp.log_metric("m", 1.0, 0)
    if ending == "finish":
        exp.stop()
    elif ending == "stop-failed":
        exp.stop(status="failed")
    else:
        error = ValueError if ending == "error" else KeyboardInterrupt
        with pytest.raises(error), exp:
            raise error
    _, run = mlflow_run(sqlite_uri, exp.id)
    assert run.info.status == expected


def test_resume_continues_the_same_mlflow_run(sqlite_uri):
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "resume"}, **QUIET}
    settings = tracelet.TraceletSettings.load({**QUIET, "backend": "mlflow"})
    first = tracelet.Experiment(
        "resumable", settings=settings, backend_options={"mlflow": config["mlflow"]}
    ).start()
    first.log_metric("loss", 1.0, 0)
    first.stop(status="failed")
    second = tracelet.Experiment(
        "resumable",
        settings=settings,
        run_id=first.id,
        backend_options={"mlflow": config["mlflow"]},
    ).start()
    second.log_metric("loss", 0.5, 1)
    second.stop()
    client, run = mlflow_run(sqlite_uri, first.id)
    assert [(s, v) for s, v, _ in history(client, run, "loss")] == [(0, 1.0), (1, 0.5)]
    assert run.info.status == "FINISHED"


def test_a_replayed_batch_is_not_duplicated(sqlite_uri, read_store):
    from tracelet.records import Batch, RunInfo

    backend = default_registry().build_backend(
        "mlflow", {"tracking_uri": sqlite_uri, "experiment_name": "replay"}
    )
    backend.start()
    info = RunInfo("replayrun0000000000000000000000a", "replay", "p", 1000.0)
    backend.start_run(info, False)
    batch = Batch(info.id, 1, [("loss", 0.5, 0, 1000.0), ("loss", 0.25, 1, 1000.5)])
    backend.log_batch(batch)
    again = default_registry().build_backend(
        "mlflow", {"tracking_uri": sqlite_uri, "experiment_name": "replay"}
    )  # a new process replaying from the journal
    again.start()
    again.start_run(info, True)
    again.log_batch(batch)
    client, run = mlflow_run(sqlite_uri, info.id)
    assert [(s, v) for s, v, _ in history(client, run, "loss")] == [(0, 0.5), (1, 0.25)]


def test_credentials_in_the_tracking_uri_never_leak(mlflow_server, caplog, read_store):
    secret_uri = mlflow_server.url.replace("http://", "http://alice:hunter2@")
    config = {"mlflow": {"tracking_uri": secret_uri, "experiment_name": "secrets"}, **QUIET}
    with (
        caplog.at_level(logging.DEBUG, "tracelet"),
        tracelet.start_logging("secret-run", backend=["local", "mlflow"], config=config) as e,
    ):
        e.log_metric("m", 1.0, 0)
    _, run = mlflow_run(mlflow_server.url, e.id)
    everything = repr(run.data.params) + repr(run.data.tags) + caplog.text
    everything += repr(read_store().get_run(e.id).config) + repr(read_store().params(e.id))
    assert "hunter2" not in everything
    assert run.info.status == "FINISHED"


def test_artifact_results_name_the_mlflow_run(sqlite_uri, tmp_path):
    (tmp_path / "f.bin").write_bytes(b"1")
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "uris"}, **QUIET}
    with tracelet.start_logging("uris", backend=["local", "mlflow"], config=config) as exp:
        exp.log_metric("m", 1.0, 0)
        assert exp.flush(timeout=30)
        results = exp.log_artifact("f.bin")
    _, run = mlflow_run(sqlite_uri, exp.id)
    assert results["mlflow"].uri == f"runs:/{run.info.run_id}/f.bin"


@pytest.fixture(params=["sqlite", "server"])
def any_tracking_uri(request, sqlite_uri) -> str:
    """A SQLite tracking database, then a real ``mlflow server``."""
    if request.param == "sqlite":
        return sqlite_uri
    return request.getfixturevalue("mlflow_server").url


def download(uri: str, tracking_uri: str, folder: Path) -> bytes:
    """The artifact at ``uri``, fetched by MLflow itself."""
    from mlflow.artifacts import download_artifacts

    local = download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri)
    return Path(local).read_bytes()


def test_an_artifact_uri_is_one_mlflow_downloads(any_tracking_uri, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    options = {"tracking_uri": any_tracking_uri, "experiment_name": f"download-{tmp_path.name}"}
    with tracelet.start_logging("dl", backend="mlflow", config={"mlflow": options, **QUIET}) as e:
        e.log_metric("m", 1.0, 0)
        assert e.flush(timeout=30)  # the MLflow run exists
        uri = e.log_artifact("model.pt", "checkpoints/model.pt")["mlflow"].uri
    _, run = mlflow_run(any_tracking_uri, e.id)
    assert uri == f"runs:/{run.info.run_id}/checkpoints/model.pt"
    assert download(uri, any_tracking_uri, tmp_path / "d") == b"weights"


def test_a_second_version_of_an_artifact_path_keeps_the_first(
    any_tracking_uri, tmp_path, read_store
):
    model = tmp_path / "model.pt"
    options = {"tracking_uri": any_tracking_uri, "experiment_name": f"versions-{tmp_path.name}"}
    with tracelet.start_logging("v", backend="mlflow", config={"mlflow": options, **QUIET}) as e:
        e.log_metric("m", 1.0, 0)
        assert e.flush(timeout=30)  # the MLflow run exists
        uris = []
        for weights in (b"epoch 1", b"epoch 2", b"epoch 3"):
            model.write_bytes(weights)
            uris.append(e.log_artifact(model, "checkpoints/model.pt")["mlflow"].uri)
        (tmp_path / "other").mkdir()  # another path's second version, in the same batch
        (tmp_path / "other" / "model.pt").write_bytes(b"other 1")
        e.log_artifact(tmp_path / "other" / "model.pt", "other/model.pt")
        (tmp_path / "other" / "model.pt").write_bytes(b"other 2")
        e.log_artifact(tmp_path / "other" / "model.pt", "other/model.pt")
    client, run = mlflow_run(any_tracking_uri, e.id)
    mlflow_id = run.info.run_id
    assert uris == [
        f"runs:/{mlflow_id}/checkpoints/model.pt",
        f"runs:/{mlflow_id}/checkpoints/model.pt (v2)",
        f"runs:/{mlflow_id}/checkpoints/model.pt (v3)",
    ]
    got = [download(uri, any_tracking_uri, tmp_path / f"d{i}") for i, uri in enumerate(uris)]
    assert got == [b"epoch 1", b"epoch 2", b"epoch 3"]
    listed = sorted(f.path for f in client.list_artifacts(mlflow_id, "checkpoints"))
    assert listed == [
        "checkpoints/model.pt",
        "checkpoints/model.pt (v2)",
        "checkpoints/model.pt (v3)",
    ]
    other = f"runs:/{mlflow_id}/other/model.pt"
    assert download(other, any_tracking_uri, tmp_path / "o1") == b"other 1"
    assert download(f"{other} (v2)", any_tracking_uri, tmp_path / "o2") == b"other 2"
    stored = {(a.artifact_path, a.version): a.path for a in read_store().artifacts(e.id)}
    journal = [Path(stored["checkpoints/model.pt", v]).read_bytes() for v in (1, 2, 3)]
    assert journal == [b"epoch 1", b"epoch 2", b"epoch 3"]  # the links changed no copy


def test_a_bundles_second_version_is_its_own_folder(any_tracking_uri, tmp_path):
    from tracelet import TraceletArtifact

    options = {"tracking_uri": any_tracking_uri, "experiment_name": f"bundles-{tmp_path.name}"}
    weights = tmp_path / "weights.bin"
    with tracelet.start_logging("b", backend="mlflow", config={"mlflow": options, **QUIET}) as e:
        e.log_metric("m", 1.0, 0)
        assert e.flush(timeout=30)  # the MLflow run exists
        uris = []
        for content in (b"one", b"two"):
            weights.write_bytes(content)
            bundle = TraceletArtifact("model", "model").add_file(str(weights), "w/weights.bin")
            uris.append(e.log_artifact(bundle)["mlflow"].uri)
    _, run = mlflow_run(any_tracking_uri, e.id)
    assert uris == [f"runs:/{run.info.run_id}/model", f"runs:/{run.info.run_id}/model (v2)"]
    for uri, content in zip(uris, (b"one", b"two"), strict=True):
        folder = Path(download_folder(uri, any_tracking_uri, tmp_path / f"d{content.decode()}"))
        assert (folder / "w" / "weights.bin").read_bytes() == content
        assert (folder / "tracelet-artifact.json").exists()


def download_folder(uri: str, tracking_uri: str, folder: Path) -> str:
    """The artifact folder at ``uri``, fetched by MLflow itself."""
    from mlflow.artifacts import download_artifacts

    return download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking_uri)


def test_an_artifact_logged_before_the_mlflow_run_exists_resolves_later(
    sqlite_uri, tmp_path, monkeypatch
):
    from tracelet_mlflow.backend import MlflowBackend
    from tracelet_mlflow.uris import resolve_artifact_uri

    gate = threading.Event()
    start_run = MlflowBackend.start_run

    def slow_start_run(self, run, resumed):
        assert gate.wait(30)
        return start_run(self, run, resumed)

    monkeypatch.setattr(MlflowBackend, "start_run", slow_start_run)
    (tmp_path / "f.bin").write_bytes(b"early")
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "exp/with slashes"}}
    with tracelet.start_logging("early", backend="mlflow", config={**config, **QUIET}) as e:
        uri = e.log_artifact("f.bin")["mlflow"].uri
        assert uri == f"tracelet-mlflow:/exp%2Fwith%20slashes/{e.id}/f.bin"
        with pytest.raises(LookupError, match=f"MLflow has no run for Tracelet run {e.id}"):
            resolve_artifact_uri(uri, sqlite_uri)
        gate.set()
    _, run = mlflow_run(sqlite_uri, e.id)
    resolved = resolve_artifact_uri(uri, sqlite_uri)
    assert resolved == f"runs:/{run.info.run_id}/f.bin"
    assert resolve_artifact_uri(resolved, sqlite_uri) == resolved
    with pytest.raises(ValueError, match="not an artifact URI of Tracelet's MLflow backend"):
        resolve_artifact_uri("tracelet-mlflow:/exp/it's/f.bin", sqlite_uri)
    assert download(resolved, sqlite_uri, tmp_path / "d") == b"early"


def test_every_name_becomes_a_distinct_legal_mlflow_name():
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    from tracelet_mlflow.names import legal_name, name_map

    odd = [
        "val/loss/",
        "a//b",
        "a/./b",
        "./x",
        ".",
        "x/..",
        "loss@train",
        "a..b",
        "/abs",
        "x" * 300,
        "température",
        "",
        "ok name:/.-_",
    ]
    for name in odd:
        _validate_metric_name(legal_name(name))
        _validate_param_name(legal_name(name))
    names = name_map()
    mapped = [names(n) for n in ("acc@top1", "acc#top1", "acc_top1")]
    assert len(set(mapped)) == 3
    assert names("acc@top1") == mapped[0], "chosen once"


def test_path_like_and_colliding_names_all_arrive(sqlite_uri, read_store):
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "odd-names"}, **QUIET}
    with tracelet.start_logging("odd", backend=["local", "mlflow"], config=config) as exp:
        for step in range(3):
            for name in ("val/loss/", "acc@top1", "acc#top1", "good"):
                exp.log_metric(name, float(step), step)
        exp.log_params({"lr@enc": 1, "lr#enc": 2})
    client, run = mlflow_run(sqlite_uri, exp.id)
    originals = {
        v: k.removeprefix("tracelet.name.")
        for k, v in run.data.tags.items()
        if k.startswith("tracelet.name.")
    }
    for name in ("val/loss/", "acc@top1", "acc#top1"):
        assert [v for _, v, _ in history(client, run, originals[name])] == [0.0, 1.0, 2.0]
    assert sorted(run.data.params.values()) == ["1", "2"]
    assert exp.store.undelivered(exp.id) == {}


def test_a_refused_batch_is_skipped_and_later_ones_arrive(sqlite_uri, monkeypatch):
    from mlflow.exceptions import MlflowException

    real = MlflowClient.log_batch

    def picky(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if any(m.key == "refused" for m in metrics):
            raise MlflowException.invalid_parameter_value("no such name")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", picky)
    config = {"mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "refused"}, **QUIET}
    exp = tracelet.start_logging("refused", backend="mlflow", config=config)
    exp.log_metric("refused", 1.0, 0)
    exp.flush(timeout=30)
    exp.log_metric("after", 2.0, 1)
    exp.stop()
    client, run = mlflow_run(sqlite_uri, exp.id)
    assert [v for _, v, _ in history(client, run, "after")] == [2.0]
    assert run.info.status == "FINISHED"
    assert exp.store.undelivered(exp.id) == {}


def test_name_mapping_tags_survive_a_failed_call(sqlite_uri):
    from tracelet.records import Batch, RunInfo

    backend = default_registry().build_backend(
        "mlflow", {"tracking_uri": sqlite_uri, "experiment_name": "flaky-tags"}
    )
    backend.start()
    info = RunInfo("flakytags000000000000000000000aa", "flaky", "p", 1000.0)
    backend.start_run(info, False)
    real, calls = backend.client.log_batch, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("blip")
        return real(*args, **kwargs)

    backend.client.log_batch = flaky
    batch = Batch(info.id, 1, [("loss@train", 1.0, 0, 1000.0)])
    with pytest.raises(ConnectionError):
        backend.log_batch(batch)
    backend.log_batch(batch)
    _, run = mlflow_run(sqlite_uri, info.id)
    assert run.data.tags["tracelet.name.loss_train"] == "loss@train"


def test_a_final_status_that_failed_is_delivered_by_sync(sqlite_uri, monkeypatch, capsys):
    from tracelet.cli import main as cli
    from tracelet_mlflow.backend import MlflowBackend

    config = {
        "mlflow": {"tracking_uri": sqlite_uri, "experiment_name": "late-status"},
        **QUIET,
        "flush_timeout": 1,
    }
    real_finish = MlflowBackend.finish_run
    monkeypatch.setattr(MlflowBackend, "finish_run", lambda self, status: 1 / 0)
    exp = tracelet.start_logging("late-status", backend="mlflow", config=config)
    exp.log_metric("m", 1.0, 0)
    exp.stop()
    _, run = mlflow_run(sqlite_uri, exp.id)
    assert run.info.status == "RUNNING"
    monkeypatch.setattr(MlflowBackend, "finish_run", real_finish)
    assert cli(["sync"]) == 0
    _, run = mlflow_run(sqlite_uri, exp.id)
    assert run.info.status == "FINISHED"
    ended = exp.store.get_run(exp.id).ended_at
    assert abs(run.info.end_time / 1000 - ended) < 0.01, "the run's own end time"
    capsys.readouterr()
    assert cli(["sync"]) == 0
    assert "nothing to sync" in capsys.readouterr().out


def test_a_stored_file_deleted_before_sync_is_skipped_and_the_rest_delivered(
    sqlite_uri, tmp_path, capsys, monkeypatch
):
    from tracelet.cli import main as cli
    from tracelet_mlflow.backend import MlflowBackend

    for name in ("model.bin", "notes.txt"):
        (tmp_path / name).write_text(name)
    real_log_batch = MlflowBackend.log_batch
    monkeypatch.setattr(MlflowBackend, "log_batch", lambda self, batch: 1 / 0)  # down
    config = {"mlflow": {"tracking_uri": sqlite_uri}, **QUIET, "flush_timeout": 1}
    exp = tracelet.start_logging("lost file", backend="mlflow", config=config)
    exp.log_metric("loss", 0.5, 0)
    exp.log_artifact(tmp_path / "model.bin")
    exp.log_artifact(tmp_path / "notes.txt")
    exp.stop()
    (gone,) = [a.path for a in exp.store.artifacts(exp.id) if a.artifact_path == "model.bin"]
    os.remove(gone)  # deleted by hand, or a store copied without its files/
    monkeypatch.setattr(MlflowBackend, "log_batch", real_log_batch)
    started = time.monotonic()
    assert cli(["sync"]) == 0
    assert time.monotonic() - started < 20, "no retrying a file that cannot come back"
    client, run = mlflow_run(sqlite_uri, exp.id)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.5]
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["notes.txt"]
    (report,) = [line for line in capsys.readouterr().out.splitlines() if "missing" in line]
    assert gone in report, "one line, naming the file"
    assert exp.store.undelivered(exp.id) == {}


def test_a_server_that_never_answers_holds_a_request_at_most_request_timeout():
    from mlflow.utils import rest_utils

    from tracelet.records import RunInfo

    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        options = {"tracking_uri": url, "request_timeout": 1}
        backend = default_registry().build_backend("mlflow", options)
        backend.start()
        started = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timed? ?out"):
            backend.start_run(RunInfo("silent0000000000000000000000000a", "s", "p", 0.0), False)
        took = time.monotonic() - started
    assert took < 5, f"one request held the sink {took:.1f} s (MLflow's default: minutes)"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ, "the user's environment is untouched"
    assert rest_utils.MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 120, "other threads: MLflow's own"
    assert rest_utils.MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 7


def test_an_unreachable_server_is_reported_during_the_run(caplog):
    from tracelet_mlflow.testing import free_port

    config = {"tracking_uri": f"http://127.0.0.1:{free_port()}", "flush_timeout": 0.5}
    with caplog.at_level(logging.WARNING, "tracelet"):
        exp = tracelet.start_logging("nobody home", backend=["local", "mlflow"], config=config)
        exp.log_metric("loss", 1.0, 0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "unreachable" not in caplog.text:
            time.sleep(0.05)
        assert "tracelet backend 'mlflow' is unreachable" in caplog.text, "warned while running"
        assert exp.delivery["mlflow"].phase == "retrying"
        exp.stop()
    assert exp.store.undelivered(exp.id)["mlflow"] == 1


@pytest.mark.parametrize("in_flight", [1, 4])
def test_requests_in_flight_deliver_every_point_once_even_when_cut_off(
    mlflow_server, in_flight, monkeypatch
):
    """A batch of 10,000 points goes as 10 requests, up to ``in_flight`` at once; the 7th
    request fails once, the whole batch is sent again, and MLflow holds each point once."""
    from tracelet_mlflow import backend as mlflow_backend

    sent = []
    real = mlflow_backend.MlflowBackend._send

    def flaky(self, metrics, params, tags):
        if metrics:
            sent.append(threading.current_thread().name)
            if len(sent) == 7:
                raise ConnectionError("injected: the 7th request is cut off")
        return real(self, metrics, params, tags)

    monkeypatch.setattr(mlflow_backend.MlflowBackend, "_send", flaky)
    name = f"in-flight-{in_flight}"
    config = {
        "mlflow": {
            "tracking_uri": mlflow_server.url,
            "experiment_name": name,
            "requests_in_flight": in_flight,
        },
        "flush_interval": 60.0,
    }
    exp = tracelet.start_logging(name, backend="mlflow", config=config)
    for step in range(10_000):
        exp.log_metric("loss", float(step), step)
    tracelet.stop_logging()
    assert exp.delivery["mlflow"].pending == 0
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(s, float(s)) for s in range(10_000)]
    lanes = {n for n in sent if n.startswith("tracelet-mlflow")}
    assert len(lanes) == in_flight - 1, "the extra requests ran on the backend's own threads"
