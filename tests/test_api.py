"""The public API, every form in the spec, checked against what the local store holds."""

from __future__ import annotations

import math
import re
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import tracelet
from tracelet import ConfigurationError, Experiment, RunStatus
from tracelet.core.experiment import Experiment as ExperimentFromSpecPath
from tracelet.core.plugins import BackendPlugin as BackendPluginFromSpecPath
from tracelet.core.registry import unknown_backend


def only_run(store):
    (run,) = store.list_runs()
    return run


def test_spec_import_paths_are_the_public_classes():
    assert ExperimentFromSpecPath is Experiment
    assert BackendPluginFromSpecPath is tracelet.BackendPlugin
    from tracelet.interface import get_active_experiment, start_logging, stop_logging
    from tracelet.settings import TraceletSettings

    assert start_logging is tracelet.start_logging
    assert stop_logging is tracelet.stop_logging
    assert get_active_experiment is tracelet.get_active_experiment
    assert TraceletSettings is tracelet.TraceletSettings


def test_start_logging_positional_and_keyword_name(read_store):
    first = tracelet.start_logging("positional", "proj", "local")
    assert first.name == "positional"
    assert first.project == "proj"
    second = tracelet.start_logging(exp_name="keyword", project="proj")
    assert first.status is RunStatus.FINISHED, "starting a run stops the active one first"
    assert tracelet.get_active_experiment() is second
    tracelet.stop_logging()
    assert tracelet.get_active_experiment() is None
    runs = {r.name: r for r in read_store().list_runs(project="proj")}
    assert set(runs) == {"positional", "keyword"}
    assert {r.status for r in runs.values()} == {RunStatus.FINISHED}


def test_basic_usage_example_from_the_spec(read_store, tmp_path):
    experiment = tracelet.start_logging(exp_name="my_experiment", project="my_project")
    experiment.log_params({"learning_rate": 0.01, "batch_size": 32})
    (tmp_path / "model.pth").write_bytes(b"weights")
    experiment.log_artifact("model.pth")
    current = tracelet.get_active_experiment()
    assert current is experiment
    assert len(current.experiment_id) == 32
    assert [b.name for b in current.backends] == ["local"]
    tracelet.stop_logging()
    store = read_store()
    run = only_run(store)
    assert store.params(run.id) == {"learning_rate": 0.01, "batch_size": 32}
    (artifact,) = store.artifacts(run.id)
    assert artifact.artifact_path == "model.pth"
    assert Path(artifact.path).read_bytes() == b"weights"


def test_context_manager_finishes_and_flushes(read_store):
    with tracelet.start_logging("context_experiment") as exp:
        for epoch in range(10):
            exp.log_metric("loss", 1.0 / (epoch + 1), epoch)
    assert tracelet.get_active_experiment() is None
    store = read_store()
    run = only_run(store)
    assert run.status is RunStatus.FINISHED
    assert [(p[2], p[1]) for p in store.metrics(run.id, "loss")] == [
        (epoch, 1.0 / (epoch + 1)) for epoch in range(10)
    ]


def test_exception_in_block_marks_failed_and_keeps_points(read_store):
    with pytest.raises(ZeroDivisionError), tracelet.start_logging("boom") as exp:
        exp.log_metric("loss", 0.5, 0)
        exp.log_metric("loss", 0.25, 1)
        _ = 1 / 0
    store = read_store()
    run = only_run(store)
    assert run.status is RunStatus.FAILED
    assert [p[1] for p in store.metrics(run.id, "loss")] == [0.5, 0.25]


def test_keyboard_interrupt_marks_killed(read_store):
    with pytest.raises(KeyboardInterrupt), tracelet.start_logging("interrupted"):
        raise KeyboardInterrupt
    assert only_run(read_store()).status is RunStatus.KILLED


def test_stop_with_explicit_status(read_store):
    exp = tracelet.start_logging("explicit")
    exp.stop(status="failed")
    exp.stop()  # a second stop changes nothing
    assert only_run(read_store()).status is RunStatus.FAILED
    with pytest.raises(ValueError, match="unknown run status 'exploded'"):
        exp.stop(status="exploded")


@pytest.mark.parametrize(
    ("call", "expected_step"),
    [
        (lambda e: e.log_metric("m", 1.0, 7), 7),
        (lambda e: e.log_metric("m", 1.0, iteration=8), 8),
        (lambda e: e.log_metric("m", 1.0, step=9), 9),
        (lambda e: e.log_metric("m", 1.0, 0), 0),
        (lambda e: e.log_metric("m", 1.0, step=0), 0),
        (lambda e: e.log_metric("m", 1.0), 5),
        (lambda e: e.log_metric("m", 1.0, np.int64(11)), 11),
    ],
)
def test_log_metric_step_forms(call, expected_step, read_store):
    with tracelet.start_logging("steps") as exp:
        exp.set_iteration(5)
        call(exp)
    store = read_store()
    assert [p[2] for p in store.metrics(only_run(store).id)] == [expected_step]


def test_step_given_twice_is_an_error():
    exp = tracelet.start_logging("twice")
    with pytest.raises(TypeError, match="give the step once"):
        exp.log_metric("m", 1.0, 3, step=4)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, 3.0),
        (2.5, 2.5),
        (True, 1.0),
        (np.float32(0.5), 0.5),
        (np.float64(0.25), 0.25),
        (np.int32(7), 7.0),
        (np.array(1.5), 1.5),
    ],
)
def test_numeric_values_are_accepted(value, expected, read_store):
    with tracelet.start_logging("values") as exp:
        exp.log_metric("m", value, 0)
    store = read_store()
    assert store.metrics(only_run(store).id) == [("m", expected, 0, pytest.approx(0, abs=1e10))]


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ("0.5", "str"),
        (None, "NoneType"),
        ([1.0], "list"),
        (np.array([1.0, 2.0]), "ndarray"),
        (1 + 2j, "complex"),
    ],
)
def test_non_numbers_raise_type_error_naming_metric_and_type(value, type_name, read_store):
    with tracelet.start_logging("bad values") as exp:
        exp.log_metric("kept", 1.0, 0)
        with pytest.raises(TypeError, match=rf"metric 'accuracy'.*{type_name}"):
            exp.log_metric("accuracy", value, 1)
        exp.log_metric("kept", 2.0, 1)
    store = read_store()
    points = store.metrics(only_run(store).id)
    assert [(p[0], p[1]) for p in points] == [("kept", 1.0), ("kept", 2.0)]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_steps_are_refused(bad):
    exp = tracelet.start_logging("bad steps")
    with pytest.raises((TypeError, ValueError), match="step"):
        exp.log_metric("m", 1.0, bad)


def test_bad_names_are_refused():
    exp = tracelet.start_logging("bad names")
    with pytest.raises(TypeError, match="metric name must be a str"):
        exp.log_metric(3, 1.0)
    with pytest.raises(ValueError, match="must not be empty"):
        exp.log_metric("", 1.0)


def test_nan_and_infinities_are_kept(read_store):
    with tracelet.start_logging("specials") as exp:
        exp.log_metric("x", float("nan"), 0)
        exp.log_metric("x", float("inf"), 1)
        exp.log_metric("x", float("-inf"), 2)
        exp.log_metric("x", np.float32("nan"), 3)
    store = read_store()
    values = [p[1] for p in store.metrics(only_run(store).id, "x")]
    assert math.isnan(values[0])
    assert values[1:3] == [math.inf, -math.inf]
    assert math.isnan(values[3])


def test_params_nested_flattened_and_hyperparameter(read_store):
    with tracelet.start_logging("params") as exp:
        exp.log_params({"optimizer": {"name": "adam", "betas": {"b1": 0.9}}, "epochs": 3})
        exp.log_hyperparameter("seed", np.int64(42))
        exp.log_params({"epochs": 4, "layers": [64, 32], "dropout": None})
    store = read_store()
    assert store.params(only_run(store).id) == {
        "optimizer/name": "adam",
        "optimizer/betas/b1": 0.9,
        "epochs": 4,
        "seed": 42,
        "layers": "[64, 32]",
        "dropout": None,
    }


def test_params_bad_input():
    exp = tracelet.start_logging("bad params")
    with pytest.raises(TypeError, match="params must be a dict"):
        exp.log_params([("a", 1)])
    with pytest.raises(TypeError, match="parameter names"):
        exp.log_params({1: "x"})


def test_text_and_images(read_store):
    with tracelet.start_logging("media") as exp:
        exp.set_iteration(4)
        exp.log_text("note", "hello\nworld")
        exp.log_text("note", "again", step=5)
        exp.log_image("hwc", np.zeros((4, 6, 3), dtype=np.uint8))
        exp.log_image("chw_float", np.ones((3, 5, 2), dtype=np.float32), step=6)
        exp.log_image("grey", np.full((2, 3), 200, dtype=np.uint8), step=7)
        with pytest.raises(FileNotFoundError, match=r"image 'bad': 'no such\.png' is not a file"):
            exp.log_image("bad", "no such.png")
        with pytest.raises(TypeError, match="image 'bad': cannot log a dict"):
            exp.log_image("bad", {})
        with pytest.raises(TypeError, match="is not an image"):
            exp.log_image("bad", np.zeros((2, 2, 2, 2)))
    store = read_store()
    run_id = only_run(store).id
    assert [(t.name, t.text, t.step) for t in store.texts(run_id)] == [
        ("note", "hello\nworld", 4),
        ("note", "again", 5),
    ]
    images = store.images(run_id)
    assert [(i.name, i.step) for i in images] == [("hwc", 4), ("chw_float", 6), ("grey", 7)]
    sizes = [png_size(Path(i.path).read_bytes()) for i in images]
    assert sizes == [(6, 4, 2), (2, 5, 2), (3, 2, 0)]
    assert decode_grey(Path(images[2].path).read_bytes()) == [[200] * 3] * 2


def test_histograms_binned_or_given(read_store):
    from tracelet.histograms import _python_bins

    with tracelet.start_logging("hist") as exp:
        exp.set_iteration(2)
        exp.log_histogram("w", np.arange(10.0).reshape(2, 5), bins=5)
        exp.log_histogram("w", [1.0, float("nan"), float("inf"), 3.0], 3, bins=2)
        exp.log_histogram("given", counts=[1, 2], edges=[0.0, 0.5, 1.0], step=4)
        for bad, error, match in [
            ({"values": [1.0], "bins": 0}, ValueError, "bins must be an int from 1 to 512"),
            ({"values": [1.0], "bins": 513}, ValueError, "from 1 to 512"),
            ({"values": [float("nan")]}, ValueError, "at least one finite value"),
            ({"values": ["a"]}, TypeError, "must be numbers, not str"),
            ({"values": "abc"}, TypeError, "numbers in a list"),
            ({}, TypeError, "either values or counts and edges"),
            ({"values": [1.0], "counts": [1]}, TypeError, "either values or counts"),
            ({"counts": [1]}, TypeError, "counts and edges go together"),
            ({"counts": [1, 2], "edges": [0, 1]}, ValueError, "one more edge than counts"),
            ({"counts": [1], "edges": [1, 0]}, ValueError, "increasing order"),
            ({"counts": [-1], "edges": [0, 1]}, ValueError, "not negative"),
        ]:
            with pytest.raises(error, match=match):
                exp.log_histogram("bad", **bad)
    found = read_store().histograms(only_run(read_store()).id)
    assert [(h.name, h.step, h.counts, h.nonfinite) for h in found] == [
        ("w", 2, (2.0, 2.0, 2.0, 2.0, 2.0), 0),
        ("w", 3, (1.0, 1.0), 2),
        ("given", 4, (1.0, 2.0), 0),
    ]
    assert found[0].edges == (0.0, 1.8, 3.6, 5.4, 7.2, 9.0)
    assert found[2].edges == (0.0, 0.5, 1.0)
    counts, edges = _python_bins([0.0, 1.0, 2.0, 3.0], 2)  # without NumPy: the same bins
    assert (counts, edges) == ((2.0, 2.0), (0.0, 1.5, 3.0))


def png_size(data: bytes) -> tuple[int, int, int]:
    """(width, height, colour type) from a PNG's header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, _, color = struct.unpack(">IIBB", data[16:26])
    return width, height, color


def decode_grey(data: bytes) -> list[list[int]]:
    """Pixels of an 8-bit grey PNG written with filter 0."""
    width, height, _ = png_size(data)
    idat_len = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41 : 41 + idat_len])
    return [list(raw[r * (width + 1) + 1 : (r + 1) * (width + 1)]) for r in range(height)]


def test_png_bytes_and_paths_are_logged_as_given(read_store, tmp_path):
    from tracelet.media import encode_png

    png = encode_png(np.full((2, 2), 7, dtype=np.uint8))
    (tmp_path / "pic.png").write_bytes(png)
    with tracelet.start_logging("png") as exp:
        exp.log_image("bytes", png, 0)
        exp.log_image("path", tmp_path / "pic.png", 1)
        with pytest.raises(TypeError, match="PNG"):
            exp.log_image("not png", b"GIF89a....")
    store = read_store()
    assert [Path(i.path).read_bytes() for i in store.images(only_run(store).id)] == [png, png]


def test_artifacts_files_and_bundles(read_store, tmp_path):
    (tmp_path / "model.pth").write_bytes(b"v1")
    with tracelet.start_logging("artifacts") as exp:
        first = exp.log_artifact("model.pth")
        (tmp_path / "model.pth").write_bytes(b"v2")  # overwritten at once: v1 must be kept
        second = exp.log_artifact(tmp_path / "model.pth", artifact_path="ckpt/model.pth")
        bundle = (
            exp.create_artifact("classifier", tracelet.ArtifactType.MODEL, "the best one")
            .add_file(str(tmp_path / "model.pth"), "weights.pth")
            .add_object({"lr": 0.1}, "config.json")
            .add_object({"layers": [1, 2]}, "arch.yaml", serializer="yaml")
            .add_reference("s3://bucket/data.tar", size_bytes=10)
        )
        results = exp.log_artifact(bundle)
        with pytest.raises(FileNotFoundError, match=r"missing\.bin"):
            exp.log_artifact("missing.bin")
        with pytest.raises(ValueError, match="must be relative"):
            exp.log_artifact("model.pth", artifact_path="../escape")
        with pytest.raises(TypeError, match="path or a TraceletArtifact"):
            exp.log_artifact(42)
    assert first["local"].version == "1"
    assert second["local"].uri.endswith("v1/ckpt/model.pth")
    assert results["local"].uri.endswith("artifacts/v1/classifier")
    store = read_store()
    run_id = only_run(store).id
    stored = {a.artifact_path: Path(a.path).read_bytes() for a in store.artifacts(run_id)}
    assert stored["model.pth"] == b"v1"
    assert stored["ckpt/model.pth"] == b"v2"
    assert stored["classifier/weights.pth"] == b"v2"
    assert stored["classifier/config.json"].replace(b" ", b"").replace(b"\n", b"") == b'{"lr":0.1}'
    assert b"layers" in stored["classifier/arch.yaml"]
    found = exp.get_artifact("classifier")
    assert found.type is tracelet.ArtifactType.MODEL
    assert found.description == "the best one"
    assert [r.uri for r in found.references] == ["s3://bucket/data.tar"]
    assert {f.artifact_path for f in found.files} == {"weights.pth", "config.json", "arch.yaml"}
    assert [a.name for a in exp.list_artifacts(type_filter="model")] == ["classifier"]
    assert exp.get_artifact("nothing") is None


def test_logging_outside_a_run_raises():
    exp = Experiment("never started")
    with pytest.raises(RuntimeError, match="has not been started"):
        exp.log_metric("m", 1.0)
    exp.start()
    exp.stop()
    with pytest.raises(RuntimeError, match="has stopped"):
        exp.log_metric("m", 1.0)
    with pytest.raises(RuntimeError, match="was already started"):
        exp.start()


def test_experiment_constructor_and_properties(read_store):
    exp = Experiment("constructed", backend=["local"], tags=["baseline", "cnn"], project="p")
    assert exp.status is None
    exp.start()
    assert exp.is_running
    assert exp.name == "constructed"
    assert exp.project == "p"
    assert exp.id == exp.experiment_id
    assert exp.tags == ["baseline", "cnn"]
    assert exp.created_at.tzinfo is not None
    exp.set_iteration(3)
    assert exp.iteration == 3
    exp.add_tags({"team": "ml"})
    exp.end()
    store = read_store()
    assert store.tags(exp.id) == {"baseline": "", "cnn": "", "team": "ml"}


def test_unknown_backend_is_a_configuration_error_naming_the_fix():
    with pytest.raises(ConfigurationError) as caught:
        tracelet.start_logging("x", backend="invalid_backend")
    message = str(caught.value)
    assert "invalid_backend" in message
    assert re.search(r"installed: [^)]*\blocal\b", message)
    missing = unknown_backend("aim", ["local"])  # as when tracelet-aim is not installed
    assert "pip install tracelet-aim" in str(missing)
    with pytest.raises(ValueError, match="disabled: remove 'wandb' from disable_plugins"):
        tracelet.start_logging("x", backend="wandb", config={"disable_plugins": ["wandb"]})
    assert tracelet.get_active_experiment() is None


def test_short_form_init_log_step_finish(read_store):
    run = tracelet.init(project="gpt-finetuning", run_name="experiment-001")
    assert run is tracelet.get_active_experiment()
    for step in range(3):
        tracelet.log({"loss": 2.0 - step, "accuracy": 0.5 + step / 10})
        assert tracelet.step() == step + 1
    tracelet.log({"eval": 1.0}, step=10)
    tracelet.finish()
    store = read_store()
    stored = only_run(store)
    assert (stored.name, stored.project) == ("experiment-001", "gpt-finetuning")
    assert [(p[2], p[1]) for p in store.metrics(stored.id, "loss")] == [
        (0, 2.0),
        (1, 1.0),
        (2, 0.0),
    ]
    assert [p[2] for p in store.metrics(stored.id, "eval")] == [10]


@pytest.mark.parametrize(
    "call", [lambda: tracelet.log({"loss": 1.0}), tracelet.step], ids=["log", "step"]
)
def test_short_form_before_init_raises_runtime_error(call):
    with pytest.raises(RuntimeError, match=r"call tracelet.init\("):
        call()


def test_watch_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tracelet_torch", None)  # as if not installed
    tracelet.init(project="p")
    with pytest.raises(ImportError, match="pip install tracelet-torch"):
        tracelet.watch(object())
    with pytest.raises(ImportError, match="pip install tracelet-torch"):
        tracelet.get_active_experiment().unwatch()


def test_log_bad_input_short_form():
    tracelet.init(project="p")
    with pytest.raises(TypeError, match="dict of name to value"):
        tracelet.log([1.0])
    with pytest.raises(TypeError, match="metric 'loss'"):
        tracelet.log({"loss": "high"})


def test_a_single_tag_string_is_one_tag(read_store):
    with tracelet.start_logging("tagged", config={"tags": "baseline"}) as exp:
        assert exp.tags == ["baseline"]
    assert Experiment("x", tags="cnn").tags == ["cnn"]
    assert read_store().tags(exp.id) == {"baseline": ""}


def test_disable_plugins_in_config_takes_effect():
    with pytest.raises(ConfigurationError, match="unknown backend 'local'"):
        tracelet.start_logging("x", config={"disable_plugins": ["local"]})
