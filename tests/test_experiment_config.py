"""Every ExperimentConfig field and every Experiment constructor argument takes effect."""

from __future__ import annotations

import dataclasses
import sys

import pytest

import tracelet
from tracelet import Experiment, ExperimentConfig, TraceletSettings
from tracelet.analysis import LossSpikeThresholds
from tracelet.core.registry import PluginRegistry
from tracelet.settings import EXPERIMENT_CONFIG_SETTINGS

CHANGED = {
    "track_metrics": False,
    "track_checkpoints": False,
    "track_environment": False,
    "track_args": False,
    "track_stdout": False,
    "track_system_metrics": False,
    "track_git": False,
    "enable_automagic": True,
    "automagic_frameworks": {"lightning"},
    "enable_artifacts": True,
    "automagic_artifacts": True,
    "artifact_watch_dirs": ["out"],
    "watch_filesystem": True,
}


@pytest.mark.parametrize(("field", "value"), CHANGED.items(), ids=list(CHANGED))
def test_each_field_is_the_per_run_synonym_of_a_setting(field, value):
    exp = Experiment("x", config=ExperimentConfig(**{field: value}))
    assert getattr(exp.settings, EXPERIMENT_CONFIG_SETTINGS[field]) == value


def test_every_field_is_mapped_or_has_its_own_effect():
    fields = {f.name for f in dataclasses.fields(ExperimentConfig)}
    assert fields == set(EXPERIMENT_CONFIG_SETTINGS)


def test_a_field_at_its_default_leaves_the_environment_alone(monkeypatch):
    monkeypatch.setenv("TRACELET_TRACK_GIT", "0")
    assert Experiment("x", config=ExperimentConfig()).settings.track_git is False


def test_track_checkpoints_off_writes_no_checkpoints(read_store):
    on = Experiment("on", options={"checkpoint_interval": 2}).start()
    off = Experiment(
        "off", config=ExperimentConfig(track_checkpoints=False), options={"checkpoint_interval": 2}
    ).start()
    for exp in (on, off):
        for step in range(6):
            exp.log_metric("loss", 1.0, step)
            exp.step()
        exp.stop()
    assert len(read_store().checkpoints(on.id)) == 3
    assert read_store().checkpoints(off.id) == []


def test_track_metrics_off_keeps_everything_but_metrics(read_store):
    with Experiment("quiet", config=ExperimentConfig(track_metrics=False)) as exp:
        exp.log_metric("loss", 1.0, 0)
        exp.log_metrics({"acc": 0.5})
        exp.log_params({"lr": 0.1})
        with pytest.raises(TypeError, match="metric 'bad'"):
            exp.log_metric("bad", "not a number", 0)
    assert read_store().metrics(exp.id) == []
    assert read_store().params(exp.id) == {"lr": 0.1}


@pytest.mark.collectors
@pytest.mark.parametrize("track_args", [True, False])
def test_track_args_decides_whether_the_command_line_is_recorded(track_args, read_store):
    config = ExperimentConfig(track_args=track_args, track_system_metrics=False, track_git=False)
    with Experiment("args", config=config):
        pass
    params = read_store().params(read_store().list_runs()[-1].id)
    assert "env/python" in params
    assert ("env/argv" in params) is track_args


@pytest.mark.collectors
def test_tracking_fields_switch_collectors_off(read_store):
    config = ExperimentConfig(track_system_metrics=False, track_environment=False, track_git=False)
    with Experiment("silent", config=config) as exp:
        pass
    assert read_store().metrics(exp.id) == []
    assert read_store().params(exp.id) == {}


def test_automagic_captures_the_callers_hyperparameters(read_store):
    learning_rate = 0.01
    layers = 4
    with Experiment("magic", automagic=True) as exp:
        pass
    assert read_store().params(exp.id) == {"learning_rate": 0.01, "layers": 4}
    del learning_rate, layers


def test_artifact_flags_turn_the_watcher_on(tmp_path, read_store, monkeypatch):
    from tracelet.artifact_watch import ArtifactWatcher

    monkeypatch.setattr(ArtifactWatcher, "poll_seconds", 0.05)
    watched = Experiment("files", automagic_artifacts=True)
    with watched:
        (tmp_path / "model.pt").write_bytes(b"weights")
    folder = tmp_path / "out"
    folder.mkdir()
    config = ExperimentConfig(watch_filesystem=True, artifact_watch_dirs=[str(folder)])
    with Experiment("folder", config=config) as exp:
        (folder / "notes.txt").write_text("inside")
        (tmp_path / "elsewhere.txt").write_text("outside")
    assert [a.artifact_path for a in read_store().artifacts(watched.id)] == ["model.pt"]
    assert [a.artifact_path for a in read_store().artifacts(exp.id)] == ["notes.txt"]


def test_enable_artifacts_reaches_the_framework_integrations():
    exp = Experiment("artifacts", artifacts=True)
    with exp:
        for framework in exp.frameworks:  # built-in and installed ones alike
            assert framework.config["enable_artifacts"] is True
    assert exp.config.enable_artifacts is True


def test_every_constructor_argument_takes_effect(tmp_path, read_store):
    registry = PluginRegistry(entry_points_group=None)
    seen = []
    settings = TraceletSettings(store_path=str(tmp_path / "elsewhere"), track_system=False)
    exp = Experiment(
        "named",
        backend=["local"],
        tags=["baseline"],
        project="vision",
        settings=settings,
        options={"checkpoint_interval": 7, "notes": "first try"},
        backend_options={"local": {"path": str(tmp_path / "copy")}},
        run_id="my-run-1",
        registry=registry,
        on_anomaly=seen.append,
        anomaly_config=LossSpikeThresholds(enabled=False),
        automagic_config={"frameworks": ["torch"]},
    )
    with exp:
        exp.log_metric("loss", float("nan"), 0)
        for step in range(1, 200):
            exp.log_metric("loss", 1.0 if step != 150 else 1e6, step)
    assert (exp.name, exp.project, exp.id, exp.tags) == (
        "named",
        "vision",
        "my-run-1",
        ["baseline"],
    )
    assert exp.settings.checkpoint_interval == 7
    assert exp.store.path == (tmp_path / "elsewhere").resolve()
    assert (tmp_path / "copy" / "tracelet.db").exists(), "backend_options reached the backend"
    assert exp.store.tags(exp.id) == {"baseline": "", "notes": "first try"}
    kinds = [a["kind"] for a in seen]
    assert kinds == ["nan_or_inf"], "on_anomaly called; the loss-spike rule is off"
    assert exp.automagic_config == tracelet.AutomagicConfig(frameworks={"torch"})
    assert exp.settings.automagic_frameworks == {"torch"}


def test_options_for_a_backend_the_run_does_not_use_are_an_error():
    with pytest.raises(tracelet.ConfigurationError, match="backend 'mlflow', which the run"):
        Experiment("x", backend_options={"mlflow": {"tracking_uri": "x"}})


def test_config_must_be_an_experiment_config():
    with pytest.raises(TypeError, match="config must be an ExperimentConfig"):
        Experiment("x", config={"track_git": False})


def test_start_logging_and_experiment_share_one_resolver(monkeypatch):
    import tracelet.settings as settings_module

    calls = []
    real = settings_module.resolve_run
    monkeypatch.setattr(
        sys.modules["tracelet.core.experiment"],
        "resolve_run",
        lambda *a, **k: calls.append(1) or real(*a, **k),
    )
    tracelet.start_logging("once", config={"track_git": False}).stop()
    assert calls == [1]
