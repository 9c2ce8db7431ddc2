"""The ``tracelet`` command on a synthetic 20,000-step run with injected anomalies."""

from __future__ import annotations

import csv
import io
import json
import math
import random
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import tracelet
from tracelet.cli import main
from tracelet.storage.schema import SCHEMA_VERSION

SPIKES = (4_000, 9_000, 15_000)
NAN_STEP = 12_000
EXPLOSION = 17_000
STEPS = 20_000


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with a 20,000-step run (spikes, a NaN, a gradient explosion) and a clean one."""
    root = tmp_path_factory.mktemp("cli")
    settings = tracelet.TraceletSettings(
        store_path=str(root / ".tracelet"),
        track_system=False,
        track_env=False,
        track_git=False,
        checkpoint_interval=1000,
        detect_anomalies=False,
    )
    rng = random.Random(7)
    with tracelet.start_logging("spiky", project="cli", settings=settings) as exp:
        exp.log_params({"lr": 3e-4, "model": {"layers": 12}})
        for step in range(STEPS):
            loss = (2.0 * math.exp(-step / 3000) + 0.3) * math.exp(rng.gauss(0, 0.05))
            if step in SPIKES:
                loss *= 12
            if step == NAN_STEP:
                loss = math.nan
            norm = 1.0 * math.exp(rng.gauss(0, 0.1)) * (200 if step == EXPLOSION else 1)
            exp.log_metric("loss", loss, step)
            exp.log_metric("grad/total_norm", norm, step)
            exp.step()
    with tracelet.start_logging("clean", project="cli", settings=settings) as other:
        other.log_params({"lr": 1e-3, "model": {"layers": 12}})
        for step in range(0, STEPS, 10):
            other.log_metric("loss", 2.0 * math.exp(-step / 2000) + 0.2, step)
    return root / ".tracelet", exp, other


def cli(capsys, store, *args: str) -> tuple[int, str, str]:
    code = main(["--store", str(store), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys, store):
    path, spiky, clean = store
    code, out, _ = cli(capsys, path, "list")
    assert code == 0
    assert "spiky" in out
    assert clean.id[:12] in out
    assert spiky.id[:12] in out
    code, out, _ = cli(capsys, path, "list", "--json", "--param", "lr=0.0003")
    assert [r["run_name"] for r in json.loads(out)] == ["spiky"]


def test_show(capsys, store):
    path, spiky, _ = store
    code, out, _ = cli(capsys, path, "show", "spiky")
    assert code == 0
    for expected in ("finished", "20000", "40,000", "grad/total_norm", "model/layers"):
        assert expected in out
    code, out, _ = cli(capsys, path, "show", spiky.id[:8], "--json")
    summary = json.loads(out)
    assert summary["total_steps"] == STEPS
    assert summary["total_points"] == 2 * STEPS
    assert summary["checkpoints"] == STEPS // 1000
    assert summary["params"] == {"lr": 3e-4, "model/layers": 12}


def test_compare(capsys, store):
    path, *_ = store
    code, out, _ = cli(capsys, path, "compare", "spiky", "clean", "--metric", "loss", "--json")
    result = json.loads(out)
    assert result["metrics"]["loss"]["run_2"]["count"] == STEPS // 10
    assert result["params"] == {"lr": [3e-4, 1e-3]}
    code, out, _ = cli(capsys, path, "compare", "spiky", "clean")
    assert code == 0
    assert "loss" in out
    assert "lr" in out


def test_anomalies_auto_detects_the_injected_ones(capsys, store):
    path, *_ = store
    code, out, _ = cli(capsys, path, "anomalies", "spiky", "--json")
    assert json.loads(out) == [], "nothing stored before detection"
    code, out, _ = cli(capsys, path, "anomalies", "spiky", "--auto", "--json")
    assert code == 0
    found = json.loads(out)
    spikes = {a["step"] for a in found if a["kind"] == "loss_spike"}
    assert set(SPIKES) <= spikes
    assert any(a["kind"] == "nan_or_inf" and a["step"] == NAN_STEP for a in found)
    assert any(a["kind"] == "gradient_explosion" and a["step"] == EXPLOSION for a in found)
    assert len(found) <= len(SPIKES) + 2 + 3, f"few false alarms, got {found}"
    code, out, _ = cli(capsys, path, "anomalies", "spiky", "--kind", "nan_or_inf")
    assert str(NAN_STEP) in out
    assert "loss_spike" not in out


def test_plot_writes_a_real_chart(capsys, store, tmp_path):
    import matplotlib.image

    path, *_ = store
    out_file = tmp_path / "chart.png"
    code, out, _ = cli(
        capsys, path, "plot", "spiky,clean", "loss", "--smooth", "0.9", "--out", str(out_file)
    )
    assert code == 0
    assert f"wrote {out_file}" in out
    pixels = matplotlib.image.imread(out_file)
    assert pixels.shape[0] > 300
    assert pixels.shape[1] > 600
    assert pixels[..., :3].std() > 0.05, "not blank"
    colours = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 20, "lines in several colours"


def test_export_csv_and_json(capsys, store, tmp_path):
    path, *_ = store
    code, out, _ = cli(capsys, path, "export", "clean", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == STEPS // 10
    assert rows[0]["metric"] == "loss"
    assert float(rows[1]["value"]) == pytest.approx(2.0 * math.exp(-10 / 2000) + 0.2)
    target = tmp_path / "spiky.json"
    code, out, _ = cli(capsys, path, "export", "spiky", "--format", "json", "--out", str(target))
    assert (code, out) == (0, f"wrote {2 * STEPS:,} points to {target}\n")
    document = json.loads(target.read_text())
    assert len(document["points"]) == 2 * STEPS
    nan_point = next(p for p in document["points"] if p["step"] == NAN_STEP)
    assert nan_point["value"] == "nan"
    assert len(document["checkpoints"]) == STEPS // 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "no-such-run"], "no run 'no-such-run'"),
        (["plot", "spiky", "no_such_metric"], "has no metric 'no_such_metric'"),
        (["plot", "spiky", "loss", "--smooth", "1.5"], "--smooth must be in [0, 1)"),
        (["export", "nope", "--format", "csv"], "no run 'nope'"),
    ],
)
def test_mistakes_give_one_line_and_exit_1(capsys, store, args, message):
    path, *_ = store
    code, out, err = cli(capsys, path, *args)
    assert (code, out) == (1, "")
    assert err.strip().count("\n") == 0
    assert message in err
    assert "Traceback" not in err


def test_ambiguous_names_list_the_candidates(capsys, tmp_path):
    for _ in range(2):
        tracelet.start_logging("twin").stop()
    code, _, err = cli(capsys, tmp_path / ".tracelet", "show", "twin")
    assert code == 1
    assert "matches 2 runs" in err


def test_empty_missing_and_newer_stores(capsys, tmp_path):
    code, _, err = cli(capsys, tmp_path / "missing", "list")
    assert (code, "no Tracelet store at" in err) == (1, True)
    from tracelet.storage import LocalStore

    LocalStore(tmp_path / "empty").close()
    code, _, err = cli(capsys, tmp_path / "empty", "list")
    assert (code, "has no runs yet" in err) == (1, True)
    con = sqlite3.connect(tmp_path / "empty" / "tracelet.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    code, _, err = cli(capsys, tmp_path / "empty", "list")
    assert code == 1
    assert "upgrade tracelet-core" in err
    assert "Traceback" not in err


def test_gc_removes_old_runs_and_says_so(capsys, tmp_path):
    old = tracelet.start_logging("old")
    old.log_metric("loss", 1.0, 0)
    old.stop()
    running = tracelet.start_logging("still running")
    path = tmp_path / ".tracelet"
    code, out, _ = cli(capsys, path, "gc", "--older-than", "0", "--dry-run")
    assert "would remove" in out
    assert "'old'" in out
    assert "still running" not in out
    code, out, _ = cli(capsys, path, "gc", "--older-than", "0")
    assert f"removed {old.id[:12]}" in out
    assert "removed 1 run(s)" in out
    code, out, _ = cli(capsys, path, "list", "--json")
    assert [r["run_name"] for r in json.loads(out)] == ["still running"]
    running.stop()
    code, out, _ = cli(capsys, path, "gc")
    assert code == 0
    assert "removed 0 run(s) older than their retention_days" in out


@pytest.mark.slow
def test_the_console_script_reads_a_store_being_written(tmp_path):
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import tracelet, sys
            exp = tracelet.start_logging("busy", config={"flush_interval": 0.02})
            step = 0
            while step < 2_000_000:
                exp.log_metric("loss", 1.0, step)
                step += 1
                if step == 1000:
                    exp.flush()
                    print("ready", flush=True)
            """),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        tracelet_cmd = [sys.executable, "-m", "tracelet"]
        for _ in range(3):
            shown = subprocess.run(
                [*tracelet_cmd, "show", "busy", "--json"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["status"] == "running"
            time.sleep(0.05)
    finally:
        writer.kill()
        writer.wait()


def test_gc_refuses_bad_ages_and_keeps_runs_a_backend_still_lacks(capsys, tmp_path):
    from fakes import recording_backend

    path = tmp_path / ".tracelet"
    with recording_backend():
        exp = tracelet.start_logging(
            "behind",
            backend=["local", "recording"],
            config={"recording": {"hang": True}, "flush_timeout": 0.2},
        )
        exp.log_metric("m", 1.0, 0)
        exp.stop()
    for bad in ("-1", "nan"):
        code, _, err = cli(capsys, path, "gc", "--older-than", bad)
        assert code == 1
        assert "--older-than must be" in err
    code, out, _ = cli(capsys, path, "gc", "--older-than", "0")
    assert "kept" in out
    assert "removed 0 run(s)" in out
    code, out, _ = cli(capsys, path, "gc", "--older-than", "0", "--force")
    assert "removed 1 run(s)" in out


def test_sync_of_every_run_skips_live_ones(capsys, tmp_path):
    from fakes import recording_backend

    path = tmp_path / ".tracelet"
    with recording_backend():
        live = tracelet.Experiment(
            "live", backend=["local", "recording"], backend_options={"recording": {"hang": True}}
        ).start()
        live.log_metric("m", 1.0, 0)
        live.flush(timeout=0.5)
        code, out, _ = cli(capsys, path, "sync")
        assert code == 0
        assert "skipped, still being written" in out
        live.settings = live.settings.replace(flush_timeout=0.2)
        live.stop()
