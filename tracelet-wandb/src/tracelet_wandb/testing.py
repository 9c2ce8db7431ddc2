"""Reads Tracelet runs back out of W&B's offline run files, for tests and benchmarks.

:class:`WandbReadBack` implements the conformance kit's ``ReadBack`` from the ``.wandb``
files themselves (every session of a resumed run, in order) and the media and artifact
files they point to: what ``wandb sync`` would upload, not what the backend meant to send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tracelet_wandb.names import STEP_KEY
from tracelet_wandb.run_file import items_dict, records, session_files

SYSTEM_KEYS = frozenset({"_step", "_timestamp", "_runtime", "_wandb", STEP_KEY})
STATUS = {0: "finished", 255: "killed"}


class WandbReadBack:
    """Reads W&B offline runs under ``wandb_dir`` (the ``wandb`` folder inside ``WANDB_DIR``)."""

    def __init__(self, wandb_dir: str | Path) -> None:
        self.wandb_dir = Path(wandb_dir)

    def sessions(self, run_id: str) -> list[Path]:
        """The run files of ``run_id``'s sessions, oldest first."""
        return session_files(self.wandb_dir, run_id)

    def records(self, run_id: str, kind: str) -> Iterator[tuple[Path, Any]]:
        """Every record of type ``kind`` (``history``, ``run`` ...) with its session folder."""
        for path in self.sessions(run_id):
            for record in records(path):
                if record.WhichOneof("record_type") == kind:
                    yield path.parent, getattr(record, kind)

    def rows(self, run_id: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every history row of every session, as a nested dict of decoded values."""
        for folder, history in self.records(run_id, "history"):
            yield folder, items_dict(history.item)

    def metrics(self, run_id: str) -> list[tuple[str, float, int, float]]:
        """Every numeric history value as ``(name, value, Tracelet step, timestamp)``."""
        return [
            (key, float(value), int(row[STEP_KEY]), float(row["_timestamp"]))
            for _, row in self.rows(run_id)
            for key, value in row.items()
            if key not in SYSTEM_KEYS and _is_number(value)
        ]

    def params(self, run_id: str) -> dict[str, Any]:
        """The run's config, every session's updates applied in order."""
        config: dict[str, Any] = {}
        for path in self.sessions(run_id):
            for record in records(path):
                kind = record.WhichOneof("record_type")
                if kind == "run":
                    config.update(items_dict(record.run.config.update))
                elif kind == "config":
                    config.update(items_dict(record.config.update))
        config.pop("_wandb", None)
        return config

    def tags(self, run_id: str) -> dict[str, str]:
        """The latest W&B tags, ``key:value`` read as a key and its value."""
        latest: list[str] = []
        for _, run in self.records(run_id, "run"):
            latest = list(run.tags)
        return {tag.partition(":")[0]: tag.partition(":")[2] for tag in latest}

    def summary(self, run_id: str) -> dict[str, Any]:
        """The run's summary, every update applied in order."""
        summary: dict[str, Any] = {}
        for _, record in self.records(run_id, "summary"):
            summary.update(items_dict(record.update))
        return summary

    def _media(self, run_id: str, kind: str) -> Iterator[tuple[str, int, bytes]]:
        for folder, row in self.rows(run_id):
            for key, value in row.items():
                if isinstance(value, dict) and value.get("_type") == kind:
                    yield key, int(row[STEP_KEY]), (folder / "files" / value["path"]).read_bytes()

    def texts(self, run_id: str) -> list[tuple[str, int, str]]:
        """Every text: the one cell of each logged table."""
        return [
            (key, step, json.loads(data)["data"][0][0])
            for key, step, data in self._media(run_id, "table-file")
        ]

    def images(self, run_id: str) -> list[tuple[str, int, bytes]]:
        """Every image as ``(name, step, PNG bytes)``."""
        return list(self._media(run_id, "image-file"))

    def histograms(self, run_id: str) -> list[tuple[str, int, list, list]]:
        """Every histogram as ``(name, step, counts, edges)``."""
        return [
            (key, int(row[STEP_KEY]), value["values"], value["bins"])
            for _, row in self.rows(run_id)
            for key, value in row.items()
            if isinstance(value, dict) and value.get("_type") == "histogram"
        ]

    def artifacts(self, run_id: str) -> dict[str, bytes]:
        """Every file of every logged artifact (not W&B's own tables), by path."""
        files: dict[str, bytes] = {}
        for _, artifact in self.records(run_id, "artifact"):
            if artifact.type == "run_table":
                continue
            for entry in artifact.manifest.contents:
                files[entry.path] = Path(entry.local_path).read_bytes()
        return files

    def status(self, run_id: str) -> str:
        """``running`` until the latest session's exit record, then by its exit code
        (0 finished, 255 killed, any other failed)."""
        sessions = self.sessions(run_id)
        if not sessions:
            raise AssertionError(f"no W&B run {run_id} under {self.wandb_dir}")
        code = None
        for record in records(sessions[-1]):
            if record.WhichOneof("record_type") == "exit":
                code = record.exit.exit_code
        return "running" if code is None else STATUS.get(code, "failed")

    def run_count(self, run_id: str) -> int:
        """How many W&B runs the sessions of ``run_id`` belong to: the run ids of their run
        records (a session still running may not have written its records yet: W&B writes
        the run file in 32 KiB blocks, so there its folder's run id counts)."""
        ids = set()
        for path in self.sessions(run_id):
            found = [r.run.run_id for r in records(path) if r.WhichOneof("record_type") == "run"]
            ids.update(found or [path.stem.removeprefix("run-")])
        return len(ids)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
