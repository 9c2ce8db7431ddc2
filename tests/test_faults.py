"""Faults that used to lose or misplace data (issue 8): secrets, names and values, sync."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from fakes import recording_backend

import tracelet
from tracelet.cli import main as cli
from tracelet.redaction import REDACTED

SECRETS = {
    "password": "hunter2",
    "db": {"password": "p4ss", "host": "db.internal"},
    "api_key": "sk-live-123",
    "apiKey": "sk-live-456",
    "conn": "postgresql://u:pw@db/x",
    "max_tokens": 512,
    "token_budget": 1000,
}


def test_secrets_in_params_and_tags_are_masked_before_anything_sees_them(read_store):
    with recording_backend() as backends:
        exp = tracelet.start_logging("secrets", backend=["local", "recording"])
        exp.log_params(SECRETS)
        exp.add_tags({"api_token": "t0k3n", "team": "ml"})
        exp.stop()
    expected = {
        "password": REDACTED,
        "db/password": REDACTED,
        "db/host": "db.internal",
        "api_key": REDACTED,
        "apiKey": REDACTED,
        "conn": "postgresql://***@db/x",
        "max_tokens": 512,
        "token_budget": 1000,
    }
    assert read_store().params(exp.id) == expected
    assert read_store().tags(exp.id) == {"api_token": REDACTED, "team": "ml"}
    sent = {k: v for batch in backends[0].batches.values() for k, v in batch.params.items()}
    assert sent == expected
    everything = repr(read_store().get_run(exp.id).config) + repr(backends[0].batches)
    for secret in ("hunter2", "p4ss", "sk-live", "u:pw", "t0k3n"):
        assert secret not in everything


def test_redaction_can_be_turned_off_by_a_user_who_means_it(read_store):
    with tracelet.start_logging("in clear", config={"redact_secrets": False}) as exp:
        exp.log_params({"password": "hunter2"})
    assert read_store().params(exp.id) == {"password": "hunter2"}


def test_a_lone_surrogate_is_refused_at_the_call_for_every_name():
    exp = tracelet.start_logging("names")
    bad = "bad\ud800"
    calls = [
        lambda: exp.log_metric(bad, 1.0, 0),
        lambda: exp.log_metrics({bad: 1.0}),
        lambda: exp.log_params({bad: 1}),
        lambda: exp.log_params({"ok": bad}),
        lambda: exp.log_text(bad, "x"),
        lambda: exp.log_image(bad, b"\x89PNG\r\n\x1a\n"),
        lambda: exp.add_tags([bad]),
        lambda: exp.log_metric("loss", 1.0, 0) or exp.log_metric(bad, 1.0, 1),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="cannot be stored as UTF-8"):
            call()
    exp.stop()
    assert exp.store.metrics(exp.id) == [("loss", 1.0, 0, exp.store.metrics(exp.id)[0][3])]


def test_a_recursive_structure_in_params_names_the_key():
    config = {"lr": 0.1, "model": {"layers": 2}}
    config["model"]["parent"] = config
    with tracelet.start_logging("cycle") as exp, pytest.raises(ValueError, match="'model/parent'"):
        exp.log_params(config)


def test_a_decimal_too_large_for_a_float_raises_like_an_int():
    with tracelet.start_logging("huge") as exp:
        with pytest.raises(ValueError, match="too large for a float"):
            exp.log_metric("m", Decimal("1e400"), 0)
        with pytest.raises(ValueError, match="too large for a float"):
            exp.log_metric("m", 10**400, 0)
        exp.log_metric("m", Decimal("Infinity"), 1)
    assert math.isinf(exp.store.metrics(exp.id)[0][1])


@pytest.fixture
def run_with_a_secret_option(monkeypatch):
    """A finished run whose ``recording`` backend (api_key given) missed everything."""
    monkeypatch.delenv("RECORDING_KEY", raising=False)
    with recording_backend() as backends:
        config = {"recording": {"api_key": "sk-abc", "hang": True}, "flush_timeout": 0.2}
        exp = tracelet.start_logging("secret option", backend=["local", "recording"], config=config)
        exp.log_metric("loss", 1.0, 0)
        exp.stop()
        backends[0].hang.set()
        yield exp, backends


def test_sync_refuses_a_backend_whose_secret_option_it_cannot_recover(
    run_with_a_secret_option, capsys
):
    exp, _ = run_with_a_secret_option
    assert exp.store.get_run(exp.id).config["backends"]["recording"]["api_key"] == REDACTED
    assert cli(["sync", "--backend", "recording"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "option 'api_key' of backend 'recording' was withheld" in line
    assert "--option api_key=..." in line
    assert "RECORDING_KEY" in line
    assert exp.store.undelivered(exp.id)["recording"] == 1


@pytest.mark.parametrize("source", ["option", "environment"])
def test_sync_takes_a_secret_option_from_the_command_line_or_the_environment(
    run_with_a_secret_option, source, monkeypatch
):
    exp, backends = run_with_a_secret_option
    extra = ["--option", "hang=false", "--option", "api_key=sk-abc"]
    if source == "environment":
        monkeypatch.setenv("RECORDING_KEY", "sk-abc")
        extra = extra[:2]
    assert cli(["sync", "--backend", "recording", *extra]) == 0
    synced = backends[-1]
    assert synced.config["api_key"] == "sk-abc"
    assert [p[0] for p in synced.points()] == ["loss"]
    assert exp.store.undelivered(exp.id) == {}


def test_a_backend_call_that_hangs_cannot_hold_sync_past_its_timeout(
    run_with_a_secret_option, capsys
):
    import time

    exp, _ = run_with_a_secret_option  # its backend hangs in every delivery
    started = time.monotonic()
    code = cli(["sync", "--timeout", "1", "--option", "api_key=sk-abc"])
    assert code == 1
    assert time.monotonic() - started < 1 + 5
    assert "did not return" in capsys.readouterr().err
    assert exp.store.undelivered(exp.id)["recording"] == 1


def noise(size: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_stop_returns_within_flush_timeout_whatever_is_queued(read_store, caplog):
    import logging
    import time

    with recording_backend() as _, caplog.at_level(logging.WARNING, "tracelet"):
        config = {"recording": {"hang": True}, "flush_timeout": 1.0, "flush_interval": 5}
        exp = tracelet.start_logging("busy stop", backend=["local", "recording"], config=config)
        for step in range(16):  # about 0.5 s each to encode: 8 s in all
            exp.log_image("noise", noise(2500, step), step)
        exp.log_metric("loss", 1.0, 0)
        started = time.monotonic()
        exp.stop()
        took = time.monotonic() - started
    assert took < 1.0 + 3.0, f"stop took {took:.1f} s with flush_timeout=1"
    assert "were not journaled before the 1s flush timeout" in caplog.text
    assert exp.delivery["recording"].phase in ("stopped", "starting", "delivering")


def test_queued_images_are_bounded_in_bytes(read_store):
    one = noise(512, 0).nbytes  # 786,432 bytes
    config = {"media_buffer_mb": 2 * one / 2**20}
    with tracelet.start_logging("bounded media", config=config) as exp:
        orchestrator = exp.orchestrator
        most = 0
        for step in range(10):
            exp.log_image("noise", noise(512, step), step)
            most = max(most, orchestrator.media_bytes)
        assert most <= 2 * one, "log_image waited for room"
    assert orchestrator.media_bytes == 0
    assert len(read_store().images(exp.id)) == 10, "nothing dropped"


@pytest.mark.slow
def test_a_second_sigterm_during_stop_neither_restarts_nor_cuts_the_wait(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = (
        "import time, tracelet\n"
        "from fakes import recording_backend\n"
        "with recording_backend():\n"
        "    config = {'recording': {'hang': True}, 'flush_timeout': 6}\n"
        "    both = ['local', 'recording']\n"
        "    with tracelet.start_logging('t', backend=both, config=config) as e:\n"
        "        e.log_metric('loss', 1.0, 0)\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
    )
    tests = str(__import__("pathlib").Path(__file__).parent)
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": tests},
    )
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    first = time.monotonic()
    time.sleep(3)
    child.send_signal(signal.SIGTERM)  # while stop waits for the hung backend
    assert child.wait(timeout=30) == 143
    took = time.monotonic() - first
    assert 6 - 1 < took < 6 + 2, f"exited {took:.1f} s after the first signal (flush_timeout 6)"
