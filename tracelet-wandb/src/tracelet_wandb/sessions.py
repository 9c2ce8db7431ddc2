"""What a W&B run already holds from earlier sessions, so a resumed run continues it.

Online, W&B hands a resumed run its summary, config, tags and step. Offline there is no
server: the earlier sessions are run files in the same ``wandb`` folder, read back here.
Either way the result is a :class:`Delivered`, read once when a session starts: the last
batch W&B has whole, the history rows written, the names and tags mapped and the names it
already holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from tracelet_wandb.names import NAMES_KEY, ROWS_KEY, SEQ_KEY, TAGS_KEY
from tracelet_wandb.run_file import item_path, item_value, items_dict, records


@attrs.frozen
class Delivered:
    """Where an existing W&B run stands, as far as Tracelet's delivery is concerned."""

    seq: int = 0
    """The last batch delivered whole."""
    rows: int = 0
    """History rows written when that batch was whole."""
    next_row: int = 0
    """History rows written in all: more than ``rows`` when the next batch was cut off."""
    names: Mapping[str, str] = attrs.field(factory=dict)
    """W&B name to original name, for every mapped metric or config key."""
    tag_names: Mapping[str, str] = attrs.field(factory=dict)
    """W&B tag to original, for every tag cut to fit."""
    existing: frozenset[str] = frozenset()
    """Metric and config keys the run already holds."""
    config: Mapping[str, Any] = attrs.field(factory=dict)
    """The run's config so far (offline: a new session starts without it)."""
    tags: tuple[str, ...] = ()
    """The run's tags so far (offline: a new session starts without them)."""


def from_summary(
    summary: Mapping[str, Any], next_row: int, existing: Iterable[str], **held: Any
) -> Delivered:
    """The delivery state recorded in a run's summary (Tracelet's ``tracelet/*`` keys)."""
    return Delivered(
        seq=int(summary.get(SEQ_KEY) or 0),
        rows=int(summary.get(ROWS_KEY) or 0),
        next_row=next_row,
        names=dict(summary.get(NAMES_KEY) or {}),
        tag_names=dict(summary.get(TAGS_KEY) or {}),
        existing=frozenset(existing),
        **held,
    )


def from_live_run(run: Any) -> Delivered:
    """The state of a run W&B resumed online (its summary, config and step)."""
    summary = dict(run.summary)
    return from_summary(summary, int(run.step or 0), [*summary, *run.config.keys()])


def from_run_files(paths: Iterable[Path]) -> Delivered:
    """The state of an offline run, from the run files of its earlier sessions."""
    summary: dict[str, Any] = {}
    config: dict[str, Any] = {}
    tags: tuple[str, ...] = ()
    next_row = 0
    for path in paths:
        for record in records(path):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                for item in record.history.item:
                    if item_path(item) == ("_step",):
                        next_row = max(next_row, int(item_value(item)) + 1)
            elif kind == "summary":
                summary.update(items_dict(record.summary.update))
            elif kind == "config":
                config.update(items_dict(record.config.update))
            elif kind == "run":
                config.update(items_dict(record.run.config.update))
                tags = tuple(record.run.tags)
    config.pop("_wandb", None)
    existing = [*summary, *config]  # the summary holds every history key's latest value
    return from_summary(summary, next_row, existing, config=config, tags=tags)
