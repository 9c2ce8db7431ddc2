"""Many writers on one store: a sweep of processes logging into one ``.tracelet`` at once,
read by ``tracelet list`` and ``tracelet show`` meanwhile, finishes with every run complete.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tracelet.records import RunStatus
from tracelet.storage import LocalStore

WRITERS = 8
POINTS = 100_000
READ_ROUNDS = 3
"""Rounds of ``list`` and ``show`` the readers finish while every run is still live."""

WRITER = textwrap.dedent(
    """
    import logging, sys
    import tracelet

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    index, points = int(sys.argv[1]), int(sys.argv[2])
    print("ready", flush=True)
    sys.stdin.readline()  # every writer starts at the same moment
    exp = tracelet.start_logging(f"sweep-{index}", project="sweep")
    exp.log_params({"index": index, "lr": 10.0 ** -index, "optimizer": "adam"})
    print(exp.id, flush=True)
    for step in range(points):
        exp.log_metric("loss", index + 1.0 / (step + 1), step)
    print("logged", flush=True)
    sys.stdin.readline()  # stop once the readers have read the live runs
    tracelet.stop_logging()
    """
)


def expected_loss(index: int, step: int) -> float:
    """The value writer ``index`` logs at ``step`` (computed exactly as the writer does)."""
    return index + 1.0 / (step + 1)


def start_writers(root: Path) -> list[subprocess.Popen[str]]:
    """Start the writer processes (each waits for a line on stdin before it starts); writer
    ``i`` logs to ``stderr-i.txt``."""
    writers = []
    for index in range(WRITERS):
        with open(root / f"stderr-{index}.txt", "w") as stderr:
            writers.append(
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, str(index), str(POINTS)],
                    cwd=root,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    text=True,
                )
            )
    return writers


def tell_all(writers: list[subprocess.Popen[str]]) -> None:
    """Send every writer the line it waits for, as close together as possible."""
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()


def logs(root: Path) -> str:
    """What the writers wrote to stderr, for a failing assertion's message."""
    return "\n".join(path.read_text() for path in sorted(root.glob("stderr-*.txt")))


def read_line(writer: subprocess.Popen[str]) -> str:
    assert writer.stdout is not None
    return writer.stdout.readline().strip()


def tracelet_cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``tracelet`` command against the store under ``root``."""
    return subprocess.run(
        [sys.executable, "-m", "tracelet", "--store", str(root / ".tracelet"), *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )


def read_round(root: Path, run_id: str) -> list[subprocess.CompletedProcess[str]]:
    """One ``tracelet list`` and one ``tracelet show RUN`` (both checked for success)."""
    done = [tracelet_cli(root, "list"), tracelet_cli(root, "show", run_id)]
    for result in done:
        assert result.returncode == 0, f"{result.args}: {result.stderr}"
        assert "locked" not in result.stderr.lower(), result.stderr
    return done


@pytest.mark.slow
def test_a_sweep_of_writers_shares_one_store_while_it_is_read(tmp_path: Path) -> None:
    writers = start_writers(tmp_path)
    try:
        assert [read_line(writer) for writer in writers] == ["ready"] * WRITERS, logs(tmp_path)
        tell_all(writers)
        run_ids = [read_line(writer) for writer in writers]
        assert all(run_ids), f"every writer started its run: {logs(tmp_path)}"
        rounds = 0
        while rounds < READ_ROUNDS:
            listed, shown = read_round(tmp_path, run_ids[rounds % WRITERS])
            assert listed.stdout.count("sweep-") == WRITERS
            assert "running" in shown.stdout
            rounds += 1
        assert [read_line(writer) for writer in writers] == ["logged"] * WRITERS, logs(tmp_path)
        tell_all(writers)
        while any(writer.poll() is None for writer in writers):
            read_round(tmp_path, run_ids[rounds % WRITERS])
            rounds += 1
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
            writer.wait()
    for index, writer in enumerate(writers):
        stderr = (tmp_path / f"stderr-{index}.txt").read_text()
        assert writer.returncode == 0, f"writer {index} failed: {stderr}"
        assert "locked" not in stderr.lower(), f"writer {index}: {stderr}"
        assert "Traceback" not in stderr, f"writer {index}: {stderr}"
    check_store(tmp_path / ".tracelet", run_ids)


def check_store(path: Path, run_ids: list[str]) -> None:
    """Every run finished, with exactly its points and parameters."""
    store = LocalStore(path, recover=False)
    try:
        runs = store.list_runs(project="sweep")
        assert sorted(run.id for run in runs) == sorted(run_ids)
        assert {run.status for run in runs} == {RunStatus.FINISHED}
        for index, run_id in enumerate(run_ids):
            points = store.metrics(run_id, "loss")
            assert [step for _, _, step, _ in points] == list(range(POINTS))
            values = [value for _, value, _, _ in points]
            assert values == [expected_loss(index, step) for step in range(POINTS)]
            assert store.params(run_id) == {
                "index": index,
                "lr": 10.0**-index,
                "optimizer": "adam",
            }
    finally:
        store.close()


OPENER = textwrap.dedent(  # opens each store in ``argv[2:]`` at its own instant
    """
    import sys, time
    from tracelet.storage import LocalStore

    start, stores = float(sys.argv[1]), sys.argv[2:]
    for number, path in enumerate(stores):
        while time.time() < start + number * 0.05:  # every process opens it at this instant
            pass
        LocalStore(path).close()
    """
)


@pytest.mark.slow
def test_a_new_store_opened_by_every_writer_at_once_opens_in_each(tmp_path: Path) -> None:
    stores = [str(tmp_path / f"store-{number}") for number in range(40)]
    start = time.time() + 2.0  # past every opener's start-up
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, str(start), *stores],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(WRITERS)
    ]
    errors = [opener.communicate(timeout=120)[1] for opener in openers]
    assert [opener.returncode for opener in openers] == [0] * WRITERS, "\n".join(errors)
    for path in stores:
        store = LocalStore(path, recover=False)
        assert store.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        store.close()
