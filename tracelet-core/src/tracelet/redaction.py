"""Keeping secrets out of everything Tracelet records or sends.

A value is secret when its name says so: any word of the name (split on ``_ . -``,
spaces and camelCase) is a secret word such as ``token`` or ``password``, or the name
contains a joined one such as ``apikey``. URIs lose their ``user:password@`` part and the
values of secret-named query parameters.

Parameters and tags the user logs follow a narrower rule (:func:`is_secret_param`): the
*last* word of the name must say it, so that hyperparameters such as ``max_tokens``,
``token_budget`` or ``key_dim`` stay visible while ``db/password``, ``hf_token`` and
``apiKey`` are masked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"
_SECRET_WORDS = {
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "bearer",
    "cookie",
    "session",
    "signature",
}
_JOINED = (
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
    "accesstoken",
    "authtoken",
    "password",
    "passphrase",
    "credential",
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORDS = re.compile(r"[^a-z0-9]+")
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s?#]*@")
_QUERY_VALUE = re.compile(r"(?P<key>[?&;][^=&;#\s]+)=(?P<value>[^&;#\s]*)")


def is_secret_key(key: str) -> bool:
    """Whether a name says its value is secret (``api_key``, ``apiKey``, ``DB_PASSWORD`` ...)."""
    words = _WORDS.split(_CAMEL.sub("_", key).lower())
    joined = "".join(words)
    return any(word in _SECRET_WORDS for word in words) or any(j in joined for j in _JOINED)


_PARAM_WORDS = {"password", "passwd", "secret", "token", "credential", "credentials", "auth"}
_PARAM_JOINED = {"apikey", "accesskey", "privatekey", "secretkey", "accesstoken", "authtoken"}


def is_secret_param(key: str) -> bool:
    """Whether a parameter or tag name (``db/password``, ``hf_token``, ``apiKey``) says its
    value is secret: its last word is a secret word, or its last two words join into one."""
    words = [w for w in _WORDS.split(_CAMEL.sub("_", key).lower()) if w]
    if not words:
        return False
    return words[-1] in _PARAM_WORDS or "".join(words[-2:]) in _PARAM_JOINED


def redact_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (flat parameters or tags) with secret-named values masked and every URI's
    credentials removed; the keys stay, so a reader sees that a value was withheld."""
    return {
        key: REDACTED
        if is_secret_param(key) and value not in (None, "")
        else redact_uri(value)
        if isinstance(value, str)
        else value
        for key, value in values.items()
    }


def redact_uri(text: str) -> str:
    """Remove ``user:password@`` and secret query values from every URI in ``text``."""
    text = _URI_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", text)
    return _QUERY_VALUE.sub(_redact_query_value, text)


def strip_uri_credentials(text: str) -> str:
    """Every URI in ``text`` without its ``user:password@`` part (scheme, host, port and path
    kept, so it still names the same place) and with secret query values masked."""
    text = _URI_CREDENTIALS.sub(r"\g<scheme>", text)
    return _QUERY_VALUE.sub(_redact_query_value, text)


def _redact_query_value(match: re.Match[str]) -> str:
    key = match.group("key")
    return f"{key}={REDACTED}" if is_secret_key(key[1:]) else match.group(0)


def redact(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with secret-named entries masked and URI credentials removed
    (the URI still names the same place), looking into nested mappings and lists."""
    return {key: _redact_value(str(key), value) for key, value in values.items()}


def _redact_value(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return redact(value)
    if is_secret_key(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return strip_uri_credentials(value)
    if isinstance(value, list | tuple):
        return [_redact_value(key, item) for item in value]
    return value


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
