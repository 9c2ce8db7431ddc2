"""Keeping secrets out of everything Tracelet records or sends."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_WORDS = re.compile(
    r"(^|[_.-])(key|token|secret|password|passwd|credentials?|auth)($|[_.-])", re.IGNORECASE
)
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def is_secret_key(key: str) -> bool:
    """Whether a setting's name says it holds a secret (``api_key``, ``password``, ...)."""
    return bool(_SECRET_WORDS.search(key))


def redact_uri(text: str) -> str:
    """Remove ``user:password@`` from every URI in ``text``."""
    return _URI_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", text)


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with secret-named entries masked and URI credentials removed."""
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            clean[key] = redact(value)
        elif is_secret_key(str(key)) and value not in (None, ""):
            clean[key] = REDACTED
        elif isinstance(value, str):
            clean[key] = redact_uri(value)
        else:
            clean[key] = value
    return clean
