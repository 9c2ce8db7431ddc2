"""Checkpoints, the low-level StorageBackend API, and the query engine."""

from __future__ import annotations

import json
import math
import threading
import time

import pytest

import tracelet
from tracelet import TraceletSettings
from tracelet.analysis.query import QueryEngine
from tracelet.exceptions import AmbiguousRunError, NotFoundError
from tracelet.storage import StorageBackend


def train(steps: int, **config) -> tracelet.Experiment:
    exp = tracelet.init(project=config.pop("project", "p"), **config)
    for step in range(steps):
        tracelet.log({"loss": 1.0 / (step + 1), "acc": step / steps})
        if step % 7 == 0:
            tracelet.log_sample({"step": step, "text": f"sample {step}"})
        if step % 50 == 0:
            exp.log_gradient_stats({"total_norm": 2.0 + step})
        tracelet.step()
    tracelet.finish()
    return exp


def test_checkpoints_every_interval_with_that_steps_metrics(read_store):
    exp = train(300, checkpoint_interval=100, capture_samples=3)
    checkpoints = read_store().checkpoints(exp.id)
    assert [(c["first_step"], c["step"]) for c in checkpoints] == [(0, 99), (100, 199), (200, 299)]
    first = checkpoints[0]
    assert first["metrics"] == {"acc": 99 / 300, "loss": 1.0 / 100}
    assert first["gradient_stats"] == {"grad/total_norm": 52.0}
    assert [s["step"] for s in first["samples"]] == [84, 91, 98], "the 3 most recent"
    assert [s["step"] for s in checkpoints[1]["samples"]] == [182, 189, 196]


def test_no_checkpoints_when_the_interval_is_zero(read_store):
    exp = train(200, checkpoint_interval=0)
    assert read_store().checkpoints(exp.id) == []


def test_explicit_checkpoint_and_system_sample(read_store):
    exp = tracelet.start_logging("manual")
    exp.latest_system = {"system/cpu_percent": 12.5}
    exp.log_metric("loss", 0.5, 3)
    exp.checkpoint(3)
    exp.stop()
    (checkpoint,) = read_store().checkpoints(exp.id)
    assert checkpoint["metrics"] == {"loss": 0.5}
    assert checkpoint["system_metrics"] == {"system/cpu_percent": 12.5}


def test_samples_must_be_json(read_store):
    tracelet.init(project="p")
    with pytest.raises(TypeError, match="JSON-able"):
        tracelet.log_sample({"tensor": object()})
    with pytest.raises(RuntimeError, match=r"tracelet\.init"):
        tracelet.finish() or tracelet.log_sample({})


def test_tracer_config_names_work_in_init(store_path):
    exp = tracelet.init(
        project="gpt",
        run_name="e-001",
        checkpoint_interval=500,
        track_gradients=True,
        storage_path=str(store_path / "x"),
    )
    assert exp.settings.checkpoint_interval == 500
    assert exp.settings.store_path.endswith("x")


def test_storage_backend_spec_example(tmp_path):
    config = TraceletSettings(store_path=str(tmp_path / "store"))
    storage = StorageBackend(config)
    storage.create_run(
        run_id="123", project_name="test", run_name="run1", start_time=1000.0, config={"lr": 0.1}
    )
    storage.write_checkpoint(
        run_id="123",
        step=100,
        timestamp=1100.0,
        metrics={"loss": 0.5},
        gradient_stats={},
        system_metrics={},
    )
    storage.write_checkpoint(run_id="123", step=200, timestamp=1200.0, metrics={"loss": 0.25})
    runs = storage.list_runs(project_name="test")
    assert [(r["run_id"], r["run_name"], r["status"]) for r in runs] == [("123", "run1", "running")]
    checkpoints = storage.get_checkpoints("123")
    assert [(c["step"], c["first_step"], c["metrics"]) for c in checkpoints] == [
        (100, 0, {"loss": 0.5}),
        (200, 101, {"loss": 0.25}),
    ]
    storage.finish_run("123")
    assert storage.get_run("123")["status"] == "finished"
    history = QueryEngine(storage).get_metric_history("123", "loss")
    assert history == [
        {"step": 100, "value": 0.5, "timestamp": 1100.0},
        {"step": 200, "value": 0.25, "timestamp": 1200.0},
    ]
    storage.close()


def test_storage_backend_is_built_from_a_path_or_a_config_object(tmp_path):
    class TracerConfig:
        storage_path = str(tmp_path / "tracer")

    assert StorageBackend(TracerConfig()).store.path == (tmp_path / "tracer").resolve()
    assert StorageBackend(tmp_path / "p").store.path == (tmp_path / "p").resolve()
    with pytest.raises(TypeError, match="store path"):
        StorageBackend(42)


def test_a_storage_backend_run_left_open_by_a_dead_process_is_crashed(tmp_path):
    storage = StorageBackend(tmp_path / "s")
    storage.create_run("r", "p", "n", 1.0)
    storage._locks["r"].release()  # what the operating system does when the process dies
    assert StorageBackend(tmp_path / "s").get_run("r")["status"] == "crashed"


@pytest.fixture
def runs():
    """Three runs: two named 'baseline' in project a, one 'tuned' in project b."""
    made = []
    for name, project, lr, final in [
        ("baseline", "a", 0.1, 0.5),
        ("baseline", "a", 0.2, 0.4),
        ("tuned", "b", 0.05, 0.2),
    ]:
        with tracelet.start_logging(name, project=project, config={"tags": {"team": project}}) as e:
            e.log_params({"lr": lr, "arch": "cnn"})
            for step in (2, 0, 1):  # logged out of order
                e.log_metric("loss", final + step, step)
            e.log_metric("acc", 0.9, 2)
        made.append(e)
    return made


def test_runs_are_found_by_id_prefix_or_unique_name(runs):
    engine = QueryEngine()
    assert engine.resolve(runs[2].id).id == runs[2].id
    assert engine.resolve(runs[2].id[:6]).id == runs[2].id
    assert engine.resolve("tuned").id == runs[2].id
    with pytest.raises(AmbiguousRunError) as caught:
        engine.resolve("baseline")
    assert runs[0].id[:12] in str(caught.value)
    assert runs[1].id[:12] in str(caught.value)
    with pytest.raises(NotFoundError, match="no run 'nothing'"):
        engine.resolve("nothing")


def test_run_summary(runs):
    summary = QueryEngine().get_run_summary(runs[2].id)
    assert summary["status"] == "finished"
    assert summary["total_steps"] == 3
    assert summary["total_points"] == 4
    assert summary["final_metrics"] == {"acc": 0.9, "loss": 1.2}
    assert summary["params"] == {"lr": 0.05, "arch": "cnn"}
    assert summary["tags"] == {"team": "b"}
    assert summary["duration_s"] >= 0
    assert summary["metrics"]["loss"]["min"] == pytest.approx(0.2)


def test_metric_history_is_in_step_order(runs):
    history = QueryEngine().get_metric_history("tuned", "loss")
    assert [(p["step"], p["value"]) for p in history] == [(0, 0.2), (1, 1.2), (2, 2.2)]
    assert all(p["timestamp"] > 0 for p in history)
    with pytest.raises(NotFoundError, match="has no metric 'los'; it has: acc, loss"):
        QueryEngine().get_metric_history("tuned", "los")


def test_compare_runs(runs):
    result = QueryEngine().compare_runs(runs[0].id, "tuned", metrics=["loss"])
    assert result["metrics"]["loss"]["difference"] == pytest.approx(1.2 - 1.5)
    assert result["params"] == {"lr": [0.1, 0.05]}
    both = QueryEngine().compare_runs(runs[0].id, runs[1].id)
    assert set(both["metrics"]) == {"acc", "loss"}
    with pytest.raises(NotFoundError, match="neither run has a metric 'nope'"):
        QueryEngine().compare_runs(runs[0].id, runs[1].id, metrics=["nope"])


def test_list_and_filter_runs(runs):
    engine = QueryEngine()
    assert len(engine.list_runs()) == 3
    assert [r["project_name"] for r in engine.list_runs(project="b")] == ["b"]
    assert len(engine.list_runs(tag="team=a")) == 2
    assert len(engine.list_runs(tag="team")) == 3
    assert [r["run_id"] for r in engine.list_runs(param="lr=0.2")] == [runs[1].id]
    assert engine.list_runs(status="failed") == []
    with pytest.raises(ValueError, match="name=value"):
        engine.list_runs(param="lr")


def test_find_anomalous_checkpoints(read_store):
    exp = train(300, checkpoint_interval=100)
    store = read_store()
    store.add_anomalies(
        [
            {
                "run_id": exp.id,
                "step": 150,
                "metric": "grad/total_norm",
                "kind": "gradient_explosion",
                "severity": "critical",
                "value": 1e6,
                "message": "exploded",
            },
            {
                "run_id": exp.id,
                "step": 250,
                "metric": "loss",
                "kind": "nan_or_inf",
                "severity": "critical",
                "value": math.nan,
                "message": "nan",
            },
        ]
    )
    engine = QueryEngine()
    found = engine.find_anomalous_checkpoints(exp.id, anomaly_types=["gradient_explosion"])
    assert [(c["step"], [a["step"] for a in c["anomalies"]]) for c in found] == [(199, [150])]
    assert [c["step"] for c in engine.find_anomalous_checkpoints(exp.id)] == [199, 299]


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="no Tracelet store at"):
        QueryEngine(tmp_path / "nowhere")


def test_queries_while_a_run_is_being_written():
    exp = tracelet.start_logging("live", config={"flush_interval": 0.01})
    stop = threading.Event()

    def writer():
        step = 0
        while not stop.is_set():
            exp.log_metric("loss", 1.0, step)
            step += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        engine = QueryEngine()
        seen = [0]
        deadline = time.monotonic() + 10
        while len(set(seen)) < 4 and time.monotonic() < deadline:
            seen.append(engine.get_run_summary("live")["total_points"])
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join()
        exp.stop()
    assert seen == sorted(seen)
    assert seen[-1] > 0
    assert json.dumps(engine.get_run_summary("live"), default=str)


def test_a_finished_runs_summary_is_kept_until_the_run_changes(read_store):
    exp = tracelet.start_logging("summarised")
    exp.log_metric("loss", 1.0, 0)
    exp.flush()
    store = read_store()
    assert store.metric_overview(exp.id)["loss"]["count"] == 1
    kept = store.connection().execute("SELECT count(*) FROM metric_summaries").fetchone()[0]
    assert kept == 0, "a running run is not summarised"
    exp.stop()
    assert store.metric_overview(exp.id)["loss"]["last"] == 1.0
    assert store.connection().execute("SELECT count(*) FROM metric_summaries").fetchone()[0] == 1
    resumed = tracelet.Experiment("summarised", run_id=exp.id).start()
    resumed.log_metric("loss", 0.5, 1)
    resumed.stop()
    overview = store.metric_overview(exp.id)["loss"]
    assert (overview["count"], overview["last"], overview["last_step"]) == (2, 0.5, 1)


def test_live_detection_stores_and_calls_back_off_the_training_thread(read_store):
    seen = []

    def on_anomaly(anomaly):
        seen.append((anomaly["kind"], anomaly["step"], threading.current_thread().name))

    exp = tracelet.init(project="p", on_anomaly=on_anomaly, notes="lr sweep")
    for step in range(300):
        tracelet.log({"loss": math.nan if step == 200 else 1.0})
        tracelet.step()
    tracelet.finish()
    assert seen == [("nan_or_inf", 200, "tracelet-dispatcher")]
    (stored,) = read_store().anomalies(exp.id)
    assert (stored["kind"], stored["metric"], stored["step"]) == ("nan_or_inf", "loss", 200)
    assert read_store().tags(exp.id) == {"notes": "lr sweep"}


def test_live_detection_can_be_switched_off(read_store):
    exp = tracelet.init(project="p", detect_anomalies=False)
    tracelet.log({"loss": math.nan})
    tracelet.finish()
    assert read_store().anomalies(exp.id) == []


def test_live_thresholds_are_settable(read_store):
    from tracelet.analysis import DetectorConfig, LossSpikeThresholds

    quiet = DetectorConfig(loss=LossSpikeThresholds(enabled=False))
    exp = tracelet.init(project="p", anomaly_config=quiet)
    for step in range(200):
        tracelet.log({"loss": 100.0 if step == 150 else 1.0})
        tracelet.step()
    tracelet.finish()
    assert read_store().anomalies(exp.id) == []
    loud = tracelet.init(project="p")
    for step in range(200):
        tracelet.log({"loss": 100.0 if step == 150 else 1.0})
        tracelet.step()
    tracelet.finish()
    assert [a["kind"] for a in read_store().anomalies(loud.id)] == ["loss_spike"]


def test_a_reference_matching_an_id_prefix_and_a_name_is_ambiguous():
    first = tracelet.start_logging("first")
    first.stop()
    prefix = first.id[:4]
    tracelet.start_logging(prefix).stop()
    with pytest.raises(AmbiguousRunError, match="matches 2 runs"):
        QueryEngine().resolve(prefix)


def test_the_low_level_api_checks_its_input(tmp_path):
    storage = StorageBackend(tmp_path / "s")
    storage.create_run("r", "p", "n", 1.0)
    for bad in (-5, "100", 2.5):
        with pytest.raises((TypeError, ValueError)):
            storage.write_checkpoint("r", bad, 2.0, {"loss": 1.0})
    with pytest.raises(ValueError, match="must not be empty"):
        storage.write_checkpoint("r", 1, 2.0, {"": 1.0})
    storage.write_checkpoint("r", 200, 3.0, {"loss": 0.5})
    storage.write_checkpoint("r", 100, 2.0, {"loss": 1.0})
    assert [(c["step"], c["first_step"]) for c in storage.get_checkpoints("r")] == [
        (100, 0),
        (200, 0),
    ]
    storage.close()
