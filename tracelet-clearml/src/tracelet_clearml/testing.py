"""Reads Tracelet runs back out of ClearML's offline sessions, for tests and benchmarks.

:class:`ClearmlReadBack` implements the conformance kit's ``ReadBack`` from what ClearML
wrote: ``task.json`` (parameters, tags, artifacts, user properties), ``metrics.jsonl``
(scalars and debug images), ``log.jsonl`` (console text) and the files under ``data/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracelet_clearml import sessions
from tracelet_clearml.names import PARAM_SECTION, edges_of, name_of, text_blocks


class ClearmlReadBack:
    """Reads offline sessions under ``offline_dir`` (``<CLEARML_CACHE_DIR>/offline``)."""

    def __init__(self, offline_dir: str | Path) -> None:
        self.offline_dir = Path(offline_dir)

    def sessions(self, run_id: str) -> list[Path]:
        """The session folders of ``run_id``, in order."""
        return [folder for folder, _ in sessions.session_tasks(self.offline_dir, run_id)]

    def _tasks(self, run_id: str) -> list[dict[str, Any]]:
        return [task for _, task in sessions.session_tasks(self.offline_dir, run_id)]

    def events(self, run_id: str, kind: str) -> Iterator[dict[str, Any]]:
        """Every ``metrics.jsonl`` event of type ``kind`` of every session."""
        for folder in self.sessions(run_id):
            path = folder / "metrics.jsonl"
            lines = path.read_text("utf-8").splitlines() if path.exists() else []
            for line in lines:
                yield from (event for event in json.loads(line) if event["type"] == kind)

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        """Every scalar as ``(name, value, step, timestamp)``."""
        return [
            (name_of(e["metric"], e["variant"]), e["value"], e["iter"], e["timestamp"] / 1000)
            for e in self.events(run_id, "training_stats_scalar")
        ]

    def params(self, run_id: str) -> dict[str, Any]:
        """The ``General`` hyperparameters, typed as ClearML recorded them."""
        found: dict[str, Any] = {}
        for task in self._tasks(run_id):
            for name, entry in task.get("hyperparams", {}).get(PARAM_SECTION, {}).items():
                found[name] = sessions.typed(entry)
        return found

    def tags(self, run_id: str) -> dict[str, str]:
        """The latest session's tags, ``key:value`` read as a key and its value."""
        tasks = self._tasks(run_id)
        tags = tasks[-1].get("tags", []) if tasks else []
        return {tag.partition(":")[0]: tag.partition(":")[2] for tag in tags}

    def texts(self, run_id: str) -> list[tuple[str, int, str]]:
        """Every text Tracelet wrote into the console log."""
        found = []
        for folder in self.sessions(run_id):
            path = folder / "log.jsonl"
            lines = path.read_text("utf-8").splitlines() if path.exists() else []
            log = "\n".join(e["msg"] for line in lines for e in json.loads(line))
            found.extend(text_blocks(log))
        return found

    def images(self, run_id: str) -> list[tuple[str, int, bytes]]:
        """Every debug image as ``(name, step, bytes)``."""
        return [
            (name_of(e["metric"], e["variant"]), e["iter"], Path(e["url"]).read_bytes())
            for e in self.events(run_id, "training_debug_image")
        ]

    def histograms(self, run_id: str) -> list[tuple[str, int, list[float], tuple[float, ...]]]:
        """Every histogram (a bar chart of Tracelet's) as ``(name, step, counts, edges)``."""
        found = []
        for event in self.events(run_id, "plot"):
            (bars,) = json.loads(event["plot_str"])["data"]
            name = name_of(event["metric"], event["variant"])
            found.append((name, event["iter"], bars["y"], edges_of(bars["x"])))
        return found

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """Every uploaded artifact: its name (Tracelet's artifact path) to its file's bytes."""
        found = {}
        for task in self._tasks(run_id):
            for artifact in task.get("execution", {}).get("artifacts", []):
                if artifact.get("mode") == "output" and Path(artifact["uri"]).is_file():
                    path = re.sub(r" \(v\d+\)$", "", artifact["key"])  # later versions
                    found[path] = Path(artifact["uri"]).read_bytes()
        return found

    def status(self, run_id: str) -> str:
        """The status Tracelet recorded in the latest session (``running`` until then)."""
        tasks = self._tasks(run_id)
        if not tasks:
            raise AssertionError(f"no ClearML session of run {run_id} under {self.offline_dir}")
        recorded = sessions.properties(tasks[-1]).get(sessions.STATUS, "running")
        return {"killed": "killed", "finished": "finished", "running": "running"}.get(
            recorded, "failed"
        )

    def run_count(self, run_id: str) -> int:
        """How many runs the sessions make: the sessions that start one (``tracelet_session``
        1); every later session continues it."""
        return sum(
            sessions.properties(task).get(sessions.SESSION) == "1" for task in self._tasks(run_id)
        )
