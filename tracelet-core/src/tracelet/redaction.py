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


def redact_argv(argv: list[str]) -> list[str]:
    """A command line with the values of secret-named options masked.

    ``--api-key X``, ``--api-key=X`` and ``API_KEY=X`` all become ``***``; URIs lose their
    credentials.
    """
    clean: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            clean.append(REDACTED)
            hide_next = False
            continue
        key, sep, _ = arg.partition("=")
        if is_secret_key(key.lstrip("-")):
            if sep:
                clean.append(f"{key}={REDACTED}")
                continue
            hide_next = arg.startswith("-")
        clean.append(redact_uri(arg))
    return clean
