"""The examples of docs/integrations/ run as written and print what the pages say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from python_script import run_script

PAGES = Path(__file__).resolve().parents[1] / "docs" / "integrations"


def examples(page: str) -> tuple[list[str], str | None]:
    """The page's Python blocks (a later one continues the first), and the output the
    page says the first prints."""
    text = (PAGES / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    printed = re.search(r"```\n\nprints `(.*?)`", text, re.S)
    return blocks, printed.group(1) if printed else None


@pytest.mark.slow
@pytest.mark.parametrize("page", ["tensorboard.md", "watch.md", "lightning.md", "transformers.md"])
def test_the_example_runs_as_written(page, tmp_path):
    blocks, expected = examples(page)
    for folder in ("first", "all"):
        (tmp_path / folder).mkdir()
    done = run_script(blocks[0], timeout=240, cwd=tmp_path / "first")
    assert done.returncode == 0, done.stderr[-3000:]
    if expected is not None:
        assert done.stdout.strip().splitlines()[-1] == expected
    if len(blocks) > 1:  # the later blocks, run after the first as the page reads
        done = run_script("\n".join(blocks), timeout=240, cwd=tmp_path / "all")
        assert done.returncode == 0, done.stderr[-3000:]
