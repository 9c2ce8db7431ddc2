"""The MLflow backend passes the conformance kit: against a real ``mlflow server`` and
against a plain SQLite tracking URI."""

from __future__ import annotations

import pytest

from tracelet.testing import BackendConformance, BackendUnderTest

mlflow = pytest.importorskip("mlflow")
from tracelet_mlflow.names import TRUNCATION_MARKER, legal_name  # noqa: E402
from tracelet_mlflow.testing import MlflowReadBack  # noqa: E402


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
