"""Aim for tests and benchmarks: a real ``aim server``, and runs read back with Aim's API.

:class:`AimReadBack` implements the conformance kit's ``ReadBack`` for a local repository
or a remote server: runs are found by Tracelet's record (``run.tracelet.run_id``) through
Aim's query language, so a run reads back only if Aim's index holds it.
:class:`AimServer` is ``aim server`` on a free loopback port over a repository of its own.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tracelet.testing.servers import ServerProcess
from tracelet_aim.backend import PARAMS, RECORD
from tracelet_aim.names import REPEAT, equal_width_edges, name_of, tag_of

_STATUSES = {"finished", "failed", "killed", "running"}
AIM = (sys.executable, "-c", "from aim.cli.cli import cli_entry_point; cli_entry_point()")
"""The ``aim`` command of this interpreter's Aim."""


class AimServer(ServerProcess):
    """``aim server`` over the repository in ``root``/repo; ``uri`` is its address."""

    name = "aim server"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.repo = self.root / "repo"
        self.uri = f"aim://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        """Create the repository on first use, then serve it."""
        if not (self.repo / ".aim").is_dir():
            self.repo.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [*AIM, "init", "--repo", str(self.repo)], check=True, capture_output=True
            )
        super().start(timeout)

    def stop(self) -> None:
        """Let Aim release what clients in this process hold on the server (their
        release fails, loudly, once the server is gone), then stop it."""
        gc.collect()
        super().stop()

    def command(self) -> list[str]:
        """``aim server`` on 127.0.0.1 only."""
        return [
            *AIM,
            "server",
            "--repo",
            str(self.repo),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-y",
        ]

    @property
    def health_url(self) -> str:
        """The server's ``/status/``."""
        return f"http://127.0.0.1:{self.port}/status/"


class AimReadBack:
    """Reads runs from the Aim repository at ``repo`` (a folder or ``aim://host:port``)."""

    def __init__(self, repo: str | Path) -> None:
        self.location = str(repo)

    @functools.cached_property
    def repo(self) -> Any:
        from aim import Repo

        if self.location.startswith("aim://"):
            return Repo(self.location)
        return Repo.from_path(self.location)

    def close(self) -> None:
        """Release the repository (a server's resources are released while it still runs)."""
        if self.__dict__.pop("repo", None) is not None:
            gc.collect()

    def runs(self, run_id: str) -> list[Any]:
        """Every Aim run holding Tracelet run ``run_id`` (read-only)."""
        query = f'run.{RECORD}.run_id == "{run_id}"'
        return [found.run for found in self.repo.query_runs(query, report_mode=0).iter_runs()]

    def run(self, run_id: str) -> Any:
        """The one Aim run of ``run_id``."""
        found = self.runs(run_id)
        if len(found) != 1:
            raise AssertionError(f"{len(found)} Aim runs hold Tracelet run {run_id}")
        return found[0]

    def _sequences(self, run_id: str, dtype: str) -> Iterator[tuple[str, Any]]:
        """(Tracelet name, Aim sequence) for each sequence of ``dtype`` and context."""
        run = self.run(run_id)
        getters = {
            "aim.text": run.get_text_sequence,
            "aim.image": run.get_image_sequence,
            "aim.distribution": run.get_distribution_sequence,
        }
        for name, context, _ in run.iter_sequence_info_by_type(dtype):
            plain = {k: v for k, v in context.to_dict().items() if k != REPEAT}
            getter = getters.get(dtype, run.get_metric)
            yield name_of(name, plain), getter(name, context)

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        """Every point as ``(name, value, step, timestamp)``, repeats included."""
        found = []
        for name, metric in self._sequences(run_id, "float"):
            steps, (values, _, times) = metric.data.items_list()
            found += zip([name] * len(steps), values, steps, times, strict=True)
        return found

    def _objects(self, run_id: str, dtype: str) -> Iterator[tuple[str, int, Any]]:
        for name, sequence in self._sequences(run_id, dtype):
            steps, (values, _, _) = sequence.data.items_list()
            for step, value in zip(steps, values, strict=True):
                yield name, step, value

    def params(self, run_id: str) -> dict[str, Any]:
        """``run["hparams"]``."""
        return dict(self.run(run_id).get(PARAMS) or {})

    def tags(self, run_id: str) -> dict[str, str]:
        """The run's tags, ``key:value`` read as a key and its value."""
        return dict(tag_of(tag) for tag in self.run(run_id).props.tags)

    def texts(self, run_id: str) -> list[tuple[str, int, str]]:
        """Every text as ``(name, step, text)``."""
        return [(n, s, text.data) for n, s, text in self._objects(run_id, "aim.text")]

    def images(self, run_id: str) -> list[tuple[str, int, bytes]]:
        """Every image as ``(name, step, bytes)``."""
        return [
            (n, s, bytes(i.storage["data"].load()))
            for n, s, i in self._objects(run_id, "aim.image")
        ]

    def histograms(self, run_id: str) -> list[tuple[str, int, list[float], tuple[float, ...]]]:
        """Every distribution as ``(name, step, counts, edges)``."""
        found = []
        for name, step, dist in self._objects(run_id, "aim.distribution"):
            counts = [float(c) for c in dist.weights]
            low, high = dist.range
            found.append((name, step, counts, equal_width_edges(low, high, len(counts))))
        return found

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """Every artifact: its Tracelet path to the bytes of the file at its URI."""
        found = {}
        for name, artifact in self.run(run_id).artifacts.items():
            path = name.rsplit(" (v", 1)[0] if name.endswith(")") else name
            found[path] = Path(unquote(urlparse(artifact.uri).path)).read_bytes()
        return found

    def status(self, run_id: str) -> str:
        """The status Tracelet recorded (``running`` until the run ended)."""
        recorded = (self.run(run_id).get(RECORD) or {}).get("status", "running")
        return recorded if recorded in _STATUSES else "failed"

    def run_count(self, run_id: str) -> int:
        """How many Aim runs hold Tracelet run ``run_id``."""
        return len(self.runs(run_id))
