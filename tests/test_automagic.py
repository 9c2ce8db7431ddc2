"""Automagic capture of hyperparameters, models and datasets; framework integrations."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest

import tracelet
from tracelet.core.registry import default_registry
from tracelet.plugins import FrameworkPlugin, FrameworkRegistration


def test_capture_hyperparams_takes_the_callers_simple_locals(read_store):
    learning_rate = 0.01
    batch_size = 32
    optimizer = "adam"
    layers = [64, 32]
    use_amp = True
    _private = 1
    model = object()
    helper = math.sqrt
    with tracelet.start_logging("automagic") as exp:
        found = exp.capture_hyperparams()
    expected = {
        "learning_rate": 0.01,
        "batch_size": 32,
        "optimizer": "adam",
        "layers": "[64, 32]",
        "use_amp": True,
    }
    assert found == expected
    assert read_store().params(exp.id) == expected
    del learning_rate, batch_size, optimizer, layers, use_amp, _private, model, helper


def test_enable_automagic_captures_at_start(read_store):
    epochs = 7
    dropout = 0.1
    with tracelet.start_logging("auto", config={"enable_automagic": True}) as exp:
        pass
    assert read_store().params(exp.id) == {"epochs": 7, "dropout": 0.1}
    del epochs, dropout


def test_capture_model_and_dataset(read_store):
    class Parameter:
        def __init__(self, size, trainable):
            self.size, self.requires_grad = size, trainable

        def numel(self):
            return self.size

    class TinyNet:
        def parameters(self):
            return [Parameter(10, True), Parameter(5, False)]

    class Estimator:
        def get_params(self):
            return {"C": 1.0, "kernel": "rbf", "callback": print}

    with tracelet.start_logging("described") as exp:
        net = exp.capture_model(TinyNet())
        estimator = exp.capture_model(Estimator())
        data = exp.capture_dataset(np.zeros((100, 3), dtype=np.float32))
    assert net["parameters"] == 15
    assert net["trainable_parameters"] == 10
    assert estimator["params/C"] == 1.0
    assert "params/callback" not in estimator
    assert data == {
        "class": "ndarray",
        "module": "numpy",
        "size": 100,
        "shape": "(100, 3)",
        "dtype": "float32",
    }
    params = read_store().params(exp.id)
    assert params["dataset/shape"] == "(100, 3)"
    assert params["model/params/kernel"] == "rbf"


class Recorder(FrameworkPlugin):
    events: list[tuple[str, str]] = []

    def attach(self, experiment):
        self.experiment = experiment
        Recorder.events.append(("attach", experiment.name))
        experiment.log_metric("from_framework", 1.0, 0)

    def detach(self):
        Recorder.events.append(("detach", self.experiment.name))


class Broken(Recorder):
    def attach(self, experiment):
        raise RuntimeError("library missing")


class Frameworks:
    @tracelet.hookimpl
    def tracelet_register_frameworks(self):
        return [
            FrameworkRegistration("recorder", Recorder),
            FrameworkRegistration("broken", Broken),
        ]


@pytest.fixture
def frameworks():
    registry = default_registry()
    registry.register(Frameworks(), name="frameworks")
    Recorder.events = []
    yield Recorder.events
    registry.manager.unregister(name="frameworks")


def test_frameworks_attach_at_start_and_detach_at_stop(frameworks, read_store, caplog):
    with caplog.at_level(logging.WARNING, "tracelet"), tracelet.start_logging("fw") as exp:
        assert frameworks == [("attach", "fw")]
    assert frameworks == [("attach", "fw"), ("detach", "fw")]
    assert "library missing" in caplog.text
    assert [p[0] for p in read_store().metrics(exp.id)] == ["from_framework"]


@pytest.fixture
def fast_watch(monkeypatch):
    from tracelet.artifact_watch import ArtifactWatcher

    monkeypatch.setattr(ArtifactWatcher, "poll_seconds", 0.05)


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_watch_filesystem_logs_new_and_changed_files(tmp_path, fast_watch, read_store):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "before.txt").write_text("old")
    config = {"watch_filesystem": True, "artifact_watch_dirs": [str(out)]}
    with tracelet.start_logging("watched", config=config) as exp:
        (out / "sub" / "notes.txt").write_text("new")
        wait_for(lambda: exp.list_artifacts())
        (out / "before.txt").write_text("changed")
        (out / "last.txt").write_text("written just before stop")
    stored = {a.artifact_path: Path(a.path).read_text() for a in read_store().artifacts(exp.id)}
    assert stored == {
        "sub/notes.txt": "new",
        "before.txt": "changed",
        "last.txt": "written just before stop",
    }


def test_automagic_artifacts_only_takes_ml_files_with_their_type(tmp_path, fast_watch, read_store):
    config = {"automagic_artifacts": True, "artifact_watch_dirs": [str(tmp_path)]}
    with tracelet.start_logging("automagic files", config=config) as exp:
        (tmp_path / "epoch1.ckpt").write_bytes(b"weights")
        (tmp_path / "debug.log").write_text("noise")
    (artifact,) = read_store().artifacts(exp.id)
    assert (artifact.artifact_path, artifact.kind) == ("epoch1.ckpt", "checkpoint")


def test_automagic_frameworks_selects_integrations(frameworks):
    with tracelet.start_logging("only others", config={"automagic_frameworks": ["other"]}) as exp:
        assert frameworks == []
        always = {"artifact-watch", "output-capture", "torch-tensors"}  # not selectable
        assert {f.name for f in exp.frameworks} == always
    with tracelet.start_logging("chosen", config={"automagic_frameworks": ["recorder"]}):
        assert frameworks == [("attach", "chosen")]
