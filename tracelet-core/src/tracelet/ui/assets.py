"""The page's files: its own (``static/``) and plotly.js, served from the installed
``plotly`` package (no CDN, no copy in this repository). Each is read and gzipped once."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tracelet.exceptions import ConfigurationError

STATIC = Path(__file__).with_name("static")
INSTALL = 'pip install "tracelet-core[ui]"'
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
PAGE_FILES = ("index.html", "app.js", "style.css")


@dataclass(frozen=True)
class Asset:
    """A file's bytes, gzipped too, with an ETag of its content."""

    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


@lru_cache(maxsize=8)
def load(path: Path) -> Asset:
    """``path`` read and gzipped (once per process)."""
    body = path.read_bytes()
    media_type = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    if media_type.startswith("text/"):
        media_type += "; charset=utf-8"
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return Asset(body, gzip.compress(body, compresslevel=6, mtime=0), media_type, etag)


def page_file(name: str) -> Path:
    """One of the page's own files."""
    if name not in PAGE_FILES:
        raise FileNotFoundError(name)
    return STATIC / name


def plotly_js() -> Path:
    """``plotly.min.js`` as the installed ``plotly`` package ships it; without it, a
    :class:`ConfigurationError` that says what to install."""
    spec = importlib.util.find_spec("plotly")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "package_data" / "plotly.min.js"
        if path.is_file():
            return path
    raise ConfigurationError(f"tracelet ui needs plotly's bundled plotly.js: {INSTALL}")
