"""Code quality gates that are part of the test command: ruff, import cost, the README."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "wandb", "clearml", "aim", "torch", "git", "numpy", "yaml", "cattrs")


def ruff(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    return subprocess.run([executable, *args], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_is_clean():
    result = ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_tracelet_loads_no_heavy_module():
    code = f"import sys, tracelet\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_starting_a_local_run_loads_no_tracking_sdk(tmp_path):
    code = (
        "import sys, tracelet\n"
        "tracelet.start_logging('x').stop()\n"
        "print(','.join(m for m in ('mlflow', 'wandb', 'clearml', 'aim', 'torch', 'git')"
        " if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert result.stdout.strip() == ""


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.search(r"## Quick start.*?```python\n(.*?)```", text, re.S).group(1)


def test_readme_starts_with_the_two_commands_ci_runs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    commands = [line.split("#")[0].strip() for line in commands if line.strip()]
    assert commands == ["python -m pip install -r requirements-dev.txt", "python -m pytest"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in commands:
        assert command in ci


@pytest.mark.slow
def test_readme_quick_start_runs_as_written(tmp_path):
    code = readme_python_block()
    assert len(code.strip().splitlines()) <= 12
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "baseline finished 100"
