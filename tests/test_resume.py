"""Pre-emption and resume: the same run id continues the same run, in the store and in
every backend, steps going on from the last one; ``resume`` says whether it may, must or
must not exist already."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import tracelet
from tracelet import ConfigurationError


def logged(run_id, steps, **options):
    with tracelet.start_logging("resumable", run_id=run_id, **options) as exp:
        first = exp.iteration
        for _ in range(steps):
            tracelet.log({"loss": 0.5})
            tracelet.step()
    return first


def test_a_run_id_continues_its_run_from_the_step_after_its_last(read_store):
    assert logged("run-1", 5) == 0
    assert logged("run-1", 3) == 5
    (run,) = read_store().list_runs()
    assert [p[2] for p in read_store().metrics(run.id, "loss")] == list(range(8))


def test_the_run_id_and_resume_mode_may_come_from_the_environment(monkeypatch, read_store):
    monkeypatch.setenv("TRACELET_RUN_ID", "from-env")
    logged(None, 2)
    monkeypatch.setenv("TRACELET_RESUME", "must")
    assert logged(None, 2) == 2
    assert [r.id for r in read_store().list_runs()] == ["from-env"]


def test_resume_must_refuses_a_run_the_store_does_not_have(read_store):
    with pytest.raises(ConfigurationError, match=r"resume='must'.*no run 'missing'"):
        tracelet.start_logging("x", run_id="missing", resume="must")
    assert tracelet.get_active_experiment() is None
    assert read_store().list_runs() == []


def test_resume_never_refuses_a_run_the_store_has():
    logged("taken", 1, resume="never")
    with pytest.raises(ConfigurationError, match=r"resume='never'.*already has a run 'taken'"):
        tracelet.start_logging("x", run_id="taken", resume="never")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"resume": "sometimes", "run_id": "a"}, r"resume='sometimes'.*'allow', 'must', 'never'"),
        ({"resume": "must"}, r"resume='must' continues a run: give its run_id"),
    ],
)
def test_a_bad_resume_is_refused_before_anything_starts(options, message):
    with pytest.raises(ConfigurationError, match=message):
        tracelet.start_logging("x", **options)


def test_resume_and_run_id_are_also_keys_of_config_and_of_init(read_store):
    tracelet.start_logging("x", config={"run_id": "keyed", "resume": "never"}).stop()
    tracelet.init(project="p", run_id="keyed", resume="must").stop()
    assert [r.id for r in read_store().list_runs()] == ["keyed"]


SAID = re.compile(r"(START|STEP) (\d+)")
"""A line the training script says (the tools it logs to may print lines of their own)."""


def train_script(backend_options):
    return textwrap.dedent(
        f"""
        import sys, time, tracelet

        options = {backend_options!r}
        exp = tracelet.start_logging("preemptible", backend=list(options) + ["local"],
                                     config=options, resume="allow")
        def say(what, n):  # one write: a tool's own log line cannot land inside it
            sys.stdout.write(f"{{what}} {{n}}\\n")
            sys.stdout.flush()

        say("START", exp.iteration)
        for _ in range(int(sys.argv[1])):
            tracelet.log({{"loss": 1.0 / (exp.iteration + 1)}})
            say("STEP", tracelet.step())
            time.sleep(0.005)
        tracelet.finish()
        """
    )


@pytest.mark.slow
def test_a_killed_training_process_restarted_with_its_run_id_continues_one_run(
    tmp_path, every_backend, monkeypatch
):
    options, readers = every_backend
    monkeypatch.setenv("TRACELET_RUN_ID", "preempted-1")
    script = tmp_path / "train.py"
    script.write_text(train_script(options))
    first = subprocess.Popen(
        [sys.executable, str(script), "1000000"], stdout=subprocess.PIPE, text=True
    )
    for line in first.stdout:  # killed mid-run, as a pre-empted node is
        said = SAID.fullmatch(line.rstrip("\n"))
        if said and said[1] == "STEP" and int(said[2]) >= 200:
            break
    time.sleep(0.3)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    restarted = subprocess.run(
        [sys.executable, str(script), "100"], capture_output=True, text=True, timeout=180
    )
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    start = next(int(s[2]) for s in map(SAID.fullmatch, restarted.stdout.splitlines()) if s)
    local = readers.pop("local")
    (run,) = [local.status("preempted-1")]
    assert run == "finished"
    steps = sorted(p[2] for p in local.metrics("preempted-1"))
    assert steps == list(range(start + 100)), "continuous, none twice"
    assert start > 100  # (what it logged in its last flush interval is lost with it)
    expected = sorted((p[0], p[2], p[1]) for p in local.metrics("preempted-1"))
    for name, tool in readers.items():
        assert tool.run_count("preempted-1") == 1, name
        got = sorted((p[0], p[2], p[1]) for p in tool.metrics("preempted-1"))
        assert got == expected, name
