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


def test_server_stopped_mid_run_and_restarted_10s_later(server):
    config = {
        "mlflow": {"tracking_uri": server.url, "experiment_name": "outage"},
        "track_system": False,
        "track_env": False,
        "track_git": False,
        "flush_interval": 0.05,
        "flush_timeout": 120,
    }
    exp = tracelet.start_logging("outage", backend="mlflow", config=config)
    for step in range(POINTS // 2):
        exp.log_metric("loss", float(step), step)
    exp.flush(timeout=60)
    server.stop()
    restart = threading.Timer(10.0, server.start)
    restart.start()
    started = time.monotonic()
    for step in range(POINTS // 2, POINTS):  # the server is down: logging must not block
        exp.log_metric("loss", float(step), step)
    logging_took = time.monotonic() - started
    assert restart.is_alive(), f"logging waited for the server ({logging_took:.1f}s)"
    restart.join()
    exp.stop()
    assert exp.flush() is True, "every batch delivered once the server was back"
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
