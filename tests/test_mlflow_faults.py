"""The MLflow server goes away mid-run: training goes on, and nothing is lost or doubled."""

from __future__ import annotations

import threading
import time

import pytest

import tracelet
from tracelet.cli import main as cli

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from tracelet_mlflow.testing import MlflowServer  # noqa: E402

pytestmark = pytest.mark.slow
POINTS = 50_000


def mlflow_points(url: str, experiment: str) -> list[tuple[int, float]]:
    client = MlflowClient(url)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss"))


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path / "server")
    server.start()
    yield server
    server.stop()


@pytest.mark.collectors
def test_server_stopped_mid_run_and_restarted_10s_later(server):
    """Default settings (flush timeout, buffer, collectors, live detection): the server goes
    away at point 20,000 of 50,000 and is back about 10 s later; stop_logging returns
    with every point on the server once, and delivery resumes soon after the restart.
    (The server's own start-up is counted in the 10 s: on a loaded machine it took over
    20 s, which left the outage longer than the flush timeout.)"""
    config = {"mlflow": {"tracking_uri": server.url, "experiment_name": "outage"}}
    exp = tracelet.start_logging("outage", backend="mlflow", config=config)
    for step in range(20_000):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(timeout=60)
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id])
    server.stop()
    times = {}

    def restart_then_watch() -> None:
        server.start()
        times["back"] = time.monotonic()
        while time.monotonic() - times["back"] < 60:  # the first new point on the server
            if client.get_run(run.info.run_id).data.metrics["loss"] >= 20_000:
                times["resumed"] = time.monotonic()
                return
            time.sleep(0.05)

    assert server.start_seconds is not None
    restart = threading.Timer(max(0.0, 10.0 - server.start_seconds), restart_then_watch)
    restart.start()
    started = time.monotonic()
    for step in range(20_000, POINTS):  # the server is down: logging must not block
        exp.log_metric("loss", float(step), step)
    logging_took = time.monotonic() - started
    assert restart.is_alive(), f"logging waited for the server ({logging_took:.1f}s)"
    assert exp.settings.flush_timeout == 30.0, "the default a user gets"
    tracelet.stop_logging()
    restart.join()
    state = exp.delivery["mlflow"]
    assert state.pending == 0, state.describe()
    resumed_after = times["resumed"] - times["back"]
    print(f"\ndelivery resumed {resumed_after:.2f} s after the server was back")
    assert resumed_after <= 5.0, "about 1-2 s expected: backoff capped at 1 s, then one request"
    assert mlflow_points(server.url, "outage") == [(s, float(s)) for s in range(POINTS)]


def test_a_run_that_ends_while_the_server_is_down_is_delivered_by_sync(server, capsys):
    config = {
        "mlflow": {"tracking_uri": server.url, "experiment_name": "later"},
        "track_system": False,
        "track_env": False,
        "track_git": False,
        "flush_interval": 0.05,
        "flush_timeout": 1,
    }
    exp = tracelet.start_logging("later", backend="mlflow", config=config)
    for step in range(1000):
        exp.log_metric("loss", float(step), step)
    exp.flush(timeout=60)
    server.stop()
    for step in range(1000, 5000):
        exp.log_metric("loss", float(step), step)
    exp.stop()
    assert exp.store.undelivered(exp.id)["mlflow"] > 0
    server.start()
    assert cli(["sync"]) == 0
    out = capsys.readouterr().out
    assert "mlflow: delivered" in out
    assert "0 left, up to date" in out
    assert mlflow_points(server.url, "later") == [(s, float(s)) for s in range(5000)]
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("later").experiment_id])
    assert run.info.status == "FINISHED"
    assert cli(["sync", exp.id[:8]]) == 0
    assert "delivered" not in capsys.readouterr().out, "a second sync has nothing to do"
    assert mlflow_points(server.url, "later") == [(s, float(s)) for s in range(5000)]


def test_sync_against_a_server_that_is_down_ends_within_its_timeout(capsys):
    from tracelet_mlflow.testing import free_port

    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = {"mlflow": {"tracking_uri": down}, "flush_timeout": 1}
    exp = tracelet.start_logging("never delivered", backend=["local", "mlflow"], config=config)
    for step in range(100):
        exp.log_metric("loss", float(step), step)
    exp.stop()
    assert exp.delivery["mlflow"].phase == "retrying"
    capsys.readouterr()
    started = time.monotonic()
    code = cli(["sync", "--timeout", "4", "--option", f"tracking_uri={down}"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1
    assert took < 4 + 5, f"sync took {took:.1f} s with --timeout 4"
    assert "mlflow: retrying since" in out, "progress while it waits"
    (line,) = err.strip().splitlines()
    assert line.startswith("tracelet: error: backend 'mlflow' not done at the 4 s --timeout;")
    assert f"batch(es) of run {exp.id[:12]} left" in line
    assert exp.store.undelivered(exp.id)["mlflow"] > 0, "kept for a later sync"


def test_a_local_run_is_published_to_mlflow_later_exactly_once(server, tmp_path, capsys):
    from tracelet.testing.harness import png
    from tracelet_mlflow.testing import MlflowReadBack

    (tmp_path / "model.pt").write_bytes(b"weights" * 1000)
    points = [("loss", 1.0 / (s + 1), s) for s in range(3000)] + [("acc", 0.5, 0)]
    with tracelet.start_logging("log now", backend="local") as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
        exp.log_params({"optimizer": {"name": "adam", "lr": 0.001}})
        exp.log_text("notes", "publish later", 2)
        exp.log_image("sample", png(4, 4, 1), 1)
        exp.log_artifact(tmp_path / "model.pt", "checkpoints/model.pt")
    options = ["--option", f"tracking_uri={server.url}", "--option", "experiment_name=later"]
    assert cli(["sync", exp.id[:8], "--to", "mlflow", *options]) == 0
    assert "mlflow: delivered" in capsys.readouterr().out
    tool = MlflowReadBack(server.url)
    stored = sorted((n, v, s) for n, v, s, _ in tool.metrics(exp.id))
    assert stored == sorted(points)
    assert tool.params(exp.id) == {"optimizer/lr": "0.001", "optimizer/name": "adam"}
    assert tool.texts(exp.id) == [("notes", 2, "publish later")]
    assert tool.images(exp.id) == [("sample", 1, png(4, 4, 1))]
    assert tool.artifacts(exp.id)["checkpoints/model.pt"] == b"weights" * 1000
    assert tool.status(exp.id) == "finished"
    assert cli(["sync", exp.id[:8], "--to", "mlflow", *options]) == 0
    assert "nothing to sync" in capsys.readouterr().out
    assert tool.run_count(exp.id) == 1
    assert sorted((n, v, s) for n, v, s, _ in tool.metrics(exp.id)) == sorted(points)


def test_sync_delivers_to_the_server_a_uri_with_credentials_named(server, tmp_path, capsys):
    host = server.url.removeprefix("http://")
    config = {
        "mlflow": {"tracking_uri": f"http://alice:s3cret@{host}", "experiment_name": "creds"},
        "flush_timeout": 1,
    }
    exp = tracelet.start_logging("with credentials", backend=["local", "mlflow"], config=config)
    for step in range(1000):
        exp.log_metric("loss", float(step), step)
    assert exp.flush(timeout=60)
    server.stop()
    for step in range(1000, 2000):
        exp.log_metric("loss", float(step), step)
    exp.stop()
    stored = exp.store.get_run(exp.id).config["backends"]["mlflow"]["tracking_uri"]
    assert stored == server.url, "the credentials are gone, the target is kept"
    server.start()
    assert cli(["sync"]) == 0
    assert "0 left, up to date" in capsys.readouterr().out
    assert mlflow_points(server.url, "creds") == [(s, float(s)) for s in range(2000)]
    assert not (tmp_path / "mlflow.db").exists(), "nothing went to MLflow's default store"
    assert not (tmp_path / "mlruns").exists()
    assert "s3cret" not in repr(exp.store.get_run(exp.id).config)
