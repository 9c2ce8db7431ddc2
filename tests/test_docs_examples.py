"""Every Python example in README.md and docs/ runs as written, in a fresh directory.

How a page is read (markers are HTML comments: the site does not show them):

- Every ```` ```python ```` block is an example. By default each runs **alone**: a fresh
  interpreter (``python -c``, the block as ``__main__``), a fresh temporary directory, and
  the environment of a user who set nothing (no ``TRACELET_*`` variables, collectors on).
- ``<!-- examples: sequence -->`` anywhere on a page: the page is one session. Its blocks
  run in page order in one interpreter (one ``__main__`` namespace) and one directory, as
  a reader pasting them one after the other would (analysis, plugins, lightning).
- Markers on the lines just above a block (blank lines between are allowed):

  ``<!-- fails: ConfigurationError -->`` or ``<!-- fails: ConfigurationError: some text -->``
      the block must raise that exception (its class or a base class of that name), its
      message holding the text. A ```` ```text ```` block right after it shows the error as
      Python's last line of a traceback does (``RuntimeError: message``), and is checked.
  ``<!-- skip: reason -->``
      the block cannot run here (a launcher, a service that cannot run on these machines);
      pytest reports it skipped, with the reason.
  ``<!-- uses: mlflow_server at http://localhost:5000 -->``
      the block needs a service, started by a fixture (``SERVICES``): ``mlflow_server``
      (also in ``MLFLOW_TRACKING_URI``), ``aim_server``, ``wandb_offline``,
      ``clearml_offline`` (W&B and ClearML in offline mode, their folders in the test's
      directory). ``at ADDRESS`` names the placeholder the page shows: the test replaces
      it with the service's real address before the block runs, and it must be there.
  ``<!-- file: my_tracker/plugin.py -->``
      the block is a file of the example: it is written at that path (in the page's
      directory, and in that of every later block of the page), not run.
  ``<!-- installed: my-tracker -->``
      on a ```` ```toml ```` block of ``[project.entry-points.<group>]`` tables: they are
      registered as ``pip install`` of that distribution would (a ``.dist-info`` folder in
      the page's directory, which is on ``sys.path``).
  ``<!-- pytest: tests/test_conformance.py -->``
      the block is a test module: written at that path, then run by ``python -m pytest``,
      which must pass.
  ``<!-- undelivered: mlflow -->``
      the block leaves that backend's batches in the journal on purpose (no server).

- After the interpreter exits (status 0), every run in ``./.tracelet`` must have ended
  (not ``running``, not ``crashed``) and every backend must have accepted every batch,
  unless marked ``undelivered``: an example that "works" while its server is unreachable
  fails here.
- A block followed by a paragraph starting ``prints``, then either an inline
  ```` `text` ```` or a ```` ```text ```` block, must print exactly that as the last lines of
  its output.
- An example that imports torch, Lightning or Transformers, starts servers of its own, or
  uses ``mlflow_server`` or ``aim_server`` is marked ``slow`` (its whole page, for a
  sequence).

The ``tracelet ...`` lines of ```` ```bash ```` blocks are parsed by the command's argument
parser (not run), so a documented command or option that does not exist is caught.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

FENCE = re.compile(r"^```(\w*)\s*$")
COMMENT = re.compile(r"^<!--\s*(.*?)\s*-->\s*$")
MARKER = re.compile(
    r"^(fails|skip|uses|file|installed|pytest|undelivered|examples)\s*(?::\s*(.*))?$", re.S
)
PRINTS = re.compile(r"^prints(?:\s+`([^`]*)`)?")
SEQUENCE = "<!-- examples: sequence -->"
TESTS = str(Path(__file__).resolve().parent)
DRIVER = (
    f"import sys; sys.path.insert(0, {TESTS!r}); import test_docs_examples as docs; "
    "sys.exit(docs.drive(sys.argv[1]))"
)
"""What runs each example's interpreter: :func:`drive`, from this module."""
RUN_TIMEOUT = 280.0
"""Seconds one interpreter (one block, or one sequence page) may take."""


@dataclass
class Block:
    """One fenced block of a page, with its markers."""

    page: Path
    line: int
    """The line of the opening fence (1-based); the code starts on the next one."""
    language: str
    code: str
    markers: dict[str, list[str]] = field(default_factory=dict)
    prints: list[str] | None = None
    """The output the page says the block prints (its last lines), if it says so."""
    shown_after: list[str] | None = None
    """A ```` ```text ```` block right after this one (only blank lines between)."""

    @property
    def where(self) -> str:
        page = self.page.relative_to(ROOT) if self.page.is_relative_to(ROOT) else self.page
        return f"{page}:{self.line}"

    def marker(self, name: str) -> str | None:
        values = self.markers.get(name)
        return values[-1] if values else None

    @property
    def kind(self) -> str:
        """``run``, ``file`` (written, not run), ``pytest``, or ``shown`` (not Python)."""
        if "file" in self.markers or "installed" in self.markers:
            return "file"
        if "pytest" in self.markers:
            return "pytest"
        return "run" if self.language == "python" else "shown"


def read_page(page: Path) -> list[Block]:
    """The fenced blocks of ``page``, with the markers above each and what it prints."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: dict[str, list[str]] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        comment = COMMENT.match(line)
        opening = FENCE.match(line)
        if comment and MARKER.match(comment.group(1)):
            name, value = MARKER.match(comment.group(1)).groups()
            if name != "examples":
                pending.setdefault(name, []).append((value or "").strip())
        elif opening and opening.group(1):
            end = index + 1
            while end < len(lines) and lines[end].rstrip() != "```":
                end += 1
            code = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(Block(page, index + 1, opening.group(1), code, pending))
            blocks[-1].prints = _printed_after(lines, end + 1)
            blocks[-1].shown_after = _text_after(lines, end + 1)
            pending = {}
            index = end
        elif line.strip() and pending:
            raise AssertionError(f"{page.relative_to(ROOT)}:{index + 1}: a marker before text")
        index += 1
    return blocks


def _printed_after(lines: list[str], index: int) -> list[str] | None:
    """What a ``prints ...`` paragraph after a block (ending before ``index``) shows."""
    while index < len(lines) and not lines[index].strip():
        index += 1
    said = PRINTS.match(lines[index]) if index < len(lines) else None
    if said is None:
        return None
    if said.group(1) is not None:
        return [said.group(1)]
    while index < len(lines) and lines[index].strip():  # the rest of the paragraph
        index += 1
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or not FENCE.match(lines[index]):
        raise AssertionError(f"'prints' without a block or `text` before line {index + 1}")
    end = index + 1
    while lines[end].rstrip() != "```":
        end += 1
    return lines[index + 1 : end]


def _text_after(lines: list[str], index: int) -> list[str] | None:
    """The lines of a ```` ```text ```` block starting at ``index`` (after blank lines)."""
    while index < len(lines) and not lines[index].strip():
        index += 1
    if index >= len(lines) or lines[index].rstrip() != "```text":
        return None
    end = index + 1
    while lines[end].rstrip() != "```":
        end += 1
    return lines[index + 1 : end]


def is_sequence(page: Path) -> bool:
    return SEQUENCE in page.read_text(encoding="utf-8")


def python_blocks() -> Iterator[Block]:
    for page in PAGES:
        for block in read_page(page):
            if block.kind in ("run", "pytest"):
                yield block


# --- the driver: runs in the example's own interpreter -------------------------------------


def drive(spec_path: str) -> int:
    """Run the steps of ``spec_path`` (JSON) in this interpreter, one ``__main__`` module
    for all, writing one JSON line of outcome per step to the spec's ``results`` file."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    sys.argv = ["-c"]
    sys.path.remove(TESTS)  # the example sees a user's sys.path
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = main
    with open(spec["results"], "a", encoding="utf-8") as results:
        for step in spec["steps"]:
            outcome: dict[str, Any] = {"line": step["line"], "start": _offsets()}
            try:
                _run_step(step, main)
            except BaseException as error:  # the outcome is checked by the test
                outcome["error"] = type(error).__name__
                outcome["bases"] = [kind.__name__ for kind in type(error).__mro__]
                outcome["message"] = str(error)
                outcome["traceback"] = "".join(traceback.format_exception(error))
            outcome["end"] = _offsets()
            results.write(json.dumps(outcome) + "\n")
            results.flush()
    return 0


def _offsets() -> list[int]:
    """Where standard output and error stand (both are files the test reads)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    return [os.lseek(1, 0, os.SEEK_CUR), os.lseek(2, 0, os.SEEK_CUR)]


def _run_step(step: dict[str, Any], main: types.ModuleType) -> None:
    if step["kind"] == "file":
        path = Path(step["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(step["code"], encoding="utf-8")
    elif step["kind"] == "pytest":
        path = Path(step["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(step["code"], encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
        sys.stdout.write(done.stdout)
        if done.returncode != 0:
            raise AssertionError(f"pytest {path} exited {done.returncode}:\n{done.stdout}")
    else:
        # Blank lines first, so that tracebacks name the page's own line numbers.
        code = compile("\n" * step["line"] + step["code"], step["page"], "exec")
        exec(code, main.__dict__)


# --- the tests -------------------------------------------------------------------------------


SERVICES = {
    "mlflow_server": lambda server: (server.url, {"MLFLOW_TRACKING_URI": server.url}),
    "aim_server": lambda server: (f"http://127.0.0.1:{server.port}", {}),
    "wandb_offline": lambda folder: (None, {}),
    "clearml_offline": lambda folder: (None, {}),
}
"""The services a block may use: fixture name -> its (address, environment variables).
The W&B and ClearML fixtures set their variables themselves (offline mode, folders)."""

HEAVY = re.compile(
    r"^\s*(import|from)\s+(torch|lightning|pytorch_lightning|transformers)\b|Server\(", re.M
)
"""Code that makes an example slow: torch and its trainers, servers of its own."""


@dataclass
class Session:
    """One interpreter's run of some blocks of a page."""

    outcomes: dict[int, dict[str, Any]]
    """Each block's outcome, by its line."""
    done: subprocess.CompletedProcess[str]
    left: list[str]
    """What the run left wrong in the local store: runs not ended, batches undelivered."""


_sessions: dict[Path, Session] = {}
"""The sequence pages already run."""


@pytest.fixture(scope="session")
def aim_server(tmp_path_factory):
    """A real ``aim server`` for the session (started on first use)."""
    from tracelet_aim.testing import AimServer

    server = AimServer(tmp_path_factory.mktemp("aim-server"))
    server.start()
    yield server
    server.stop()


def _step(block: Block, folder: Path, request: pytest.FixtureRequest, env: dict[str, str]):
    """What the driver does for ``block`` (run it, or write its files into ``folder``),
    starting the services it uses and adding their variables to ``env``."""
    code = block.code
    for use in block.markers.get("uses", []):
        name, _, placeholder = use.partition(" at ")
        assert name in SERVICES, f"{block.where}: unknown service {name!r}"
        address, variables = SERVICES[name](request.getfixturevalue(name))
        env.update(variables)
        if placeholder:
            assert placeholder in code, f"{block.where}: {placeholder!r} is not in the block"
            code = code.replace(placeholder, address)
    step = {"kind": block.kind, "line": block.line, "page": str(block.page), "code": code}
    installed = block.marker("installed")
    if installed is not None:
        dist_info = folder / f"{installed.replace('-', '_')}-0.dist-info"
        return [
            {**step, "path": str(dist_info / name), "code": text}
            for name, text in _dist_info(installed, code).items()
        ]
    if block.kind in ("file", "pytest"):
        step["path"] = str(folder / (block.marker("file") or block.marker("pytest")))
    return [step]


def _dist_info(name: str, toml: str) -> dict[str, str]:
    """The files of an installed distribution ``name`` with the entry points of ``toml``."""
    import tomllib

    groups = tomllib.loads(toml)["project"]["entry-points"]
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in points.items())
        for group, points in groups.items()
    )
    return {
        "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0\n",
        "entry_points.txt": entry_points,
    }


def run_blocks(blocks: list[Block], folder: Path, request: pytest.FixtureRequest) -> Session:
    """Run ``blocks`` in one fresh interpreter in the new folder ``folder``, as a user who
    set nothing would (no ``TRACELET_*`` variables, the collectors on)."""
    folder.mkdir()
    variables: dict[str, str] = {}
    steps = [step for block in blocks for step in _step(block, folder, request, variables)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACELET_")} | variables
    spec = folder.parent / f"{folder.name}.spec.json"
    results = folder.parent / f"{folder.name}.results.jsonl"
    spec.write_text(json.dumps({"steps": steps, "results": str(results)}))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(spec)],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            timeout=RUN_TIMEOUT,
        )
        out.seek(0)
        err.seek(0)
        output, errors = out.read(), err.read()
    outcomes: dict[int, dict[str, Any]] = {}
    for line in results.read_text().splitlines() if results.exists() else []:
        outcome = json.loads(line)
        start, end = outcome["start"], outcome["end"]
        outcome["stdout"] = output[start[0] : end[0]].decode(errors="replace")
        outcome["stderr"] = errors[start[1] : end[1]].decode(errors="replace")
        outcomes[outcome["line"]] = outcome
    output, errors = output.decode(errors="replace"), errors.decode(errors="replace")
    done = subprocess.CompletedProcess(done.args, done.returncode, output, errors)
    allowed = {name for block in blocks for name in block.markers.get("undelivered", [])}
    return Session(outcomes, done, _left_in_store(folder / ".tracelet", allowed))


def _left_in_store(path: Path, undelivered: set[str]) -> list[str]:
    """Runs of the store at ``path`` not ended, and batches a backend (other than those
    in ``undelivered``) never accepted: an example leaves every run ended and delivered."""
    from tracelet.storage import LocalStore

    if not (path / "tracelet.db").exists():
        return []
    store = LocalStore(path)
    try:
        left = []
        for run in store.list_runs():
            if run.status.value in ("running", "crashed"):
                left.append(f"run {run.name!r} is {run.status.value}")
            for backend, batches in store.undelivered(run.id).items():
                if batches and backend not in undelivered:
                    left.append(f"run {run.name!r}: {batches} batches never reached {backend}")
        return left
    finally:
        store.close()


def _check(block: Block, session: Session) -> None:
    """The block ran as the page says: no exception (or the one marked), what it prints."""
    outcome, done = session.outcomes.get(block.line), session.done
    assert outcome is not None, (
        f"{block.where} never ran (exit status {done.returncode}):\n{done.stderr[-3000:]}"
    )
    expected = block.marker("fails")
    if expected is not None:
        kind, _, message = expected.partition(":")
        assert "error" in outcome, f"{block.where} should raise {expected}, and did not"
        assert kind.strip() in outcome["bases"], outcome["traceback"]
        assert message.strip() in outcome["message"], outcome["traceback"]
        if block.shown_after is not None:  # the error as the page shows it
            shown = f"{outcome['error']}: {outcome['message']}"
            assert block.shown_after[-1] == shown, f"{block.where} raised {shown}"
    elif "error" in outcome:
        pytest.fail(f"{block.where} raised:\n{outcome['traceback']}{outcome['stderr'][-2000:]}")
    if block.prints is not None:
        printed = [line.rstrip() for line in outcome["stdout"].splitlines()]
        assert printed[-len(block.prints) :] == block.prints, (
            f"{block.where} printed:\n{outcome['stdout']}"
        )


def _ended_well(where: str, session: Session) -> None:
    """The interpreter exited cleanly and left every run ended and delivered."""
    done = session.done
    assert done.returncode == 0, f"{where}: exit status {done.returncode}\n{done.stderr[-3000:]}"
    assert not session.left, f"{where}: " + "; ".join(session.left) + "\n" + done.stderr[-3000:]


def _example_params() -> Iterator[Any]:
    for block in python_blocks():
        blocks = read_page(block.page) if is_sequence(block.page) else [block]
        heavy = any(
            HEAVY.search(b.code) or {"mlflow_server", "aim_server"} & set(_services(b))
            for b in blocks
        )
        yield pytest.param(block, id=block.where, marks=[pytest.mark.slow] if heavy else [])


def _services(block: Block) -> list[str]:
    return [use.partition(" at ")[0] for use in block.markers.get("uses", [])]


@pytest.mark.collectors  # as a user runs them: the collectors on
@pytest.mark.parametrize("block", list(_example_params()))
def test_the_example_runs_as_written(block, tmp_path, request):
    reason = block.marker("skip")
    if reason is not None:
        pytest.skip(f"{block.where}: {reason}")
    blocks = read_page(block.page)
    if is_sequence(block.page):  # the whole page, once; then each block's outcome
        runnable = [b for b in blocks if b.kind != "shown" and b.marker("skip") is None]
        if block.page not in _sessions:
            _sessions[block.page] = run_blocks(runnable, tmp_path / "page", request)
        _check(block, _sessions[block.page])
        if block.line == [b for b in runnable if b.kind != "file"][-1].line:  # the last test
            _ended_well(f"{block.page.relative_to(ROOT)}", _sessions[block.page])
        return
    files = [b for b in blocks if b.kind == "file" and b.line < block.line]
    session = run_blocks([*files, block], tmp_path / "example", request)
    _check(block, session)
    _ended_well(block.where, session)


def test_every_marker_is_understood():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, line in enumerate(text.splitlines(), 1):
            comment = COMMENT.match(line)
            if comment and not MARKER.match(comment.group(1)):
                pytest.fail(f"{page.relative_to(ROOT)}:{number}: unknown marker {line!r}")
        for block in read_page(page):
            for name in block.markers:
                assert block.language in ("python", "toml") or name == "skip", block.where


SAMPLE = """# A page

<!-- examples: sequence -->

<!-- file: pkg/mod.py -->
```python
VALUE = 1
```

<!-- fails: ValueError: bad -->
```python
raise ValueError("bad input")
```

```text
ValueError: bad input
```

<!-- uses: mlflow_server at http://localhost:5000 -->
```python
print("http://localhost:5000")
```

prints `http://localhost:5000`.
"""


def test_a_page_is_read_with_its_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    written, failing, served = [b for b in read_page(page) if b.language == "python"]
    assert is_sequence(page)
    assert (written.kind, written.marker("file"), written.line) == ("file", "pkg/mod.py", 6)
    assert (failing.kind, failing.marker("fails")) == ("run", "ValueError: bad")
    assert failing.shown_after == ["ValueError: bad input"]
    assert served.markers["uses"] == ["mlflow_server at http://localhost:5000"]
    assert served.prints == ["http://localhost:5000"]


def test_the_checks_catch_what_the_page_gets_wrong(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(SAMPLE)
    _, failing, served = [b for b in read_page(page) if b.language == "python"]
    done = subprocess.CompletedProcess([], 0, "", "")
    raised = {"error": "ValueError", "bases": ["ValueError", "Exception"], "message": "bad input"}
    _check(failing, Session({failing.line: {**raised, "traceback": ""}}, done, []))
    with pytest.raises(AssertionError, match="should raise"):
        _check(failing, Session({failing.line: {"stdout": ""}}, done, []))
    with pytest.raises(AssertionError):  # another message than the page shows
        _check(
            failing,
            Session({failing.line: {**raised, "message": "bad", "traceback": ""}}, done, []),
        )
    with pytest.raises(AssertionError, match="printed"):
        _check(served, Session({served.line: {"stdout": "http://127.0.0.1:1\n"}}, done, []))
    with pytest.raises(AssertionError, match="never ran"):
        _check(served, Session({}, done, []))


def test_an_example_whose_backend_got_nothing_fails(tmp_path, request):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport tracelet\n\nconfig = {'local': {'path': '/dev/null/x'}, "
        "'flush_timeout': 0.2}\nwith tracelet.start_logging('lost', config=config) as exp:\n"
        "    exp.log_metric('loss', 1.0, 0)\n```\n"
    )
    session = run_blocks(read_page(page), tmp_path / "example", request)
    assert session.left == ["run 'lost': 1 batches never reached local"]


def cli_lines() -> Iterator[Any]:
    """Each ``tracelet ...`` command of the pages' bash blocks, as arguments."""
    for page in PAGES:
        for block in read_page(page):
            if block.language != "bash":
                continue
            for number, line in enumerate(block.code.splitlines(), block.line + 1):
                command = line.strip().removeprefix("python -m ")
                if not command.startswith("tracelet "):
                    continue
                words = shlex.split(command, comments=True)
                for stop in (">", "|", "&&"):
                    if stop in words:
                        words = words[: words.index(stop)]
                yield pytest.param(words[1:], id=f"{page.relative_to(ROOT)}:{number}")


@pytest.mark.parametrize("args", list(cli_lines()))
def test_the_documented_command_lines_parse(args):
    from tracelet.cli import build_parser

    stderr = io.StringIO()
    try:
        sys.stderr, saved = stderr, sys.stderr
        build_parser().parse_args(args)
    except SystemExit as exit:
        pytest.fail(f"tracelet {shlex.join(args)}: exit status {exit.code}\n{stderr.getvalue()}")
    finally:
        sys.stderr = saved
