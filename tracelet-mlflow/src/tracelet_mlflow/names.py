"""What MLflow accepts as names and values, and how Tracelet maps what it refuses.

MLflow takes letters (unicode included), digits, ``_ - . space : /`` in metric, parameter
and tag names, at most 250 characters, with no ``..`` path segment and no leading ``/``.
Anything else is mapped once to a legal name (``loss@train`` -> ``loss_train``) and the
mapping is recorded on the run as a tag ``tracelet.name.<legal name>`` = original name.
Parameter values over 6000 characters are cut there with a marker; tags over 5000 too.
The full values stay in the local store.
"""

from __future__ import annotations

import hashlib
import re

MAX_NAME = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
TRUNCATION_MARKER = "...[truncated by tracelet; the full value is in the local store]"

_ILLEGAL = re.compile(r"[^\w\-. :/]")
_DOUBLE_DOTS = re.compile(r"\.\.+")


def legal_name(name: str) -> str:
    """``name`` as MLflow accepts it (unchanged when it already does)."""
    mapped = _DOUBLE_DOTS.sub(lambda m: "_" * len(m.group()), _ILLEGAL.sub("_", name))
    mapped = mapped.lstrip("/") or "_"
    if len(mapped) > MAX_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        mapped = f"{mapped[: MAX_NAME - 9]}~{digest}"
    return mapped


def cut(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending with the truncation marker."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def param_text(value: object) -> str:
    """A parameter value as the text MLflow stores (``None`` as ``"None"``, like MLflow)."""
    return cut(str(value), MAX_PARAM_VALUE)
