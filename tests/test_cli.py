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
    assert [r["name"] for r in json.loads(out)] == ["spiky"]


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
    assert [r["name"] for r in json.loads(out)] == ["still running"]
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
            import time, tracelet
            exp = tracelet.start_logging("busy", config={"flush_interval": 0.02})
            step = 0
            while True:  # until killed: the reads below always meet a run being written
                exp.log_metric("loss", 1.0, step)
                step += 1
                if step == 1000:
                    exp.flush()
                    print("ready", flush=True)
                if step % 1000 == 0:
                    time.sleep(0.005)  # (about 200,000 points/s, not a store of gigabytes)
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


# -- issue 16: a command line without rough edges ------------------------------------------


def small_store(**metrics: list[float]) -> tuple:
    """A finished run ``scales`` in ``./.tracelet`` with one point per step of each metric."""
    with tracelet.start_logging("scales", project="cli") as exp:
        for name, values in metrics.items():
            for step, value in enumerate(values):
                exp.log_metric(name, value, step)
    return exp.settings.store_path, exp


def test_plot_without_matplotlib_says_what_to_install(capsys, store, tmp_path, monkeypatch):
    path, *_ = store
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    code, out, err = cli(capsys, path, "plot", "spiky", "loss", "--out", str(tmp_path / "x.png"))
    assert (code, out) == (1, "")
    assert err == (
        "tracelet: error: tracelet plot needs matplotlib: "
        'pip install "tracelet-core[plot]" (or pip install matplotlib)\n'
    )
    assert not (tmp_path / "x.png").exists()


def test_a_written_file_is_never_overwritten_silently(capsys, store, tmp_path):
    path, *_ = store
    chart = tmp_path / "chart.png"
    chart.write_bytes(b"mine")
    code, out, err = cli(capsys, path, "plot", "spiky", "loss", "--out", str(chart))
    assert (code, out) == (1, "")
    assert err == f"tracelet: error: {chart} exists; --force replaces it\n"
    assert chart.read_bytes() == b"mine"
    code, out, _ = cli(capsys, path, "plot", "spiky", "loss", "--out", str(chart), "--force")
    assert (code, out) == (0, f"wrote {chart}\n")
    assert chart.read_bytes().startswith(b"\x89PNG")
    code, out, _ = cli(capsys, path, "plot", "spiky", "loss")  # the default name, in the cwd
    assert (code, out) == (0, "wrote spiky-loss.png\n")
    code, _, err = cli(capsys, path, "plot", "spiky", "loss")
    assert (code, err) == (1, "tracelet: error: spiky-loss.png exists; --force replaces it\n")
    target = tmp_path / "points.csv"
    target.write_text("mine")
    code, _, err = cli(capsys, path, "export", "clean", "--format", "csv", "--out", str(target))
    assert (code, err) == (1, f"tracelet: error: {target} exists; --force replaces it\n")
    assert target.read_text() == "mine"
    code, *_ = cli(capsys, path, "export", "clean", "--format", "csv", "--out", str(target), "-f")
    assert code == 0
    assert target.read_text().startswith("metric,step,value,timestamp")


def test_plot_gives_each_scale_its_panel_and_logy_a_log_axis(capsys, tmp_path):
    from tracelet.cli import chart

    loss = [2.0 * math.exp(-s / 30) + 0.3 for s in range(100)]
    accuracy = [s / 100 for s in range(100)]
    lr = [1e-4 * min(1.0, s / 10) for s in range(100)]  # warm-up from 0
    path, _ = small_store(loss=loss, accuracy=accuracy, lr=lr)
    code, out, err = cli(capsys, path, "plot", "scales", "loss", "lr", "accuracy")
    assert (code, err) == (0, "")
    assert out == "wrote scales-loss-lr-accuracy.png (2 panels: loss, accuracy | lr)\n"
    code, out, err = cli(capsys, path, "plot", "scales", "loss", "lr", "--logy", "--out", "log.png")
    assert (code, out) == (0, "wrote log.png (2 panels: loss | lr)\n")
    assert err == "tracelet: note: --logy leaves out 1 value(s) <= 0 of lr (scales)\n"
    assert chart.panels([_series("a", [1.0, 50.0]), _series("b", [0.6, 0.9])]) == [["a", "b"]]
    assert chart.panels([_series("a", [1.0, 500.0]), _series("b", [0.6, 0.9])]) == [["a"], ["b"]]
    assert chart.panels([_series("a", [0.0]), _series("b", [1e-9])]) == [["a", "b"]]
    figure = chart.figure([_series("a", [1.0, 500.0]), _series("b", [0.6, 0.9])], logy=True)
    assert [axes.get_yscale() for axes in figure.axes] == ["log", "log"]
    figure = chart.figure([_series("a", [1.0, 2.0])])
    assert [axes.get_yscale() for axes in figure.axes] == ["linear"]


def _series(name: str, values: list[float]) -> tuple:
    import types

    run = types.SimpleNamespace(id="r", name="run")
    return run, name, [{"step": s, "value": v} for s, v in enumerate(values)], []


def test_compare_shows_a_missing_value_as_missing(capsys, store):
    path, *_ = store
    code, out, _ = cli(capsys, path, "compare", "spiky", "clean", "--metric", "grad/total_norm")
    assert code == 0
    row = next(line for line in out.splitlines() if "grad/total_norm" in line)
    assert "missing" in row
    assert "nan" not in row
    code, out, _ = cli(
        capsys, path, "compare", "spiky", "clean", "--metric", "grad/total_norm", "--json"
    )
    compared = json.loads(out)["metrics"]["grad/total_norm"]
    assert (compared["run_2"], compared["difference"]) == (None, None)


def test_json_spells_sets_as_sorted_lists(capsys, tmp_path):
    from tracelet.cli.output import jsonable

    assert jsonable({"s": {"b", "a"}, 1: frozenset({3, 2})}) == {"s": ["a", "b"], "1": [2, 3]}
    settings = tracelet.TraceletSettings(automagic_frameworks={"transformers", "lightning"})
    with tracelet.start_logging("sets", settings=settings) as exp:
        exp.log_metric("m", 1.0, 0)
    tracelet.start_logging("default").stop()
    path = tmp_path / ".tracelet"
    _, out, _ = cli(capsys, path, "show", "sets", "--json")
    assert json.loads(out)["config"]["settings"]["automagic_frameworks"] == [
        "lightning",
        "transformers",
    ]
    _, out, _ = cli(capsys, path, "list", "--json")
    runs = json.loads(out)
    assert [r["config"]["settings"]["automagic_frameworks"] for r in runs] == [
        ["lightning", "transformers"],
        [],
    ]
    assert "set()" not in out


def test_json_names_run_fields_as_the_table_and_the_api_do(capsys, store, tmp_path):
    import attrs

    from tracelet.storage import StoredRun

    path, spiky, clean = store
    api = {field.name for field in attrs.fields(StoredRun)}
    assert {"id", "name", "project", "created_at", "ended_at"} <= api
    old = {"run_id", "run_name", "project_name", "start_time", "end_time"}
    _, out, _ = cli(capsys, path, "list", "--json")
    listed = json.loads(out)
    assert [(r["id"], r["name"], r["project"]) for r in listed] == [
        (spiky.id, "spiky", "cli"),
        (clean.id, "clean", "cli"),
    ]
    _, out, _ = cli(capsys, path, "show", "spiky", "--json")
    shown = json.loads(out)
    _, out, _ = cli(capsys, path, "compare", "spiky", "clean", "--json")
    compared = json.loads(out)
    cli(capsys, path, "export", "clean", "--format", "json", "--out", str(tmp_path / "c.json"))
    exported = json.loads((tmp_path / "c.json").read_text())
    for run in (*listed, shown, compared["run_1"], compared["run_2"], exported):
        assert api <= set(run), sorted(run)
        assert not old & set(run), sorted(run)
        assert run["duration_s"] == run["ended_at"] - run["created_at"]
    assert compared["run_2"]["name"] == "clean"


def _tracelet(store_path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tracelet", "--store", str(store_path), *args]


def test_a_closed_pipe_ends_the_command_quietly(store, tmp_path):
    import os

    path, *_ = store
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            _tracelet(path, "compare", "spiky", "clean", "--json"),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
    export = subprocess.Popen(
        _tracelet(path, "export", "spiky", "--format", "csv"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    head = subprocess.run(["head", "-1"], stdin=export.stdout, capture_output=True, text=True)
    export.stdout.close()
    assert head.stdout == "metric,step,value,timestamp\n"
    assert export.wait(timeout=60) in (0, 141), "141 when it wrote after head had gone"
    assert export.stderr.read() == ""


def test_sync_with_nothing_to_do_prints_only_the_message(capsys, tmp_path):
    tracelet.start_logging("done").stop()
    code, out, err = cli(capsys, tmp_path / ".tracelet", "sync")
    assert (code, out, err) == (0, "nothing to sync: every backend has every batch\n", "")


def test_list_and_show_never_cut_names_or_ids_at_80_columns(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    names = ["resnet50-imagenet-lr0.1-batch256-warmup5-cosine-seed1", "short"]
    runs = [tracelet.start_logging(name, project="a-long-project-name") for name in names]
    for run in runs:
        run.stop()
    path = tmp_path / ".tracelet"
    code, out, _ = cli(capsys, path, "list")
    assert code == 0
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    for run in runs:
        assert any(run.name in line and run.id[:12] in line for line in lines), out
    assert "…" not in out
    code, out, _ = cli(capsys, path, "show", runs[0].id)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert runs[0].id in out
    assert runs[0].name in out
    assert "…" not in out


def _subcommands() -> dict:
    import argparse

    from tracelet.cli import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **subparsers.choices}


def test_every_command_option_and_positional_has_help():
    import argparse

    missing = [
        f"{name or 'tracelet'} {action.option_strings or action.dest}"
        for name, parser in _subcommands().items()
        for action in parser._actions
        if not (action.help and action.help != argparse.SUPPRESS)
    ]
    assert missing == []
    (subparsers,) = [a for a in _subcommands()[""]._actions if a.dest == "command"]
    assert all(choice.help for choice in subparsers._choices_actions)


def test_positionals_are_named_alike_in_every_command():
    allowed = {"run": {"RUN"}, "runs": {"RUN", "RUNS"}, "metrics": {"METRIC"}}
    named = {
        (name, action.dest): action.metavar
        for name, parser in _subcommands().items()
        for action in parser._actions
        if not action.option_strings and action.dest != "command"
    }
    assert {key: metavar for key, metavar in named.items() if metavar is None} == {}
    wrong = {key: m for key, m in named.items() if m not in allowed.get(key[1], {m})}
    assert wrong == {}
    assert all(metavar.isupper() for metavar in named.values())
    options = {
        (name, action.dest): action.metavar
        for name, parser in _subcommands().items()
        for action in parser._actions
        if action.option_strings and action.metavar
    }
    assert all(metavar.isupper() for metavar in options.values())
    assert options[("compare", "metrics")] == "METRIC"
