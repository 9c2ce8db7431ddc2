"""An offline compute node: it logs to its local store while its remote backend cannot be
reached; the store, copied to another machine, is delivered there by ``tracelet sync
--store PATH``, everything once."""

from __future__ import annotations

import shutil

import pytest

import tracelet
from tracelet.cli import main
from tracelet.testing.harness import png
from tracelet.testing.local import LocalReadBack
from tracelet.testing.servers import free_port


def log_on_a_node_without_network(tmp_path):
    unreachable = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "model.pt").write_bytes(b"weights" * 100)
    config = {"tracking_uri": unreachable, "flush_timeout": 2.0}  # (docs: an offline node's)
    with tracelet.start_logging("offline", backend=["local", "mlflow"], config=config) as exp:
        exp.log_params({"lr": 0.01, "optimizer": {"name": "adam"}})
        for step in range(2000):
            exp.log_metric("loss", 1.0 / (step + 1), step)
        exp.log_image("sample", png(8, 8, 1), 0)
        exp.log_artifact(tmp_path / "model.pt")
    return exp.id


@pytest.mark.slow
def test_a_copied_store_is_synced_from_another_machine_exactly_once(
    tmp_path, store_path, mlflow_server, capsys
):
    from tracelet_mlflow.testing import MlflowReadBack

    run_id = log_on_a_node_without_network(tmp_path)
    copied = shutil.copytree(store_path, tmp_path / "login-node" / "store")
    shutil.rmtree(store_path)  # (the node's disk is gone; only the copy is left)
    option = f"tracking_uri={mlflow_server.url}"
    assert main(["sync", "--store", str(copied), "--option", option]) == 0
    assert "mlflow: delivered" in capsys.readouterr().out
    assert main(["sync", "--store", str(copied), "--option", option]) == 0
    assert "nothing to sync" in capsys.readouterr().out
    local, mlflow = LocalReadBack(copied), MlflowReadBack(mlflow_server.url)
    assert mlflow.run_count(run_id) == 1
    assert sorted(mlflow.metrics(run_id)) == sorted(  # MLflow keeps whole milliseconds
        (n, v, s, round(t * 1000) / 1000) for n, v, s, t in local.metrics(run_id)
    )
    assert mlflow.params(run_id) == {"lr": "0.01", "optimizer/name": "adam"}
    assert mlflow.artifacts(run_id) == local.artifacts(run_id)
    assert mlflow.images(run_id) == local.images(run_id)
    assert mlflow.status(run_id) == "finished"
