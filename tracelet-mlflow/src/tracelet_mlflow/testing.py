"""A real ``mlflow server`` on 127.0.0.1 for tests and benchmarks: a SQLite store (or any
backend-store URI, such as a PostgreSQL database), local artifact root.
``MlflowServer(folder).start()`` ... ``.stop()``; ``.url`` is the tracking URI.
:class:`MlflowReadBack` reads a Tracelet run back from any tracking URI.

It runs in its own process group (it spawns uvicorn and a job runner), so stopping it
signals the whole group. ``stop()`` then ``start()`` brings it back on the same port and
database, which the fault-injection test uses.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from tracelet.testing.servers import ServerProcess, free_port

__all__ = ["MlflowReadBack", "MlflowServer", "free_port"]


class MlflowServer(ServerProcess):
    """One ``mlflow server`` process group; ``url`` is its tracking URI."""

    name = "mlflow server"

    def __init__(self, root: Path, workers: int = 1, backend_store_uri: str | None = None) -> None:
        super().__init__(root)
        self.workers = workers
        """Server worker processes (1 for tests; ``mlflow server`` itself starts 4)."""
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = backend_store_uri or f"sqlite:///{self.root / 'mlflow.db'}"
        """The backend store: ``backend_store_uri`` (e.g.
        ``postgresql+psycopg2://postgres@127.0.0.1:5432/mlflow``), else ``root/mlflow.db``."""

    def command(self) -> list[str]:
        """``mlflow server`` on the backend store and the local artifact root."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.database,
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]

    @property
    def health_url(self) -> str:
        """MLflow's ``/health``."""
        return f"{self.url}/health"


class MlflowReadBack:
    """Reads a Tracelet run back from MLflow (the run tagged ``tracelet.run_id``): the
    conformance kit's ``ReadBack`` for this backend."""

    def __init__(self, uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)

    def _runs(self, run_id: str) -> list[Any]:
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(
            experiments, filter_string=f"tags.`tracelet.run_id` = '{run_id}'"
        )

    def _run(self, run_id: str) -> Any:
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
