"""Offline ClearML sessions of a Tracelet run: where they are and what they hold.

Offline, each start of a run (a resumed run starts again) is an offline session of its
own, ``<CLEARML_CACHE_DIR>/offline/<task id>/`` with ``task.json``, ``metrics.jsonl``,
``log.jsonl`` and ``data/``. Tracelet marks its sessions with user properties:
``tracelet_run_id``, ``tracelet_session`` (1, 2, ...), ``tracelet_seq`` (the last batch
delivered whole) and ``tracelet_status``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs

from tracelet_clearml.names import PARAM_SECTION

RUN_ID = "tracelet_run_id"
SESSION = "tracelet_session"
SEQ = "tracelet_seq"
STATUS = "tracelet_status"


def properties(task: dict[str, Any]) -> dict[str, str]:
    """A ``task.json``'s user properties, name to value."""
    section = task.get("hyperparams", {}).get("properties", {})
    return {name: entry.get("value", "") for name, entry in section.items()}


def session_tasks(offline_dir: str | Path, run_id: str) -> list[tuple[Path, dict[str, Any]]]:
    """The offline sessions of Tracelet run ``run_id``, in session order: each folder with
    its ``task.json``, read once."""
    found = []
    for task_file in Path(offline_dir).glob("*/task.json"):
        task = read_task(task_file)
        if task is None:
            continue  # not ClearML's
        values = properties(task)
        if values.get(RUN_ID) == run_id:
            found.append((int(values.get(SESSION) or 0), task_file.parent, task))
    return [(folder, task) for _, folder, task in sorted(found, key=lambda f: f[:2])]


def read_task(task_file: Path, patience: float = 2.0) -> dict[str, Any] | None:
    """A session's ``task.json``, or None if it is not one. ClearML rewrites the file in
    place, from its own threads even after ``close`` returns: a read that catches it
    half-written is tried again, for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return json.loads(task_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


_CAST = {"int": int, "float": float, "bool": lambda v: v == "True"}


def typed(entry: dict[str, Any]) -> Any:
    """A hyperparameter's value as logged: ClearML keeps it as text with its type's name
    (and ``None`` as an empty text with no type)."""
    kind = entry.get("type")
    if kind is None and entry["value"] == "":
        return None
    return _CAST.get(kind or "", str)(entry["value"])


@attrs.frozen
class Held:
    """What earlier sessions of a run hold: how many they are, the last batch delivered
    whole, the parameters (section ``General``, typed) and the latest tags."""

    sessions: int = 0
    seq: int = 0
    params: dict[str, Any] = attrs.field(factory=dict)
    tags: list[str] = attrs.field(factory=list)


def held(tasks: list[dict[str, Any]]) -> Held:
    """What the sessions' ``task.json`` contents ``tasks`` hold, oldest first."""
    params: dict[str, Any] = {}
    tags: list[str] = []
    seq = 0
    for task in tasks:
        for name, entry in task.get("hyperparams", {}).get(PARAM_SECTION, {}).items():
            params[f"{PARAM_SECTION}/{name}"] = typed(entry)
        tags = list(task.get("tags", tags))
        seq = max(seq, int(properties(task).get(SEQ) or 0))
    return Held(len(tasks), seq, params, tags)
