"""The examples of docs/integrations/ run as written and print what the pages say."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from python_script import run_script

PAGES = Path(__file__).resolve().parents[1] / "docs" / "integrations"


def example(page: str) -> tuple[str, str | None]:
    """The page's first Python block, and the output the page says it prints."""
    text = (PAGES / page).read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    printed = re.search(r"```\n\nprints `(.*?)`", text, re.S)
    return code, printed.group(1) if printed else None


@pytest.mark.slow
@pytest.mark.parametrize("page", ["tensorboard.md", "watch.md", "lightning.md", "transformers.md"])
def test_the_example_runs_as_written(page, tmp_path):
    code, expected = example(page)
    done = run_script(code, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    if expected is not None:
        assert done.stdout.strip().splitlines()[-1] == expected
