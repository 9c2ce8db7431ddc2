"""Anomaly detection: every rule on real runs in the local store, offline and live."""

from __future__ import annotations

import logging
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

import tracelet
from tracelet import StoreError
from tracelet.analysis import (
    AnomalyDetector,
    DetectorConfig,
    GradientThresholds,
    LiveDetector,
    LossSpikeThresholds,
    MemoryThresholds,
    NonFiniteThresholds,
)
from tracelet.exceptions import ConfigurationError
from tracelet.storage import StorageBackend

KEYS = {"run_id", "step", "metric", "kind", "severity", "value", "message", "timestamp"}


# -- helpers -----------------------------------------------------------------------------


def log_run(series: dict[str, list[float]], every: dict | None = None, live: bool = False) -> str:
    """Log ``series`` (metric -> value per step; ``every[metric]`` logs it every n steps),
    with live anomaly detection on the dispatcher thread only if ``live``."""
    every = every or {}
    exp = tracelet.start_logging("run", project="anomalies", config={"detect_anomalies": live})
    steps = max(len(values) * every.get(metric, 1) for metric, values in series.items())
    for step in range(steps):
        for metric, values in series.items():
            n = every.get(metric, 1)
            if step % n == 0 and step // n < len(values):
                exp.log_metric(metric, values[step // n], step)
    tracelet.stop_logging()
    return exp.id


def loss_curve(steps: int = 3000, sigma: float = 0.1, seed: int = 0) -> list[float]:
    """Decay to a floor, a plateau, an LR bump and a slow 1.8x rise, with lognormal noise."""
    rng = random.Random(seed)
    values, clock = [], 0.0
    for t in range(steps):
        clock += 0.0 if 1200 <= t < 1600 else 1.0  # a plateau
        value = 0.3 + 4.0 * math.exp(-clock / 400)
        value *= 1.0 + 0.4 * math.exp(-(((t - 500) / 150) ** 2))  # an LR warm-up bump
        value *= 1.8 ** min(1.0, max(0.0, (t - 1600) / 1400))  # a slow rise
        values.append(value * math.exp(rng.gauss(0.0, sigma)))
    return values


def grad_curve(steps: int = 3000, sigma: float = 0.2, seed: int = 1) -> list[float]:
    """Norms settling from 5 to 1, drifting up 2x, with benign 2x blips and noise."""
    rng = random.Random(seed)
    values = []
    for t in range(steps):
        value = (1.0 + 4.0 * math.exp(-t / 300)) * 2.0 ** (t / steps)
        if t % 97 == 0:
            value *= 2.0
        values.append(value * math.exp(rng.gauss(0.0, sigma)))
    return values


def comparable(anomaly: dict) -> dict:
    """The anomaly with a NaN value replaced by a string (NaN != NaN)."""
    value = anomaly["value"]
    return {**anomaly, "value": "nan" if math.isnan(value) else value}


def kinds(anomalies: list[dict]) -> list[tuple[int, str, str]]:
    return [(a["step"], a["metric"], a["kind"]) for a in anomalies]


@pytest.fixture
def detector(read_store):
    """A detector on the test's local store (open it after the runs are logged)."""
    return lambda config=None: AnomalyDetector(read_store(), config=config)


# -- results -----------------------------------------------------------------------------


def test_clean_runs_have_no_anomalies(detector):
    memory = [50.0 + 30.0 * t / 300 + random.Random(t).gauss(0, 0.5) for t in range(300)]
    run_id = log_run(
        {
            "train/loss": loss_curve(),
            "grad/total_norm": grad_curve(),
            "lr": [1e-3] * 3000,
            "system/gpu0_memory_percent": memory,
        },
        every={"system/gpu0_memory_percent": 10},
    )
    assert detector().detect_all_anomalies(run_id) == []


@pytest.mark.parametrize("sigma", [0.02, 0.1, 0.2])
def test_noisy_losses_are_silent_at_every_noise_level(detector, sigma):
    run_id = log_run({"loss": loss_curve(sigma=sigma, seed=int(sigma * 100))})
    assert detector().detect_loss_anomalies(run_id) == []


def test_anomalies_are_plain_dicts_sorted_by_step_then_metric(detector):
    loss, grad = loss_curve(), grad_curve()
    loss[2000] *= 8
    grad[2000] *= 200
    loss[2500] = math.nan
    run_id = log_run({"zeta/loss": loss, "alpha_grad_norm": grad})
    found = detector().detect_all_anomalies(run_id)
    assert kinds(found) == [
        (2000, "alpha_grad_norm", "gradient_explosion"),
        (2000, "zeta/loss", "loss_spike"),
        (2500, "zeta/loss", "nan_or_inf"),
    ]
    for anomaly in found:
        assert set(anomaly) == KEYS
        assert anomaly["run_id"] == run_id
        assert anomaly["severity"] in {"warning", "critical"}
        assert isinstance(anomaly["timestamp"], float)
        assert "\n" not in anomaly["message"]
    assert found[1]["value"] == loss[2000]


def test_nan_and_inf_are_reported_at_once_on_any_metric(detector):
    run_id = log_run(
        {
            "lr": [math.nan, 0.1, 0.1, math.nan, math.nan, math.nan, 0.1],
            "accuracy": [0.5, math.inf, -math.inf, 0.5, 0.5, 0.5, 0.5],
        }
    )
    found = detector().detect_nan_inf(run_id)
    assert kinds(found) == [
        (0, "lr", "nan_or_inf"),
        (1, "accuracy", "nan_or_inf"),
        (3, "lr", "nan_or_inf"),
    ]  # once per run of non-finite values, from the very first step
    assert {a["severity"] for a in found} == {"critical"}
    assert math.isnan(found[0]["value"])
    assert found[1]["value"] == math.inf
    assert found[1]["message"] == "accuracy is +inf"
    only_lr = NonFiniteThresholds(pattern="^lr$")
    assert [a["metric"] for a in detector(only_lr).detect_nan_inf(run_id)] == ["lr", "lr"]


# -- loss spikes -------------------------------------------------------------------------


def test_a_loss_spike_is_reported_with_its_robust_z_score(detector):
    loss = loss_curve()
    loss[2200] *= 5
    run_id = log_run({"train/loss": loss})
    (spike,) = detector().detect_loss_anomalies(run_id)
    assert (spike["step"], spike["kind"], spike["severity"]) == (2200, "loss_spike", "warning")
    assert spike["message"].startswith(f"train/loss spiked to {loss[2200]:.4g}, ")
    assert "x the rolling median" in spike["message"]
    assert "(robust z " in spike["message"]


def test_a_huge_spike_is_critical_and_does_not_hide_the_next_one(detector):
    loss = loss_curve(sigma=0.05)
    loss[2000] *= 50
    loss[2002] *= 4
    run_id = log_run({"loss": loss})
    found = detector().detect_loss_anomalies(run_id)
    assert [(a["step"], a["severity"]) for a in found] == [(2000, "critical"), (2002, "warning")]


def test_a_level_shift_is_reported_once_then_becomes_the_new_level(detector):
    rng = random.Random(3)
    loss = [(1.0 if t < 1000 else 3.0) * math.exp(rng.gauss(0, 0.05)) for t in range(2000)]
    loss[1500] *= 6
    run_id = log_run({"loss": loss})
    assert [a["step"] for a in detector().detect_loss_anomalies(run_id)] == [1000, 1500]


def test_loss_thresholds_are_settable(detector):
    loss = loss_curve(sigma=0.02)
    loss[1000] *= 5
    loss[2000] *= 3
    loss[2001] *= 3
    loss[20] *= 5
    run_id = log_run({"loss": loss, "loss_scale": [2.0 ** (16 + t // 500) for t in range(3000)]})
    assert [a["step"] for a in detector().detect_loss_anomalies(run_id)] == [1000, 2000]
    assert [
        a["step"] for a in detector(LossSpikeThresholds(patience=2)).detect_all_anomalies(run_id)
    ] == [2001]
    early = detector(LossSpikeThresholds(warmup=5)).detect_loss_anomalies(run_id)
    assert [a["step"] for a in early] == [20, 1000, 2000]
    strict = detector(LossSpikeThresholds(z_threshold=1000)).detect_loss_anomalies(run_id)
    assert [a["step"] for a in strict] == [1000]  # still above 3x the window's maximum
    assert "x the recent maximum" in strict[0]["message"]
    neither = LossSpikeThresholds(z_threshold=1000, max_ratio=10)
    assert detector(neither).detect_loss_anomalies(run_id) == []
    scaled = LossSpikeThresholds(pattern="loss")  # the loss scale doubles every 500 steps
    assert {a["metric"] for a in detector(scaled).detect_loss_anomalies(run_id)} == {
        "loss",
        "loss_scale",
    }
    off = DetectorConfig(loss=LossSpikeThresholds(enabled=False))
    assert detector(off).detect_all_anomalies(run_id) == []


def test_the_mad_floor_keeps_a_flat_loss_from_flagging_tiny_changes(detector):
    rng = random.Random(4)
    loss = [1.0 + rng.gauss(0, 0.0005) for _ in range(500)]
    loss[300] = 1.2
    run_id = log_run({"loss": loss})
    assert detector().detect_loss_anomalies(run_id) == []
    no_floor = detector(LossSpikeThresholds(min_mad=0)).detect_loss_anomalies(run_id)
    assert [a["step"] for a in no_floor] == [300]


def test_a_loss_with_values_at_or_below_zero_is_judged_on_raw_values(detector):
    rng = random.Random(5)
    loss = [-5.0 + rng.gauss(0, 0.1) for _ in range(1000)]
    loss[600] = -1.0  # up by 80 % of |median|: the floor is relative, as in log space
    run_id = log_run({"elbo_loss": loss})
    (spike,) = detector().detect_loss_anomalies(run_id)
    assert spike["step"] == 600
    assert "from the rolling median -4.98" in spike["message"]


# -- gradients ---------------------------------------------------------------------------


def test_gradient_explosion_is_reported_and_escalates_above_the_limit(detector):
    grad = grad_curve()
    grad[1000] *= 60
    grad[2000] *= 30
    grad[2001] = 5e3
    run_id = log_run({"grad_norm": grad})
    found = detector().detect_gradient_anomalies(run_id)
    assert [(a["step"], a["kind"], a["severity"]) for a in found] == [
        (1000, "gradient_explosion", "warning"),
        (2000, "gradient_explosion", "warning"),
        (2001, "gradient_explosion", "critical"),
    ]
    assert "x its moving average" in found[0]["message"]
    assert "above the limit 1000" in found[2]["message"]


def test_gradient_thresholds_are_settable(detector):
    grad = grad_curve()
    grad[1500] *= 8
    run_id = log_run({"grad/total_norm": grad, "lr": [0.1] * 3000})
    assert [a["step"] for a in detector().detect_gradient_anomalies(run_id)] == [1500]
    assert detector(GradientThresholds(z_threshold=12)).detect_gradient_anomalies(run_id) == []
    limited = detector(GradientThresholds(max_norm=8)).detect_gradient_anomalies(run_id)
    assert {a["severity"] for a in limited} == {"critical"}
    assert limited[0]["step"] < 100  # the early norms (about 5x2x noise) already pass 8


def test_vanishing_gradients_need_patience_and_do_not_look_like_explosions_after(detector):
    grad = grad_curve()
    grad[800:803] = [0.0] * 3  # three zeroed steps: below the default patience of 5
    grad[1500:1600] = [1e-9] * 100
    run_id = log_run({"grad_norm": grad})
    found = detector().detect_gradient_anomalies(run_id)
    assert [(a["step"], a["kind"], a["severity"]) for a in found] == [
        (1504, "vanishing_gradient", "warning")
    ]
    assert found[0]["message"] == "grad_norm stayed below 1e-07 for 5 points in a row (now 1e-09)"
    eager = detector(GradientThresholds(vanishing_patience=3)).detect_gradient_anomalies(run_id)
    assert [a["step"] for a in eager] == [802, 1502]


# -- memory ------------------------------------------------------------------------------


def test_memory_climbing_to_the_limit_warns_then_is_critical(detector):
    memory = [60.0 + t * 0.5 for t in range(80)] + [91.0, 89.0, 91.0, 50.0, 91.0]
    run_id = log_run({"system/gpu0_memory_percent": memory, "system/cpu_percent": [99.0] * 85})
    found = detector().detect_memory_spikes(run_id)
    assert [(a["step"], a["severity"], a["value"]) for a in found] == [
        (61, "warning", 90.5),
        (75, "critical", 97.5),
        (84, "warning", 91.0),  # after falling below 85: reported again
    ]
    assert found[0]["message"] == "system/gpu0_memory_percent at 90.5%, above 90%"
    higher = MemoryThresholds(warning=95, critical=99)
    assert [a["step"] for a in detector(higher).detect_memory_spikes(run_id)] == [71, 79]


# -- offline, live, storage --------------------------------------------------------------


def anomalous_run(live: bool = False) -> str:
    loss, grad = loss_curve(), grad_curve()
    loss[1100] *= 9
    loss[2400] = math.inf
    grad[1700] *= 100
    grad[2600:2620] = [0.0] * 20
    memory = [70.0 + t * 0.1 for t in range(300)]
    return log_run(
        {
            "loss": loss,
            "grad_norm": grad,
            "acc": [0.5] * 2999 + [math.nan],
            "system/memory_percent": memory,
        },
        every={"system/memory_percent": 10},
        live=live,
    )


def test_offline_and_live_find_the_same_anomalies(detector, read_store):
    run_id = anomalous_run()
    offline = detector().detect_all_anomalies(run_id)
    assert {a["kind"] for a in offline} == {
        "loss_spike",
        "nan_or_inf",
        "gradient_explosion",
        "vanishing_gradient",
        "memory_pressure",
    }
    points = read_store().metrics(run_id)
    rng = random.Random(6)
    live, found, start = LiveDetector(run_id), [], 0
    while start < len(points):
        size = rng.randrange(1, 2000)
        found.extend(live.observe(points[start : start + size]))
        start += size
    live_sorted = sorted(found, key=lambda a: (a["step"], a["metric"]))
    assert [comparable(a) for a in live_sorted] == [comparable(a) for a in offline]


def test_a_primed_live_detector_continues_where_the_history_ends(detector, read_store, caplog):
    run_id = anomalous_run()
    offline = detector().detect_all_anomalies(run_id)
    points = read_store().metrics(run_id)
    half = len(points) // 2
    seen = []
    live = LiveDetector(run_id, on_anomaly=seen.append)
    with caplog.at_level(logging.WARNING, logger="tracelet"):
        before = live.prime(points[:half])
    assert seen == []
    assert caplog.records == []
    after = live.observe(points[half:])
    assert seen == after
    assert kinds(before) + kinds(after) == kinds(offline)
    assert kinds(after) == [k for k in kinds(offline) if k[0] > points[half - 1][2]]


def test_live_detection_while_logging_stores_what_the_offline_detector_finds(detector, read_store):
    run_id = anomalous_run(live=True)
    stored = read_store().anomalies(run_id)
    offline = detector().detect_all_anomalies(run_id)
    assert len(offline) == 7
    assert [comparable(a) for a in stored] == [comparable(a) for a in offline]


def test_each_detect_method_returns_its_own_kinds(detector):
    run_id = anomalous_run()
    d = detector()
    parts = [
        (d.detect_loss_anomalies(run_id), {"loss_spike"}),
        (d.detect_gradient_anomalies(run_id), {"gradient_explosion", "vanishing_gradient"}),
        (d.detect_nan_inf(run_id), {"nan_or_inf"}),
        (d.detect_memory_spikes(run_id), {"memory_pressure"}),
    ]
    for found, expected in parts:
        assert {a["kind"] for a in found} == expected
    everything = sorted((a for found, _ in parts for a in found), key=lambda a: a["step"])
    assert kinds(d.detect_all_anomalies(run_id)) == kinds(everything)


def test_store_anomalies_stores_and_dedupes(detector, read_store):
    run_id = anomalous_run()
    d = detector()
    found = d.detect_all_anomalies(run_id)
    assert d.store_anomalies(found) == len(found)
    assert d.store_anomalies(d.detect_all_anomalies(run_id)) == 0
    stored = read_store().anomalies(run_id)
    assert kinds(stored) == kinds(found)
    assert [a["message"] for a in stored] == [a["message"] for a in found]


def test_live_detector_warns_once_per_kind_and_metric(caplog):
    live = LiveDetector("r1")
    points = [("loss", 1.0 + 0.01 * (t % 7), t, 0.0) for t in range(100)]
    points[50] = ("loss", 10.0, 50, 0.0)
    points[70] = ("loss", 10.0, 70, 0.0)
    with caplog.at_level(logging.WARNING, logger="tracelet"):
        found = live.observe(points[:60]) + live.observe(points[60:])
        found += live.observe([("loss", math.nan, 100, 0.0), ("other", math.inf, 100, 0.0)])
    assert kinds(found) == [
        (50, "loss", "loss_spike"),
        (70, "loss", "loss_spike"),
        (100, "loss", "nan_or_inf"),
        (100, "other", "nan_or_inf"),
    ]
    messages = [r.getMessage() for r in caplog.records if r.name == "tracelet"]
    assert len(messages) == 3
    assert messages[0] == (
        "tracelet: loss_spike (warning) at step 50 of run r1: loss spiked to 10, 9.71x the"
        " rolling median 1.03 (robust z 30.7); further loss_spike anomalies of loss are not logged"
    )


def test_an_anomaly_found_again_by_a_replacement_writer_is_announced_once(caplog):
    """A writer that replaces one that died watches again the chunks its predecessor had
    watched and not journaled: what it finds again is not announced twice."""
    seen: list[dict] = []
    live = LiveDetector("r1", on_anomaly=seen.append, limit=2)
    values = [math.nan, 1.0, math.nan, 1.0]  # each NaN after a finite value: an anomaly
    first = live.prime([("loss", v, step, 0.0) for step, v in enumerate(values)])
    assert [a["step"] for a in first] == [0, 2]  # (found by rules running elsewhere)
    with caplog.at_level(logging.WARNING, logger="tracelet"):
        live.announce(first, [("loss", "nan_or_inf")])
        live.announce([*first, dict(first[0], step=9)], [("loss", "nan_or_inf")])
    assert [a["step"] for a in seen] == [0, 2, 9]
    muted = [r for r in caplog.records if "is muted" in r.getMessage()]
    assert len(muted) == 1


def test_the_callback_gets_every_anomaly_and_its_errors_are_logged(caplog):
    seen = []
    live = LiveDetector("r1", on_anomaly=seen.append)
    assert live.observe([("a", math.nan, 1, 0.0), ("b", math.inf, 1, 0.0)]) == seen
    assert len(seen) == 2

    def broken(anomaly):
        raise RuntimeError("callback bug")

    live = LiveDetector("r1", on_anomaly=broken)
    with caplog.at_level(logging.WARNING, logger="tracelet"):
        found = live.observe([("a", math.nan, 1, 0.0)])
    assert len(found) == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "on_anomaly callback raised" in errors[0].getMessage()
    assert errors[0].exc_info[1].args == ("callback bug",)


def test_live_detector_takes_any_config_part():
    live = LiveDetector("r1", config=MemoryThresholds(warning=50, critical=60))
    found = live.observe([("system/memory_percent", 55.0, 1, 0.0)])
    assert [a["severity"] for a in found] == ["warning"]
    assert live.config.loss == LossSpikeThresholds()


def test_the_detector_opens_a_store_from_a_path_a_store_or_a_backend(store_path, read_store):
    run_id = log_run({"loss": [math.nan]})
    backend = StorageBackend(store_path)
    try:
        for storage in (read_store(), backend):
            assert len(AnomalyDetector(storage).detect_all_anomalies(run_id)) == 1
    finally:
        backend.close()
    for storage in (store_path, str(store_path)):
        with AnomalyDetector(storage) as opened:
            assert len(opened.detect_nan_inf(run_id)) == 1
    with pytest.raises(TypeError, match="storage must be"):
        AnomalyDetector(42)
    with pytest.raises(StoreError, match="no Tracelet store"):
        AnomalyDetector(Path("nowhere"))
    assert not Path("nowhere").exists()


def test_an_unknown_run_raises_store_error(detector):
    log_run({"loss": [1.0]})
    d = detector()
    for method in (d.detect_all_anomalies, d.detect_loss_anomalies, d.detect_nan_inf):
        with pytest.raises(StoreError, match="no run 'missing'"):
            method("missing")


def test_bad_thresholds_are_refused():
    with pytest.raises(ConfigurationError, match=r"LossSpikeThresholds.window must be an int >= 3"):
        LossSpikeThresholds(window=2)
    with pytest.raises(ConfigurationError, match="warmup"):
        LossSpikeThresholds(window=20, warmup=30)
    with pytest.raises(ConfigurationError, match="must be an int"):
        GradientThresholds(vanishing_patience=True)
    with pytest.raises(ConfigurationError, match="alpha must be <= 1"):
        GradientThresholds(alpha=2.0)
    with pytest.raises(ConfigurationError, match="critical"):
        MemoryThresholds(warning=95, critical=90)
    with pytest.raises(ConfigurationError, match="regular expression"):
        NonFiniteThresholds(pattern="(")
    with pytest.raises(ConfigurationError, match="must be a bool"):
        MemoryThresholds(enabled="yes")
    with pytest.raises(TypeError, match="config must be"):
        DetectorConfig.of({"loss": {}})
    with pytest.raises(AttributeError):
        LossSpikeThresholds().window = 5  # frozen


def test_importing_the_analysis_package_loads_no_numpy():
    code = "import sys, tracelet.analysis; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


def test_a_storm_of_anomalies_is_muted_live_but_found_offline(caplog, read_store):
    import random

    from tracelet.analysis import AnomalyDetector, LiveDetector

    rng = random.Random(3)
    points = [("loss", rng.gauss(0, 1) * 10 ** rng.randint(-6, 6), s, 0.0) for s in range(5000)]
    live = LiveDetector("storm", limit=100)
    with caplog.at_level(logging.WARNING, "tracelet"):
        found = live.observe(points[:2500]) + live.observe(points[2500:])
    assert len([a for a in found if a["kind"] == "loss_spike"]) == 100
    assert "live detection of them is muted" in caplog.text
    exp = tracelet.start_logging("storm", config={"detect_anomalies": False})
    for name, value, step, _ in points:
        exp.log_metric(name, value, step)
    exp.stop()
    offline = AnomalyDetector(read_store()).detect_loss_anomalies(exp.id)
    assert len(offline) > 100, "offline detection is not muted"


def _streams(seed: int) -> dict[str, list[float]]:
    """Losses of every shape the block path must judge as the exact path does."""
    rng = random.Random(seed)
    decaying = [2.0 * math.exp(-i / 3000) * math.exp(rng.gauss(0, 0.05)) for i in range(6000)]
    for at in rng.sample(range(100, 6000), 12):
        decaying[at] *= rng.choice([1.7, 3.0, 20.0, 400.0])
    noisy = [math.exp(rng.gauss(0, 0.4)) for _ in range(6000)]
    shifted = [1.0 + rng.gauss(0, 0.01) for _ in range(3000)]
    shifted += [5.0 + rng.gauss(0, 0.05) for _ in range(3000)]
    signed = [rng.gauss(0, 1.0) + (30.0 if i % 997 == 0 else 0.0) for i in range(4000)]
    flat = [1.0] * 500 + [1.6] * 30 + [1.0] * 500
    return {
        "decaying": decaying,
        "noisy": noisy,
        "shifted": shifted,
        "signed": signed,
        "flat": flat,
    }


@pytest.mark.parametrize("seed", range(6))
def test_blocks_of_points_find_exactly_what_point_by_point_finds(seed):
    from tracelet.analysis.rules import LossSpikeRule

    for config in (LossSpikeThresholds(), LossSpikeThresholds(window=20, warmup=5, patience=2)):
        for name, values in _streams(seed).items():
            one = LossSpikeRule("loss", config)
            exact = [(i, f) for i, x in enumerate(values) if (f := one.update(x)) is not None]
            blocks = LossSpikeRule("loss", config)
            found, start = [], 0
            for size in (1, 7, 500, 64, 3000, 10_000):  # batches of every size, in turn
                part = values[start : start + size]
                found += [(start + i, f) for i, f in blocks.update_many(part)]
                start += len(part)
            assert found == exact, (name, config)
            assert list(blocks._values) == list(one._values), "the same window after"


def test_detection_failing_on_one_chunk_keeps_what_the_others_found(
    read_store, monkeypatch, caplog
):
    """A batch is watched chunk by chunk: a chunk detection fails on is skipped, and what
    the other chunks found is still stored and announced (the writer in this process, so
    that the failure can be injected)."""
    from tracelet.analysis.detector import RuleStream
    from tracelet.core.orchestrator import CHUNK

    feed = RuleStream.feed

    def feed_failing_past_the_first_chunk(self, points):
        points = list(points)
        if any(step >= CHUNK for _, _, step, _ in points):
            raise RuntimeError("a rule broke")
        return feed(self, points)

    monkeypatch.setattr(RuleStream, "feed", feed_failing_past_the_first_chunk)
    seen: list[dict] = []
    config = {"on_anomaly": seen.append, "journal_process": False}
    exp = tracelet.start_logging("a rule breaks", config=config)
    with exp.orchestrator._drain_lock:  # the dispatcher waits: all of it is one batch
        for step in range(CHUNK + 100):
            exp.log_metric("loss", math.nan if step == 7 else 1.0, step)
    with caplog.at_level(logging.WARNING, "tracelet"):
        tracelet.stop_logging()
    assert [(a["kind"], a["step"]) for a in seen] == [("nan_or_inf", 7)]
    stored = read_store().anomalies(exp.id)
    assert [(a["kind"], a["step"]) for a in stored] == [("nan_or_inf", 7)]
    assert "a rule broke" in caplog.text


def test_the_journal_writer_announces_a_finding_as_its_chunk_arrives(tmp_path):
    """A batch may stay open for several flush intervals; live detection does not wait for
    it: a chunk's findings are stored and announced before its batch is journaled."""
    import time
    import uuid

    from tracelet.analysis.detector import LIVE_LIMIT, DetectorConfig
    from tracelet.core.journal_writer import JournalWriter
    from tracelet.records import RunInfo
    from tracelet.storage import LocalStore

    store = LocalStore(tmp_path)
    run = RunInfo(id=uuid.uuid4().hex, name="r", project="p", created_at=time.time())
    store.create_run(run)
    replies: list[tuple] = []
    writer = JournalWriter(store, run, replies.append, lambda: False)
    writer.handle(("detect", DetectorConfig(), LIVE_LIMIT))
    step = [{"loss": math.nan, "acc": 0.5, "lr": 0.1, "gn": 1.0}, 3, time.time()]
    writer.handle(("points", (("loss", 1.0, 2, time.time()), step)))
    (found,) = replies
    assert found[0] == "found"
    assert [(a["kind"], a["step"], a["metric"]) for a in found[1]] == [("nan_or_inf", 3, "loss")]
    assert store.last_seq(run.id) == 0  # not journaled yet
    assert [a["step"] for a in store.anomalies(run.id)] == [3]
    writer.handle(("batch", 1, {}, {}, (), (), (), ()))
    assert replies[-1] == ("journaled", 1, 1)
    assert len(store.metrics(run.id)) == 5
    store.close()


@pytest.mark.parametrize("path", ["block", "point by point"])
def test_muting_gradient_explosions_still_watches_for_vanishing_gradients(caplog, path):
    """The gradient rule finds two kinds: a storm of one mutes that kind only, on both of
    the detector's paths (a batch holding a NaN is fed point by point)."""
    from tracelet.analysis import LiveDetector

    norms = [1.0] * 40 + [1e4, 1.0] * 5 + [0.0] * 6 + [1e4, 1.0] * 2
    points = [("grad_norm", norm, step, 0.0) for step, norm in enumerate(norms)]
    if path == "point by point":
        points.insert(0, ("loss", math.nan, 0, 0.0))
    with caplog.at_level(logging.WARNING, "tracelet"):
        found = LiveDetector("gradients", limit=3).observe(points)
    assert [(a["kind"], a["step"]) for a in found if a["metric"] == "grad_norm"] == [
        ("gradient_explosion", 40),
        ("gradient_explosion", 42),
        ("gradient_explosion", 44),
        ("vanishing_gradient", 54),
    ]
    assert "3 gradient_explosion anomalies on grad_norm" in caplog.text
    assert "vanishing_gradient anomalies on" not in caplog.text


class _SelfHashed(str):
    """A name of a ``str`` subclass that hashes apart from its text: a dict holding one finds
    nothing by the plain name."""

    def __hash__(self) -> int:
        return super().__hash__() ^ 1

    __eq__ = str.__eq__


@pytest.mark.parametrize("seed", range(4))
def test_the_journal_writer_watches_only_what_can_change_a_finding(seed):
    """Live detection in the journal writer is fed, of a step logged together, only the
    values of watched metrics and the non-finite ones (``WatchedPoints``); it finds and
    mutes exactly what it does fed every point. Steps of every shape: a spiking loss, NaN
    and infinities on watched and unwatched metrics and runs of them, exploding gradients,
    memory climbing, storms that mute a check, names coming and going."""
    from tracelet.analysis.detector import RuleStream
    from tracelet.core.journal_writer import WatchedPoints
    from tracelet.core.points import expanded

    rng = random.Random(seed)
    names = ("loss", "val_loss", "grad_norm", "acc", "lr", "memory_percent", "tokens")
    key = _SelfHashed if seed % 2 else str  # odd seeds: names a step's values hold apart
    weird = (math.nan, math.inf, -math.inf)

    def value(name: str, step: int) -> float:
        if rng.random() < 0.02:
            return rng.choice(weird)
        if name.endswith("loss"):
            return 2.0 * math.exp(-step / 400) * rng.choice([1.0] * 30 + [40.0])
        if name == "grad_norm":
            return rng.choice([1.0, 1.1, 0.9, 1e4, 1e-9])
        if name == "memory_percent":
            return min(99.0, 50.0 + step / 20)
        return rng.random()

    chunks, step = [], 0
    for _ in range(120):
        chunk = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.2:  # a point logged on its own
                name = rng.choice(names)
                chunk.append((name, value(name, step), step, float(step)))
            else:
                logged = rng.sample(names, rng.randint(4, len(names)))
                chunk.append([{key(n): value(n, step) for n in logged}, step, float(step)])
            step += 1
        chunks.append(tuple(chunk))

    every = RuleStream("r", DetectorConfig(), limit=3)
    watched = RuleStream("r", DetectorConfig(), limit=3)
    pick = WatchedPoints(watched)
    unwatched = {"acc", "lr", "tokens"}  # (no rule's pattern names them)
    in_steps = fed = 0  # points of unwatched metrics logged in steps, and those fed of them
    for chunk in chunks:
        points = pick(chunk)
        alone = sum(item[0] in unwatched for item in chunk if isinstance(item, tuple))
        fed += sum(name in unwatched for name, *_ in points) - alone  # (fed as they are)
        in_steps += sum(name in unwatched for name, *_ in expanded(chunk)) - alone
        assert watched.feed(points) == every.feed(list(expanded(chunk)))
        assert watched.muted == every.muted
    assert fed < in_steps / 4, "a step's unwatched finite values are left out"
