"""Offline ClearML sessions of a Tracelet run: where they are and what they hold.

Offline, each start of a run (a resumed run starts again) is an offline session of its
own, ``<CLEARML_CACHE_DIR>/offline/<task id>/`` with ``task.json``, ``metrics.jsonl``,
``log.jsonl`` and ``data/``. Tracelet marks its sessions with user properties:
``tracelet_run_id``, ``tracelet_session`` (1, 2, ...), ``tracelet_seq`` (the last batch
delivered whole) and ``tracelet_status``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_ID = "tracelet_run_id"
SESSION = "tracelet_session"
SEQ = "tracelet_seq"
STATUS = "tracelet_status"


def properties(task: dict[str, Any]) -> dict[str, str]:
    """A ``task.json``'s user properties, name to value."""
    section = task.get("hyperparams", {}).get("properties", {})
    return {name: entry.get("value", "") for name, entry in section.items()}


def session_folders(offline_dir: str | Path, run_id: str) -> list[Path]:
    """The offline session folders of Tracelet run ``run_id``, in session order."""
    found = []
    for task_file in Path(offline_dir).glob("*/task.json"):
        try:
            values = properties(json.loads(task_file.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a session being written, or not ClearML's
        if values.get(RUN_ID) == run_id:
            found.append((int(values.get(SESSION) or 0), task_file.parent))
    return [folder for _, folder in sorted(found)]


_CAST = {"int": int, "float": float, "bool": lambda v: v == "True"}


def typed(entry: dict[str, Any]) -> Any:
    """A hyperparameter's value as logged: ClearML keeps it as text with its type's name
    (and ``None`` as an empty text with no type)."""
    kind = entry.get("type")
    if kind is None and entry["value"] == "":
        return None
    return _CAST.get(kind or "", str)(entry["value"])


def held(folders: list[Path]) -> tuple[dict[str, Any], list[str]]:
    """The parameters (section ``General``, typed) and the latest tags of the sessions in
    ``folders``."""
    params: dict[str, Any] = {}
    tags: list[str] = []
    for folder in folders:
        task = json.loads((folder / "task.json").read_text(encoding="utf-8"))
        for name, entry in task.get("hyperparams", {}).get("General", {}).items():
            params[f"General/{name}"] = typed(entry)
        tags = list(task.get("tags", tags))
    return params, tags


def delivered_seq(folders: list[Path]) -> int:
    """The last batch the sessions in ``folders`` hold whole (0: none)."""
    seq = 0
    for folder in folders:
        task = json.loads((folder / "task.json").read_text(encoding="utf-8"))
        seq = max(seq, int(properties(task).get(SEQ) or 0))
    return seq
