"""The MLflow backend passes the conformance kit: against a real ``mlflow server`` and
against a plain SQLite tracking URI."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

from tracelet_mlflow.names import TRUNCATION_MARKER, legal_name  # noqa: E402


class MlflowReadBack:
    """Reads a Tracelet run back from MLflow (the run tagged ``tracelet.run_id``)."""

    def __init__(self, uri: str) -> None:
        self.client = MlflowClient(uri)

    def _runs(self, run_id: str) -> list:
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(
            experiments, filter_string=f"tags.`tracelet.run_id` = '{run_id}'"
        )

    def _run(self, run_id: str):
        (run,) = self._runs(run_id)
        return run

    def run_count(self, run_id: str) -> int:
        return len(self._runs(run_id))

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        run = self._run(run_id)
        return [
            (key, m.value, m.step, m.timestamp / 1000)
            for key in run.data.metrics
            for m in self.client.get_metric_history(run.info.run_id, key)
        ]

    def params(self, run_id: str) -> dict[str, str]:
        return self._run(run_id).data.params

    def tags(self, run_id: str) -> dict[str, str]:
        return self._run(run_id).data.tags

    def status(self, run_id: str) -> str:
        return self._run(run_id).info.status.lower()

    def _files(self, run_id: str, prefix: str | None = None) -> dict[str, bytes]:
        mlflow_run_id = self._run(run_id).info.run_id
        found, folders = {}, [prefix]
        while folders:
            for entry in self.client.list_artifacts(mlflow_run_id, folders.pop()):
                if entry.is_dir:
                    folders.append(entry.path)
                    continue
                with tempfile.TemporaryDirectory() as folder:
                    local = self.client.download_artifacts(mlflow_run_id, entry.path, folder)
                    found[entry.path] = Path(local).read_bytes()
        return found

    def texts(self, run_id: str) -> list[tuple[str, int, str]]:
        return [
            (match[1], int(match[2]), data.decode())
            for path, data in self._files(run_id, "tracelet/texts").items()
            if (match := re.fullmatch(r"tracelet/texts/(.*)/step_(\d+)\.txt", path))
        ]

    def images(self, run_id: str) -> list[tuple[str, int, bytes]]:
        return [
            (match[1], int(match[2]), data)
            for path, data in self._files(run_id, "tracelet/images").items()
            if (match := re.fullmatch(r"tracelet/images/(.*)/step_(\d+)\.png", path))
        ]

    def histograms(self, run_id: str) -> list[tuple[str, int, list, list]]:
        found = []
        for path, data in self._files(run_id, "tracelet/histograms").items():
            match = re.fullmatch(r"tracelet/histograms/(.*)/step_(\d+)\.json", path)
            if match:
                bins = json.loads(data)
                found.append((match[1], int(match[2]), bins["counts"], bins["edges"]))
        return found

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        return {p: d for p, d in self._files(run_id).items() if not p.startswith("tracelet/")}


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
