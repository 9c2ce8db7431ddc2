"""A tracking URI the installed MLflow cannot serve is a ConfigurationError at start.

``tracelet-mlflow`` brings ``mlflow-skinny``, which has no database store. Here the full
MLflow is installed, so its database store is taken away by fault injection (its modules
made unimportable in ``sys.modules``); the packaging test checks the same with a real
``mlflow-skinny`` in a clean virtual environment.
"""

from __future__ import annotations

import sys

import pytest

import tracelet
from tracelet.storage import LocalStore

mlflow = pytest.importorskip("mlflow")
from tracelet_mlflow.stores import check_tracking_uri, scheme_of  # noqa: E402

QUIET = {"track_system": False, "track_env": False, "track_git": False, "flush_interval": 0.02}
FIX = 'pip install "tracelet-mlflow[local]"'


@pytest.fixture
def skinny(monkeypatch):
    """MLflow as ``mlflow-skinny`` leaves it: no SQLAlchemy, no Alembic."""
    for name in ("sqlalchemy", "alembic"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///{tmp}/mlflow.db",
        "postgresql://db-host:5432/mlflow",
        "postgresql+psycopg2://db-host/mlflow",
        "mysql+pymysql://db-host/mlflow",
        "mssql://db-host/mlflow",
    ],
)
def test_a_database_uri_without_the_database_store_fails_at_start(skinny, uri, tmp_path):
    uri = uri.format(tmp=tmp_path)
    config = {"mlflow": {"tracking_uri": uri}, "store_path": str(tmp_path / "store"), **QUIET}
    with pytest.raises(tracelet.ConfigurationError) as caught:
        tracelet.start_logging("x", project="p", backend=["local", "mlflow"], config=config)
    message = str(caught.value)
    assert uri in message
    assert "tracelet-mlflow[local]" in message
    assert FIX in message
    assert "no module named 'sqlalchemy'" in message
    assert tracelet.get_active_experiment() is None
    assert not (tmp_path / "store").exists() or LocalStore(tmp_path / "store").list_runs() == []


def test_alembic_missing_alone_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "alembic", None)  # SQLAlchemy there, e.g. from aim
    with pytest.raises(tracelet.ConfigurationError, match="no module named 'alembic'"):
        check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")


def test_credentials_in_the_refused_uri_are_not_shown(skinny, tmp_path):
    uri = "postgresql://alice:s3cret@db-host/mlflow"
    config = {"tracking_uri": uri, "store_path": str(tmp_path / "store"), **QUIET}
    with pytest.raises(tracelet.ConfigurationError) as caught:
        tracelet.start_logging("x", backend="mlflow", config=config)
    assert "s3cret" not in str(caught.value)
    assert "'postgresql://***@db-host/mlflow'" in str(caught.value)
    with pytest.raises(tracelet.ConfigurationError) as caught:
        check_tracking_uri("mysql://db-host/mlflow?user=alice&password=s3cret")
    assert "s3cret" not in str(caught.value)
    assert "'mysql://db-host/mlflow?***'" in str(caught.value)


def test_mlflows_default_store_is_checked_too(skinny, monkeypatch, tmp_path):
    """No URI anywhere: MLflow's own default (a SQLite file in MLflow 3) is what is checked."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    default = mlflow.get_tracking_uri()
    config = {"store_path": str(tmp_path / "store"), **QUIET}
    if scheme_of(default) != "sqlite":
        pytest.skip(f"this MLflow's default store is {default}")
    with pytest.raises(tracelet.ConfigurationError, match=r"tracelet-mlflow\[local\]") as caught:
        tracelet.start_logging("x", backend="mlflow", config=config)
    assert default in str(caught.value)


def test_the_environment_variable_is_checked(skinny, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    with pytest.raises(tracelet.ConfigurationError, match=r"env\.db"):
        check_tracking_uri(None)


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:5000", "https://mlflow.example.com", "databricks"]
)
def test_a_tracking_server_needs_only_the_client(skinny, uri):
    check_tracking_uri(uri)  # no error: mlflow-skinny talks to servers


def test_the_file_store_needs_mlflows_opt_in(monkeypatch, tmp_path):
    if not hasattr(mlflow.environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("this MLflow opens its file store without an opt-in")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    config = {"tracking_uri": uri, "store_path": str(tmp_path / "store"), **QUIET}
    with pytest.raises(tracelet.ConfigurationError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        tracelet.start_logging("x", backend="mlflow", config=config)
    with pytest.raises(tracelet.ConfigurationError, match="file store"):
        check_tracking_uri(str(tmp_path / "mlruns"))  # a plain path is the file store too
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    with tracelet.start_logging("x", backend="mlflow", config=config) as exp:
        exp.log_metric("loss", 0.5, 3)
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{exp.id}'",
    )
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")] == [
        (3, 0.5)
    ]


def test_a_served_database_uri_still_starts(tmp_path):
    """The full MLflow (the dev set-up) serves SQLite: nothing is refused."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracelet.start_logging("x", backend="mlflow", config={"tracking_uri": uri, **QUIET}):
        pass
    check_tracking_uri(uri)
