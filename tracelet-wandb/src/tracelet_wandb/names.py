"""What W&B accepts as names, and how Tracelet maps what it would mangle.

W&B takes any string as a metric or config key, but some break it:

- a ``.`` reads as nesting in W&B's summary and UI, and keeps a metric off its custom
  x-axis (wandb issue 6659): ``val.loss`` becomes ``val_loss``;
- keys starting with ``_`` are W&B's own (``_step``, ``_timestamp``, ``_runtime``,
  ``_wandb``): ``_loss`` becomes ``u_loss``;
- a config key loses leading and trailing ``-``: ``-lr`` becomes ``_lr``, then ``u_lr``;
- names differing only in case share one chart: the second gets a hash suffix;
- ``tracelet/step`` and the other ``tracelet/*`` keys Tracelet writes are its own.

A tag is 1 to 64 characters: a longer one is cut with a hash suffix. Every name mapping is
recorded in the run's summary under ``tracelet/names`` (W&B name to original), and loaded
back when the run is resumed; cut tags under ``tracelet/tags``. Artifact names: at most
128 characters, no ``/`` or ``:``.
"""

from __future__ import annotations

import re

from tracelet.plugins import NameMap, with_suffix

STEP_KEY = "tracelet/step"
"""The history key holding each row's Tracelet step: every metric's x-axis."""
SEQ_KEY = "tracelet/seq"
"""Summary key: the last batch delivered whole."""
ROWS_KEY = "tracelet/rows"
"""Summary key: the history rows written when that batch was whole."""
NAMES_KEY = "tracelet/names"
"""Summary key: W&B name to original name, for every metric or config key Tracelet mapped."""
TAGS_KEY = "tracelet/tags"
"""Summary key: W&B tag to original, for every tag cut to 64 characters."""
OWN_KEYS = (STEP_KEY, SEQ_KEY, ROWS_KEY, NAMES_KEY, TAGS_KEY)
MAX_TAG = 64
MAX_ARTIFACT_NAME = 128

_ARTIFACT_ILLEGAL = re.compile(r"[/:]")


def legal_key(name: str) -> str:
    """``name`` as a W&B metric, config or tag key (unchanged when W&B keeps it as is)."""
    text = name.replace(".", "_")
    if text.startswith("-") or text.endswith("-"):
        text = "_" * (len(text) - len(text.lstrip("-"))) + text.strip("-")
        text += "_" * (len(name) - len(name.rstrip("-")))
    if not text:
        return "unnamed"
    return f"u{text}" if text.startswith("_") else text


def name_map() -> NameMap:
    """The name map of one W&B run: case-insensitive, Tracelet's own keys reserved."""
    names = NameMap(legal_key, fold=str.casefold)
    names.reserve(OWN_KEYS)
    return names


def legal_tag(tag: str) -> str:
    """``tag`` within W&B's 1 to 64 characters."""
    if not tag:
        return "unnamed"
    return tag if len(tag) <= MAX_TAG else with_suffix(tag, tag, MAX_TAG)


def legal_artifact_name(name: str) -> str:
    """``name`` as a W&B artifact name: no ``/`` or ``:``, at most 128 characters."""
    text = _ARTIFACT_ILLEGAL.sub("_", name) or "artifact"
    return text if len(text) <= MAX_ARTIFACT_NAME else with_suffix(text, name, MAX_ARTIFACT_NAME)
