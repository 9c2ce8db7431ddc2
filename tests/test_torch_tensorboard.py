"""TensorBoard capture and tensors as metric values (tracelet-torch), read back from the
local store, the event files and a real MLflow server."""

from __future__ import annotations

import gc
import json
import threading
import weakref

import pytest
import torch
from python_script import run_script
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import tracelet
from tracelet.plugins import FrameworkPlugin
from tracelet_torch import tensorboard as capture

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def only_run(store):
    (run,) = store.list_runs()
    return run


def points(store, run_id, name):
    return [(step, value) for _, value, step, _ in store.metrics(run_id, name)]


def event_scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_the_spec_basic_example_runs_as_written(mlflow_server, monkeypatch, tmp_path):
    """../shared/spec/tracelet-core-api.md, "Basic Usage", word for word (MLflow's own
    variable says where its server is)."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    (tmp_path / "model.pth").write_bytes(b"weights")

    from torch.utils.tensorboard import SummaryWriter

    import tracelet

    # Start experiment tracking
    experiment = tracelet.start_logging(
        exp_name="my_experiment", project="my_project", backend="mlflow"
    )

    # Use TensorBoard normally - metrics automatically captured
    writer = SummaryWriter()
    writer.add_scalar("loss", 0.5, 0)
    writer.add_scalar("accuracy", 0.95, 0)

    # Direct API usage
    experiment.log_params({"learning_rate": 0.01, "batch_size": 32})

    experiment.log_artifact("model.pth")

    # Stop tracking
    tracelet.stop_logging()

    writer.close()
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{experiment.id}'",
    )
    history = {n: client.get_metric_history(run.info.run_id, n) for n in ("loss", "accuracy")}
    assert [(m.step, m.value) for m in history["loss"]] == [(0, 0.5)]
    assert [(m.step, m.value) for m in history["accuracy"]] == [(0, 0.95)]
    assert run.data.params == {"learning_rate": "0.01", "batch_size": "32"}
    assert event_scalars(writer.log_dir, "loss") == [(0, 0.5)]  # TensorBoard's as before


def test_every_captured_writer_call_reaches_the_run(read_store, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.tensorboard import SummaryWriter

    labels, predictions = torch.tensor([0, 1, 1, 0, 1]), torch.tensor([0.1, 0.8, 0.6, 0.3, 0.9])
    with tracelet.start_logging("tensorboard") as exp:
        writer = SummaryWriter(tmp_path / "events")
        for step in range(3):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("lr", torch.tensor(0.1), 2)
        writer.add_scalars("acc", {"train": 0.9, "val": 0.8}, 2)
        writer.add_histogram("weights", torch.arange(10.0), 2)
        writer.add_image("image", torch.ones(3, 4, 5), 2)
        writer.add_images("batch", torch.zeros(2, 3, 4, 5), 2)
        writer.add_text("notes", "hello", 2)
        figure = plt.figure()
        writer.add_figure("figure", figure, 2)
        writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hparam/accuracy": 0.9})
        writer.add_pr_curve("pr", labels, predictions, 2, num_thresholds=5)
        writer.close()
    store = read_store()
    assert points(store, exp.id, "train/loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert points(store, exp.id, "lr") == [(2, pytest.approx(0.1))]
    assert points(store, exp.id, "acc/train") == [(2, 0.9)]
    assert points(store, exp.id, "acc/val") == [(2, 0.8)]
    assert points(store, exp.id, "hparam/accuracy") == [(0, 0.9)]  # once, not twice
    assert store.params(exp.id) == {"lr": 0.1, "optimizer": "sgd"}
    (histogram,) = store.histograms(exp.id)
    assert (histogram.name, histogram.step, sum(histogram.counts)) == ("weights", 2, 10)
    images = {image.name: image for image in store.images(exp.id)}
    assert set(images) == {"image", "batch", "figure"}
    assert _png_size(images["image"]) == (5, 4)  # CHW 3x4x5: 5 wide, 4 high
    assert _png_size(images["batch"]) == (10, 4)  # two in a grid, as the writer tiles them
    texts = {text.name: text for text in store.texts(exp.id)}
    assert texts["notes"].text == "hello"
    curve = json.loads(texts["pr"].text)
    assert curve["thresholds"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve["true_positives"][0] == 3  # every positive is above the lowest threshold
    assert event_scalars(tmp_path / "events", "train/loss")[1] == (1, 0.5)
    assert not plt.fignum_exists(figure.number)  # the writer still closes it


def _png_size(image):
    from PIL import Image

    with Image.open(image.path) as opened:
        return opened.size


def test_tensorboardx_is_captured_too(read_store, tmp_path):
    from tensorboardX import SummaryWriter

    with tracelet.start_logging("tensorboardX") as exp:
        writer = SummaryWriter(str(tmp_path / "x"))
        writer.add_scalar("loss", 0.25, 7)
        writer.add_text("note", "x", 7)
        writer.close()
    store = read_store()
    assert points(store, exp.id, "loss") == [(7, 0.25)]
    assert [(t.name, t.step) for t in store.texts(exp.id)] == [("note", 7)]


def test_a_call_without_a_step_goes_where_the_writer_puts_it(read_store, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with tracelet.start_logging("no step") as exp:
        exp.set_iteration(40)
        writer = SummaryWriter(tmp_path / "events")
        writer.add_scalar("loss", 0.5)
        writer.close()
    assert points(read_store(), exp.id, "loss") == [(0, 0.5)]
    assert event_scalars(tmp_path / "events", "loss") == [(0, 0.5)]


def test_capture_is_installed_once_undone_at_stop_and_idle_without_a_run(read_store, tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    original = SummaryWriter.__dict__["add_scalar"]
    writer = SummaryWriter(tmp_path / "events")
    runs = []
    for name in ("first", "second"):
        with tracelet.start_logging(name) as exp:
            assert SummaryWriter.__dict__["add_scalar"] is not original
            writer.add_scalar("loss", 1.0, 0)
            runs.append(exp.id)
        assert SummaryWriter.__dict__["add_scalar"] is original
    writer.add_scalar("loss", 2.0, 1)  # no run: TensorBoard only
    writer.close()
    store = read_store()
    assert [points(store, run, "loss") for run in runs] == [[(0, 1.0)], [(0, 1.0)]]
    assert event_scalars(tmp_path / "events", "loss") == [(0, 1.0), (0, 1.0), (1, 2.0)]


def test_a_writer_imported_after_the_run_started_is_captured(tmp_path):
    """The classes are patched when the library is imported, not by importing it."""
    done = run_script(
        """
        import sys, tracelet
        exp = tracelet.start_logging("late import")
        assert "torch.utils.tensorboard.writer" not in sys.modules
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter("events")
        writer.add_scalar("loss", 0.75, 3)
        writer.close()
        tracelet.stop_logging()
        from tracelet.storage import LocalStore
        print(LocalStore(".tracelet").metrics(exp.id, "loss")[0][1:3])
        """,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "(0.75, 3)"


def test_a_failing_capture_never_fails_the_writer(read_store, tmp_path, caplog, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(experiment, call):
        raise RuntimeError("boom")

    monkeypatch.setitem(capture.FORWARDS, "add_text", broken)
    with tracelet.start_logging("broken") as exp:
        writer = SummaryWriter(tmp_path / "events")
        writer.add_text("note", "kept by TensorBoard", 1)
        writer.add_scalar("bad name", float("nan"), 1)
        writer.add_scalar("", 1.0, 1)  # a name Tracelet refuses: TensorBoard keeps it
        writer.close()
    assert "add_text not captured: RuntimeError('boom')" in caplog.text
    assert "add_scalar not captured" in caplog.text
    assert read_store().texts(exp.id) == []


# -- tensors as metric values ----------------------------------------------------------


def test_tensor_values_are_accepted_and_keep_no_graph_alive(read_store):
    leaf = torch.ones(3, requires_grad=True)

    def forward():
        hidden = leaf * 2
        return hidden.sin().sum(), weakref.ref(hidden)  # sin keeps `hidden` for backward

    with tracelet.start_logging("tensors") as exp:
        loss, hidden = forward()
        exp.log_metric("loss", loss, 0)
        tracelet.log({"loss": loss * 2, "acc": torch.tensor(0.5)}, step=1)
        exp.log_metric("int", torch.tensor(3), 2)  # .item() gives an int: checked as one
        exp.log_metric("flag", torch.tensor(True), 2)
        del loss
        gc.collect()
        assert hidden() is None  # nothing Tracelet holds keeps the graph
    store = read_store()
    expected = float(torch.sin(torch.tensor(2.0)) * 3)
    assert points(store, exp.id, "loss") == [
        (0, pytest.approx(expected)),
        (1, pytest.approx(2 * expected)),
    ]
    assert points(store, exp.id, "acc") == [(1, 0.5)]
    assert points(store, exp.id, "int") == [(2, 3.0)]
    assert points(store, exp.id, "flag") == [(2, 1.0)]


def test_a_tensor_of_several_values_is_refused_with_the_fix():
    with tracelet.start_logging("bad"):
        with pytest.raises(TypeError, match=r"metric 'loss'.*more than one element.*mean\(\)"):
            tracelet.log({"loss": torch.ones(3)})
        with pytest.raises(TypeError, match=r"array of one element: log value.item\(\)"):
            tracelet.log({"loss": torch.ones(1)})


class Deferred:
    """A pending value, as a GPU tensor's copy is: read on whichever thread asks."""

    def __init__(self, value, fail=False):
        self.value, self.fail, self.thread = value, fail, None

    def result(self):
        self.thread = threading.current_thread().name
        if self.fail:
            raise RuntimeError("device lost")
        return self.value


class Deferring(FrameworkPlugin):
    """Turns every ``Deferred`` into a pending value (as tracelet-torch does CUDA tensors)."""

    def attach(self, experiment):
        self.experiment = experiment

    def detach(self):
        self.experiment = None

    def metric_value(self, value):
        return value if isinstance(value, Deferred) else None


def test_pending_values_are_resolved_off_the_training_thread(read_store, caplog):
    values = [Deferred(1.5), Deferred(0.0, fail=True), Deferred(2.5)]
    with tracelet.start_logging("pending") as exp:
        exp.attach_framework(Deferring())
        exp.log_metric("loss", values[0], 3)
        tracelet.log({"loss": values[1], "other": 1.0}, step=4)
        exp.log_metric("loss", values[2], step=5)
        with pytest.raises(TypeError, match="give the step once"):
            exp.log_metric("loss", Deferred(1.0), 1, step=2)
    assert points(read_store(), exp.id, "loss") == [(3, 1.5), (5, 2.5)]
    assert points(read_store(), exp.id, "other") == [(4, 1.0)]
    assert {v.thread for v in values} == {"tracelet-dispatcher"}
    assert "a value logged at step 4 could not be read (RuntimeError('device lost'))" in caplog.text


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_tensors_are_logged_without_a_sync_on_the_training_thread(read_store):
    """PyTorch's sync debug mode raises on any call that waits for the device."""
    from tracelet_torch.tensors import CopiedScalar, scalar_value

    with tracelet.start_logging("cuda") as exp:
        loss = torch.randn(4096, device="cuda", requires_grad=True).pow(2).mean()
        torch.cuda.set_sync_debug_mode("error")
        try:
            exp.log_metric("loss", loss, 0)
            tracelet.log({"loss": loss * 2}, step=1)
            pending = scalar_value(loss)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        expected = loss.item()
    assert isinstance(pending, CopiedScalar)
    assert points(read_store(), exp.id, "loss") == [
        (0, pytest.approx(expected)),
        (1, pytest.approx(2 * expected)),
    ]


@cuda
def test_watch_on_a_cuda_model_never_syncs_the_training_thread(read_store):
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    model = model.cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.randn(8, 32, 64, device="cuda")
    with tracelet.start_logging("cuda watch") as exp:
        tracelet.watch(model, log_freq=2)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for step in range(8):
                optimizer.zero_grad()
                loss = model(data[step]).pow(2).mean()
                loss.backward()
                optimizer.step()
                tracelet.log({"loss": loss})
                tracelet.step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    store = read_store()
    assert [s for s, _ in points(store, exp.id, "grad/0.weight/norm")] == [1, 3, 5, 7]
    assert len(points(store, exp.id, "loss")) == 8
