"""The documentation is a site: ``mkdocs build --strict`` passes (a broken link, a missing
anchor, a page left out of the navigation or an API reference that cannot be rendered is
an error), and every page of docs/ is in its navigation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def nav_pages(entries: list) -> list[str]:
    """The pages named anywhere in mkdocs.yml's ``nav``."""
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = set(nav_pages(config["nav"]))
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"
    assert any(page.startswith("reference/") for page in listed), "the API reference"


def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice, not ours
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-5000:]
    assert (tmp_path / "reference" / "experiment" / "index.html").is_file()
    rendered = (tmp_path / "reference" / "tracelet" / "index.html").read_text(encoding="utf-8")
    assert "tracelet.interface.start_logging" in rendered, "mkdocstrings rendered the API"
