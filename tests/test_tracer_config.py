"""Tracer's configuration types (``TracerConfig``, ``init`` keywords), ``AutomagicConfig``,
and the spec's import paths: each as the spec writes it, and each field's effect read back
from the store."""

from __future__ import annotations

import enum
import importlib
import sqlite3
import threading
import time

import attrs
import pytest
from fakes import recording_backend

import tracelet
from tracelet import AutomagicConfig, Experiment, TracerConfig
from tracelet.cli import main as cli_main
from tracelet.storage import LocalStore, StorageBackend


def only_run(store: LocalStore):
    (run,) = store.list_runs()
    return run


# -- the spec's examples, as written (tracer -> tracelet) ------------------------------------


def test_the_spec_tracer_config_example_and_its_defaults():
    from tracelet import TracerConfig

    config = TracerConfig(
        # Project metadata
        project_name="gpt-finetuning",
        run_name=None,
        tags=[],
        notes=None,
        # Storage (Tracer's ./.tracer is Tracelet's ./.tracelet)
        storage_path=".tracelet",
        retention_days=30,
        # Capture settings
        checkpoint_interval=1000,
        capture_samples=5,
        track_gradients=True,
        track_system_metrics=True,
        # Gradient tracking
        gradient_layers=None,
        # Performance
        async_writes=True,
        write_buffer_size=100,
        max_workers=4,
    )
    defaults = TracerConfig(project_name="gpt-finetuning")
    fields = [f.name for f in attrs.fields(TracerConfig) if f.init]
    assert [getattr(config, f) for f in fields] == [getattr(defaults, f) for f in fields]
    assert config != defaults, "equal values, but this one sets every field"
    assert config.as_config()["buffer_size"] == 100, "a field given takes effect"
    assert TracerConfig(project_name="p").as_config() == {"project": "p"}, "the rest: none"
    from tracelet.config import TracerConfig as same

    assert same is TracerConfig


def test_the_spec_init_example(read_store):
    tracelet.init(
        project="gpt-finetuning",
        run_name="experiment-001",
        checkpoint_interval=500,
        track_gradients=True,
    )
    for step in range(1000):
        tracelet.log({"loss": 1.0 / (step + 1)})
        tracelet.step()
    tracelet.finish()
    run = only_run(read_store())
    assert (run.project, run.name) == ("gpt-finetuning", "experiment-001")
    assert [c["step"] for c in read_store().checkpoints(run.id)] == [499, 999]


def test_the_spec_storage_backend_example(read_store):
    from tracelet.config import TracerConfig
    from tracelet.storage import StorageBackend

    config = TracerConfig(project_name="test")
    storage = StorageBackend(config)

    # Create run
    storage.create_run(
        run_id="123", project_name="test", run_name="run1", start_time=1000.0, config={}
    )

    # Write checkpoint
    storage.write_checkpoint(
        run_id="123",
        step=100,
        timestamp=1100.0,
        metrics={"loss": 0.5},
        gradient_stats={},
        system_metrics={},
    )

    # Query
    runs = storage.list_runs(project_name="test")
    checkpoints = storage.get_checkpoints("123")

    assert [(r["run_id"], r["run_name"], r["project_name"]) for r in runs] == [
        ("123", "run1", "test")
    ]
    assert [(c["step"], c["metrics"]) for c in checkpoints] == [(100, {"loss": 0.5})]
    storage.finish_run("123")
    storage.close()
    assert read_store().metrics("123") == [("loss", 0.5, 100, 1100.0)]


def test_storage_backend_follows_the_config_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACELET_STORE_PATH", str(tmp_path / "from-env"))
    storage = StorageBackend(TracerConfig(project_name="test"))
    assert storage.store.path == (tmp_path / "from-env").resolve(), "a default changes nothing"
    storage.close()
    storage = StorageBackend(TracerConfig(project_name="test", storage_path="mine"))
    assert storage.store.path == (tmp_path / "mine").resolve()
    storage.close()


def test_the_spec_type_hints_example_names_real_types():
    source = """
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracelet.config import TracerConfig
    from tracelet.core.tracer import TrainingTracer
"""
    exec(compile(source, "<spec>", "exec"), {})
    exec(compile(source.replace("if TYPE_CHECKING:", "if True:"), "<spec>", "exec"), {})
    from tracelet.core.tracer import TrainingTracer

    assert TrainingTracer is Experiment


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("tracelet.core.experiment", "Experiment"),
        ("tracelet.core.plugins", "BackendPlugin"),
        ("tracelet.core.plugins", "FrameworkPlugin"),
        ("tracelet.core.plugins", "CollectorPlugin"),
        ("tracelet.core.plugins", "PluginMetadata"),
        ("tracelet.core.plugins", "PluginType"),
        ("tracelet.core.orchestrator", "Orchestrator"),
        ("tracelet.settings", "TraceletSettings"),
        ("tracelet.settings", "ExperimentConfig"),
        ("tracelet.interface", "start_logging"),
        ("tracelet.interface", "stop_logging"),
        ("tracelet.interface", "get_active_experiment"),
        ("tracelet.analysis", "QueryEngine"),
        ("tracelet.analysis", "AnomalyDetector"),
        ("tracelet.storage", "StorageBackend"),
        ("tracelet.config", "TracerConfig"),
        ("tracelet.core.tracer", "TrainingTracer"),
        ("tracelet", "TracerConfig"),
        ("tracelet", "AutomagicConfig"),
        ("tracelet", "TraceletArtifact"),
        ("tracelet", "ArtifactFile"),
        ("tracelet", "ArtifactObject"),
        ("tracelet", "ArtifactReference"),
        ("tracelet", "ArtifactType"),
        ("tracelet", "ArtifactResult"),
        ("tracelet", "ExperimentConfig"),
        ("tracelet", "TraceletSettings"),
    ],
)
def test_the_spec_import_paths(module, name):
    exec(f"from {module} import {name}", {})
    assert getattr(importlib.import_module(module), name) is not None


def test_artifact_parts_are_the_ones_traceletartifact_uses():
    from tracelet.artifacts import ArtifactFile, ArtifactObject, ArtifactReference

    assert (tracelet.ArtifactFile, tracelet.ArtifactObject, tracelet.ArtifactReference) == (
        ArtifactFile,
        ArtifactObject,
        ArtifactReference,
    )


# -- init(config=TracerConfig(...)) and the keywords ------------------------------------------


def test_init_takes_a_tracer_config_and_keywords_win(read_store):
    config = TracerConfig(project_name="nlp", run_name="from-config", tags=["a"], notes="n")
    exp = tracelet.init(config=config, run_name="from-keyword")
    tracelet.finish()
    run = only_run(read_store())
    assert (run.project, run.name) == ("nlp", "from-keyword")
    assert read_store().tags(exp.id) == {"a": "", "notes": "n"}


def test_every_tracer_config_field_is_an_init_keyword(tmp_path, read_store):
    fields = {
        "run_name": "r",
        "tags": ["t"],
        "notes": "x",
        "storage_path": str(tmp_path / "s"),
        "retention_days": 3,
        "checkpoint_interval": 2,
        "capture_samples": 1,
        "track_gradients": False,
        "track_system_metrics": False,
        "gradient_layers": ["fc1"],
        "async_writes": False,
        "write_buffer_size": 10,
        "max_workers": 1,
    }
    assert set(fields) | {"project_name"} == {f.name for f in attrs.fields(TracerConfig) if f.init}
    exp = tracelet.init(project="p", project_name="ignored: project= wins", **fields)
    settings = exp.settings
    tracelet.finish()
    assert (settings.project, settings.store_path, settings.retention_days) == (
        "p",
        str(tmp_path / "s"),
        3,
    )
    assert (settings.buffer_size, settings.max_workers, settings.async_writes) == (10, 1, False)
    assert (settings.track_system, settings.track_gradients) == (False, False)
    assert settings.gradient_layers == ["fc1"]
    assert exp.name == "r"


def test_keywords_win_over_config_under_any_of_their_names(read_store):
    config = TracerConfig(project_name="p", write_buffer_size=50, storage_path="a")
    exp = tracelet.init(config=config, write_buffer_size=10)
    tracelet.finish()
    assert exp.settings.buffer_size == 10
    exp = tracelet.init(config={"buffer_size": 50}, project="p", write_buffer_size=7)
    tracelet.finish()
    assert exp.settings.buffer_size == 7


def test_tracers_none_defaults_are_accepted_as_keywords(read_store):
    exp = tracelet.init("p", gradient_layers=None, notes=None, run_name=None)
    tracelet.finish()
    assert exp.settings.gradient_layers == []


def test_an_empty_project_is_refused():
    with pytest.raises(tracelet.ConfigurationError, match="'project_name' expects a non-empty"):
        TracerConfig(project_name=" ")
    with pytest.raises(tracelet.ConfigurationError, match="'project' expects a non-empty"):
        tracelet.init(project="")


def test_init_without_project_takes_the_setting(monkeypatch, read_store):
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    tracelet.init()
    tracelet.finish()
    assert only_run(read_store()).project == "from-env"


def test_bad_tracer_config_values_are_named():
    with pytest.raises(tracelet.ConfigurationError, match="'write_buffer_size' expects an int"):
        TracerConfig(project_name="p", write_buffer_size=0)
    with pytest.raises(tracelet.ConfigurationError, match="'async_writes' expects a bool"):
        TracerConfig(project_name="p", async_writes="yes please")
    config = TracerConfig(project_name="p")
    with pytest.raises(tracelet.ConfigurationError, match="'max_workers' expects an int >= 1"):
        config.max_workers = 0
    with pytest.raises(TypeError, match="config must be a TracerConfig or a dict"):
        tracelet.init(project="p", config=42)
    with pytest.raises(tracelet.ConfigurationError, match="unknown setting 'max_worker'"):
        tracelet.init(project="p", max_worker=2)


# -- each field's effect, read back from the store --------------------------------------------


def test_project_run_name_tags_and_notes(read_store):
    config = TracerConfig(project_name="vision", run_name="r1", tags=["base"], notes="first")
    exp = tracelet.init(config=config)
    tracelet.finish()
    run = only_run(read_store())
    assert (run.project, run.name) == ("vision", "r1")
    assert read_store().tags(exp.id) == {"base": "", "notes": "first"}


def test_storage_path_is_the_store(tmp_path, read_store):
    exp = tracelet.init(config=TracerConfig(project_name="p", storage_path="elsewhere"))
    tracelet.log({"loss": 1.0})
    tracelet.finish()
    assert read_store(tmp_path / "elsewhere").metrics(exp.id) == [
        ("loss", 1.0, 0, pytest.approx(time.time(), abs=60))
    ]
    assert not (tmp_path / ".tracelet").exists()


def test_retention_days_drives_gc(tmp_path, store_path, capsys):
    short = tracelet.init(config=TracerConfig(project_name="p", run_name="week", retention_days=7))
    tracelet.finish()
    long = tracelet.init(config=TracerConfig(project_name="p", run_name="month"))
    tracelet.finish()
    ten_days_ago = time.time() - 10 * 86_400
    with sqlite3.connect(store_path / "tracelet.db") as con:
        con.execute("UPDATE runs SET created_at = ?, ended_at = ?", (ten_days_ago, ten_days_ago))
    assert cli_main(["--store", str(store_path), "gc"]) == 0
    out = capsys.readouterr().out
    assert f"removed {short.id[:12]} 'week'" in out
    assert "kept 7 days" in out
    assert long.id[:12] not in out, "the other run keeps its 30 days"
    remaining = LocalStore(store_path)
    assert [r.name for r in remaining.list_runs()] == ["month"]
    remaining.close()


def test_checkpoint_interval_and_capture_samples(read_store):
    exp = tracelet.init(config=TracerConfig("p", checkpoint_interval=3, capture_samples=2))
    for step in range(9):
        tracelet.log({"loss": float(step)})
        tracelet.log_sample({"step": step})
        tracelet.step()
    tracelet.finish()
    checkpoints = read_store().checkpoints(exp.id)
    assert [c["step"] for c in checkpoints] == [2, 5, 8]
    assert [c["samples"] for c in checkpoints] == [
        [{"step": 1}, {"step": 2}],
        [{"step": 4}, {"step": 5}],
        [{"step": 7}, {"step": 8}],
    ]


def test_track_gradients_off_records_no_gradient_statistics(read_store):
    exp = tracelet.init(config=TracerConfig("p", track_gradients=False))
    exp.log_gradient_stats({"total_norm": 1.5, "fc1.weight/norm": 0.5})
    tracelet.log({"loss": 1.0})
    tracelet.finish()
    assert read_store().metric_names(exp.id) == ["loss"]


def test_gradient_layers_keep_only_those_layers(read_store):
    exp = tracelet.init(config=TracerConfig("p", gradient_layers=["encoder.*", "head"]))
    stats = {
        "total_norm": 2.0,
        "encoder.0.weight/norm": 1.0,
        "encoder.1.bias/norm": 0.1,
        "head/norm": 0.5,
        "decoder.weight/norm": 0.7,
    }
    exp.log_gradient_stats(stats, step=0)
    exp.checkpoint(0)
    tracelet.finish()
    kept = ["grad/encoder.0.weight/norm", "grad/encoder.1.bias/norm", "grad/head/norm"]
    assert read_store().metric_names(exp.id) == sorted([*kept, "grad/total_norm"])
    (checkpoint,) = read_store().checkpoints(exp.id)
    assert sorted(checkpoint["gradient_stats"]) == sorted([*kept, "grad/total_norm"])


def test_a_gradient_statistic_named_by_a_str_enum_is_stored_under_its_value(read_store):
    class Stat(str, enum.Enum):  # noqa: UP042 - a str mixin enum formats as Stat.NORM
        NORM = "total_norm"

    exp = tracelet.init(config=TracerConfig("p"))
    exp.log_gradient_stats({Stat.NORM: 1.5}, step=0)
    exp.checkpoint(0)
    tracelet.finish()
    assert read_store().metric_names(exp.id) == ["grad/total_norm"]
    (checkpoint,) = read_store().checkpoints(exp.id)
    assert list(checkpoint["gradient_stats"]) == ["grad/total_norm"]
    assert type(next(iter(checkpoint["gradient_stats"]))) is str


@pytest.mark.collectors
def test_track_system_metrics(read_store, monkeypatch):
    monkeypatch.setenv("TRACELET_METRICS_INTERVAL", "0.1")
    on = tracelet.init(config=TracerConfig("p"))
    time.sleep(0.3)
    tracelet.finish()
    off = tracelet.init(config=TracerConfig("p", track_system_metrics=False))
    time.sleep(0.3)
    tracelet.finish()
    assert any(n.startswith("system/") for n in read_store().metric_names(on.id))
    assert not any(n.startswith("system/") for n in read_store().metric_names(off.id))


def test_async_writes_off_journals_before_each_call_returns(store_path):
    exp = tracelet.init(config=TracerConfig("p", async_writes=False), flush_interval=60.0)
    reader = LocalStore(store_path)
    try:
        for step in range(50):
            exp.log_metric("loss", float(step), step)
            assert len(reader.metrics(exp.id)) == step + 1, "journaled when the call returned"
        exp.log_params({"lr": 0.1})
        assert reader.params(exp.id) == {"lr": 0.1}
    finally:
        tracelet.finish()
        reader.close()


def test_async_writes_on_leaves_journaling_to_the_dispatcher(store_path):
    exp = tracelet.init(config=TracerConfig("p"), flush_interval=60.0)
    exp.log_metric("loss", 1.0, 0)
    reader = LocalStore(store_path)
    try:
        assert reader.metrics(exp.id) == [], "queued, not yet journaled"
    finally:
        tracelet.finish()
    assert len(reader.metrics(exp.id)) == 1
    reader.close()


def test_write_buffer_size_bounds_the_buffer_and_loses_nothing(read_store):
    exp = tracelet.init(config=TracerConfig("p", write_buffer_size=100), flush_interval=0.01)
    assert exp.orchestrator.capacity == 100
    longest = 0
    for step in range(20_000):
        exp.log_metric("loss", float(step), step)
        longest = max(longest, len(exp.orchestrator.buffer))
    tracelet.finish()
    assert longest <= 100
    assert [p[2] for p in read_store().metrics(exp.id)] == list(range(20_000))


def delivery_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("tracelet-delivery")}


def test_max_workers_bounds_the_delivery_threads(read_store):
    names = ("b1", "b2", "b3", "b4")
    with recording_backend(*names) as backends:
        before = delivery_threads()
        exp = tracelet.init(project="p", backend=["local", *names], max_workers=2)
        seen: set[str] = set()
        for step in range(5_000):
            exp.log_metric("loss", float(step), step)
            if step % 500 == 0:
                exp.flush()
                seen |= delivery_threads() - before
        tracelet.finish()
        stored = read_store().metrics(exp.id)
        assert len(seen) == 2, seen
        for backend in backends:
            assert backend.points() == stored
            assert backend.final_status is tracelet.RunStatus.FINISHED


def test_one_worker_serves_every_backend_while_one_is_down(read_store, caplog):
    with recording_backend("down", "up") as backends:
        exp = tracelet.init(project="p", backend=["local", "down", "up"], max_workers=1)
        down, up = backends
        down.fail_times = 10**9
        for step in range(2_000):
            exp.log_metric("loss", float(step), step)
        assert exp.orchestrator.flush(timeout=10) is False, "one backend stays down"
        assert up.points() == read_store().metrics(exp.id), "the other is up to date"
        down.fail_times = 0
        assert exp.orchestrator.flush(timeout=10), "the one worker comes back to it"
        tracelet.finish()
        assert down.points() == up.points() == read_store().metrics(exp.id)


# -- AutomagicConfig ---------------------------------------------------------------------------


def test_experiment_with_automagic_config_changes_what_is_captured(read_store):
    learning_rate = 0.01
    lr_decay = 0.5
    batch_size = 32
    optimizer = "adam"
    layers = [64, 32]
    with Experiment("baseline", automagic=True) as plain:
        pass
    config = AutomagicConfig(include=["lr*", "learning_*", "batch_size"], value_kinds=["float"])
    with Experiment("narrowed", automagic=True, automagic_config=config) as narrowed:
        pass
    assert read_store().params(plain.id) == {
        "learning_rate": 0.01,
        "lr_decay": 0.5,
        "batch_size": 32,
        "optimizer": "adam",
        "layers": "[64, 32]",
    }
    assert read_store().params(narrowed.id) == {"learning_rate": 0.01, "lr_decay": 0.5}
    del learning_rate, lr_decay, batch_size, optimizer, layers


def test_automagic_config_fields_each_take_effect(read_store):
    note = "x" * 40
    widths = list(range(20))
    dropout = 0.1
    epochs = 3
    with Experiment(
        "limits",
        automagic=True,
        automagic_config=AutomagicConfig(
            exclude=["drop*"], max_string_length=10, max_list_length=30
        ),
    ) as limits:
        pass
    with Experiment(
        "none at start", automagic=True, automagic_config={"hyperparameters": False}
    ) as later:
        found = later.capture_hyperparams()
    assert read_store().params(limits.id) == {"epochs": 3, "widths": str(widths)}
    assert found == read_store().params(later.id), "capture_hyperparams still works"
    assert "dropout" in found
    assert "note" in found
    assert "widths" not in found
    del note, widths, dropout, epochs


def test_automagic_config_narrows_capture_model():
    class Estimator:
        def get_params(self):
            return {"C": 1.0, "kernel": "rbf", "max_iter": 100}

    exp = Experiment("m", automagic_config=AutomagicConfig(value_kinds=["float", "int"]))
    with exp:
        described = exp.capture_model(Estimator())
    assert described["params/C"] == 1.0
    assert described["params/max_iter"] == 100
    assert "params/kernel" not in described


def test_automagic_config_frameworks_choose_the_integrations():
    exp = Experiment("f", automagic_config=AutomagicConfig(frameworks=["torch"]))
    assert exp.settings.automagic_frameworks == {"torch"}
    assert Experiment("g").settings.automagic_frameworks == set()


def test_bad_automagic_config_is_named():
    with pytest.raises(tracelet.ConfigurationError, match=r"unknown kind\(s\) \['tensor'\]"):
        AutomagicConfig(value_kinds=["tensor"])
    with pytest.raises(tracelet.ConfigurationError, match="frameworks is empty"):
        AutomagicConfig(frameworks=[])
    with pytest.raises(tracelet.ConfigurationError, match="'max_list_length' expects an int"):
        AutomagicConfig(max_list_length=-1)
    with pytest.raises(TypeError, match="automagic_config must be an AutomagicConfig"):
        Experiment("x", automagic_config=42)
    with pytest.raises(TypeError, match="unexpected keyword argument 'frameworkz'"):
        Experiment("x", automagic_config={"frameworkz": ["torch"]})


def test_a_field_assigned_later_takes_effect():
    config = TracerConfig(project_name="p")
    config.max_workers = 2
    config.gradient_layers = None
    assert config.as_config() == {"project": "p", "max_workers": 2}
    exp = tracelet.init(config=config)
    tracelet.finish()
    assert exp.settings.max_workers == 2
