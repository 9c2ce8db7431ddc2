"""A real ``mlflow server`` on 127.0.0.1 for tests and benchmarks: SQLite store, local
artifact root. ``MlflowServer(folder).start()`` ... ``.stop()``; ``.url`` is the tracking URI.

It runs in its own process group (it spawns uvicorn and a job runner), so stopping it
signals the whole group. ``stop()`` then ``start()`` brings it back on the same port and
database, which the fault-injection test uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tracelet.testing.servers import ServerProcess, free_port

__all__ = ["MlflowServer", "free_port"]


class MlflowServer(ServerProcess):
    """One ``mlflow server`` process group; ``url`` is its tracking URI."""

    name = "mlflow server"

    def __init__(self, root: Path, workers: int = 1) -> None:
        super().__init__(root)
        self.workers = workers
        """Server worker processes (1 for tests; ``mlflow server`` itself starts 4)."""
        self.url = f"http://127.0.0.1:{self.port}"
        self.database = f"sqlite:///{self.root / 'mlflow.db'}"

    def command(self) -> list[str]:
        """``mlflow server`` on the SQLite database and the local artifact root."""
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
