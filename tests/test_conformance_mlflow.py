"""The MLflow backend passes the conformance kit: against a real ``mlflow server`` (on
SQLite, and on PostgreSQL as a team runs it, where many training processes write at once)
and against a plain SQLite tracking URI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

mlflow = pytest.importorskip("mlflow")
from tracelet_mlflow.names import TRUNCATION_MARKER, legal_name  # noqa: E402
from tracelet_mlflow.testing import MlflowReadBack, MlflowServer  # noqa: E402


def mlflow_under_test(uri: str) -> BackendUnderTest:
    """MLflow as the kit sees it: what it stores differently is declared here."""
    return BackendUnderTest(
        "mlflow",
        {"tracking_uri": uri},
        MlflowReadBack(uri),
        timestamp_resolution=1e-3,
        infinity=1.7976931348623157e308,
        params_as_strings=True,
        max_param_length=6000,
        truncation_marker=TRUNCATION_MARKER,
        map_name=legal_name,
    )


@pytest.mark.slow
class TestMlflowServer(BackendConformance):
    """Against a real ``mlflow server`` on 127.0.0.1 (SQLite store, local artifact root)."""

    @pytest.fixture
    def backend_under_test(self, mlflow_server):
        return mlflow_under_test(mlflow_server.url)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory):
    """One SQLite tracking database for the module (creating its schema takes a second)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-kit') / 'mlflow.db'}"


class TestMlflowSqlite(BackendConformance):
    """Against a plain SQLite tracking URI (no server)."""

    @pytest.fixture
    def backend_under_test(self, sqlite_uri):
        return mlflow_under_test(sqlite_uri)


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server for the module (installed with apt-get first if missing)."""
    from tracelet.testing.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    """``mlflow server`` with its backend store on PostgreSQL and two workers, so requests
    are served by two processes writing to one database, as a team's server does."""
    server = MlflowServer(
        tmp_path_factory.mktemp("mlflow-postgres"),
        workers=2,
        backend_store_uri=postgres.uri("postgresql+psycopg2"),
    )
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
class TestMlflowServerOnPostgres(BackendConformance):
    """Against ``mlflow server`` on a PostgreSQL backend store (a team's tracking server)."""

    @pytest.fixture
    def backend_under_test(self, mlflow_on_postgres):
        return mlflow_under_test(mlflow_on_postgres.url)


WRITER = """
import pathlib, sys, time
import tracelet

index, uri, steps, go = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), pathlib.Path(sys.argv[4])
with tracelet.start_logging(
    f"writer-{index}", project="many-writers", backend="mlflow", config={"tracking_uri": uri}
) as exp:
    exp.log_params({"writer": index, "lr": 0.001 * (index + 1)})
    print(exp.id, flush=True)
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    for step in range(steps):
        exp.log_metric("loss", (index * steps + step) / 7, step)
        exp.log_metric("accuracy", step / steps, step)
"""


def expected_points(index: int, steps: int) -> list[tuple[str, float, int]]:
    """The points writer ``index`` logs."""
    return sorted(
        [("loss", (index * steps + step) / 7, step) for step in range(steps)]
        + [("accuracy", step / steps, step) for step in range(steps)]
    )


@pytest.mark.slow
def test_many_training_processes_write_to_one_server(mlflow_on_postgres, tmp_path):
    """Four training processes log through Tracelet into one PostgreSQL-backed server at the
    same time; every run arrives whole, each point exactly once."""
    writers, steps = 4, 2500
    go = tmp_path / "go"
    processes = []
    for index in range(writers):
        folder = tmp_path / f"writer-{index}"  # each process journals on its own, as on a node
        folder.mkdir()
        command = [sys.executable, "-c", WRITER, str(index), mlflow_on_postgres.url]
        with open(folder / "stderr.txt", "wb") as errors:
            process = subprocess.Popen(
                [*command, str(steps), str(go)], cwd=folder, stdout=subprocess.PIPE, stderr=errors
            )
        processes.append((process, folder / "stderr.txt"))
    run_ids = [process.stdout.readline().decode().strip() for process, _ in processes]
    assert all(run_ids), [errors.read_text()[-2000:] for _, errors in processes]
    go.touch()  # every run has started: from here on all four log at once
    for process, errors in processes:
        process.communicate(timeout=120)
        assert process.returncode == 0, errors.read_text()[-2000:]

    reader = MlflowReadBack(mlflow_on_postgres.url)
    for index, run_id in enumerate(run_ids):
        assert reader.run_count(run_id) == 1
        assert reader.status(run_id) == "finished"
        assert reader.params(run_id) == {"writer": str(index), "lr": str(0.001 * (index + 1))}
        points = sorted((name, value, step) for name, value, step, _ in reader.metrics(run_id))
        assert points == expected_points(index, steps)
