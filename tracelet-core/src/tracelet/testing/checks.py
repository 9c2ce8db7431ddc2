"""The conformance checks. Each one makes real runs through the backend and reads them back.

Every check is a function of a :class:`~tracelet.testing.harness.Harness`; :data:`CHECKS`
lists them by name. :class:`~tracelet.testing.BackendConformance` runs each as a test
method ``test_<name>``; the pytest plugin runs each as ``test_...[<name>]``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from tracelet.core.delivery import Delivery
from tracelet.core.experiment import Experiment
from tracelet.plugins import Batch, RunStatus
from tracelet.testing.expect import (
    expect_artifacts,
    expect_histograms,
    expect_images,
    expect_metrics,
    expect_params,
    expect_tags,
    expect_texts,
)
from tracelet.testing.harness import Harness, png

METRIC_NAMES = ("loss", "accuracy", "train/loss", "val/loss", "lr", "grad_norm", "tokens", "time")
ODD_NAMES = ("loss@train", "acc#top,1", "a..b", "ratio=1:2", "température")
LONG_VALUE = "".join(f"{i:04d}:" for i in range(1400))
"""7,000 characters, no two 5-character cells alike: a cut at the wrong place shows."""
PARAMS = {
    "optimizer": {"name": "adam", "lr": 0.001, "betas": {"beta1": 0.9, "beta2": 0.999}},
    "epochs": 10,
    "seed": 2**53 + 1,
    "weight_decay": 1e-05,
    "use_amp": True,
    "scheduler": None,
    "prompt": LONG_VALUE,
    "température": "élevée",
    "日本語": "値 ✓",
    "emoji": "🚀",
}
TEXTS = [
    ("notes", 0, "first note"),
    ("notes", 1, "second note\nwith two lines"),
    ("samples/generated", 3, "température: élevée, 日本語 ✓ 🚀"),
    ("samples/long", 5, "\n".join(f"line {i}: " + "x" * 90 for i in range(100))),
]
IMAGES = [
    ("samples/input", 0, png(8, 8, 1)),
    ("samples/input", 1, png(8, 8, 2)),
    ("heatmap", 2, png(16, 4, 3)),
]


class _Failure(Exception):
    """The exception a check raises inside a run to make it fail."""


def metric_series(count: int = 10_000, repeats: int = 10) -> list[tuple[str, float, int]]:
    """``count`` points over :data:`METRIC_NAMES` with values of every magnitude; the last
    ``repeats`` are logged again at a step that already has a value. ``tokens`` counts its
    steps from 2**31 (beyond 32-bit steps)."""
    rng = random.Random(20240601)
    points = []
    for i in range(count - repeats):
        name = METRIC_NAMES[i % len(METRIC_NAMES)]
        step = i // len(METRIC_NAMES) + (2**31 if name == "tokens" else 0)
        points.append((name, rng.uniform(-1.0, 1.0) * 10.0 ** rng.randint(-12, 12), step))
    points += [("loss", rng.random(), step) for step in range(repeats)]
    return points


def metrics_round_trip(kit: Harness) -> None:
    """10,000 points arrive exactly once each: name, value, step and timestamp."""
    points = metric_series()
    with kit.start("metrics") as exp:
        for i, (name, value, step) in enumerate(points):
            exp.log_metric(name, value, step)
            if i == len(points) // 2:
                kit.flushed(exp)
    kit.expect_delivered(exp.id)
    expect_metrics(kit, exp.id, points)


def nan_and_infinity(kit: Harness) -> None:
    """NaN reads back as NaN, and +/-inf as the declared infinity."""
    nan, inf = math.nan, math.inf
    points = [("nan_inf", v, s) for s, v in enumerate([1.5, nan, inf, -inf, -2.5, nan])]
    points += [("only_nan", nan, 0), ("only_inf", inf, 0), ("only_inf", -inf, 1)]
    with kit.start("nan-inf") as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
    kit.expect_delivered(exp.id)
    expect_metrics(kit, exp.id, points)


def name_mapping(kit: Harness) -> None:
    """Names the tool refuses arrive under ``map_name(name)``, each point once."""
    mapped = {kit.backend.map_name(name) for name in ODD_NAMES}
    if len(mapped) != len(ODD_NAMES):
        raise AssertionError(f"map_name maps two of {ODD_NAMES} to one name: {sorted(mapped)}")
    points = [
        (name, float(i * 10 + step), step) for i, name in enumerate(ODD_NAMES) for step in range(4)
    ]
    params = {"batch@size": 32, "drop#out": 0.1}
    tags = {"owner#team": "ml", "data,set": "imagenet"}
    with kit.start("names") as exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
        exp.log_params(params)
        exp.add_tags(tags)
    kit.expect_delivered(exp.id)
    expect_metrics(kit, exp.id, points)
    expect_params(kit, exp.id, params)
    expect_tags(kit, exp.id, tags)


def params_round_trip(kit: Harness) -> None:
    """Nested, long and unicode parameters, of every type, as the tool declares it keeps them."""
    with kit.start("params") as exp:
        exp.log_params(PARAMS)
    kit.expect_delivered(exp.id)
    expect_params(kit, exp.id, PARAMS)


def tags_round_trip(kit: Harness) -> None:
    """Bare, key/value and unicode tags; a tag set twice keeps its latest value."""
    with kit.start("tags") as exp:
        exp.add_tags(["conformance"])
        exp.add_tags({"team": "ml-platform", "équipe": "données ✓", "stage": "warmup"})
        kit.flushed(exp)
        exp.add_tags({"stage": "final"})
    kit.expect_delivered(exp.id)
    expected = {"conformance": "", "team": "ml-platform", "équipe": "données ✓", "stage": "final"}
    expect_tags(kit, exp.id, expected)


def texts_round_trip(kit: Harness) -> None:
    """Texts (multi-line, unicode, 10 kB) arrive exactly once, under their name and step."""
    with kit.start("texts") as exp:
        for name, step, text in TEXTS:
            exp.log_text(name, text, step)
    kit.expect_delivered(exp.id)
    expect_texts(kit, exp.id, TEXTS)


def images_round_trip(kit: Harness) -> None:
    """Images arrive exactly once, byte for byte the PNG files of the local store."""
    with kit.start("images") as exp:
        for name, step, data in IMAGES:
            exp.log_image(name, data, step)
    kit.expect_delivered(exp.id)
    expect_images(kit, exp.id, IMAGES)


def artifacts_round_trip(kit: Harness) -> None:
    """A file and a file under a nested artifact path arrive byte for byte."""
    files = _artifact_files(kit)
    with kit.start("artifacts") as exp:
        exp.log_artifact(kit.root / "inputs" / "model.bin")
        exp.log_artifact(kit.root / "inputs" / "epoch1.pt", "checkpoints/epoch1.pt")
    kit.expect_delivered(exp.id)
    expect_artifacts(kit, exp.id, files)


def histograms_round_trip(kit: Harness) -> None:
    """Histograms (binned from values with NaN among them, and given as counts and edges)
    arrive exactly once, counts and edges exact."""
    values = [math.sin(i) * 3.0 for i in range(1000)] + [math.nan, math.inf]
    with kit.start("histograms") as exp:
        exp.log_histogram("weights/layer1", values, 0, bins=32)
        exp.log_histogram("weights/layer1", [v * 2 for v in values[:1000]], 1, bins=32)
        exp.log_histogram("grad@norm", counts=[3, 0, 5], edges=[-1.0, 0.0, 0.5, 2.0], step=7)
    kit.expect_delivered(exp.id)
    expect_histograms(kit, exp.id, [("weights/layer1", 0), ("weights/layer1", 1), ("grad@norm", 7)])


def status_on_success(kit: Harness) -> None:
    """A run is ``running`` in the tool while it goes, ``finished`` after a clean exit."""
    with kit.start("success") as exp:
        exp.log_metric("loss", 0.5, 0)
        kit.flushed(exp)
        kit.expect_one_run(exp.id)
        kit.expect_status(exp.id, RunStatus.RUNNING)
    kit.expect_delivered(exp.id)
    kit.expect_status(exp.id, RunStatus.FINISHED)


def status_on_failure(kit: Harness) -> None:
    """An exception inside ``with`` ends the run ``failed``; what it logged is kept."""
    _ended_by(kit, _Failure("raised by the conformance kit"), RunStatus.FAILED)


def status_on_kill(kit: Harness) -> None:
    """``KeyboardInterrupt`` inside ``with`` ends the run ``killed``; what it logged is kept."""
    _ended_by(kit, KeyboardInterrupt(), RunStatus.KILLED)


def _ended_by(kit: Harness, error: BaseException, status: RunStatus) -> None:
    points = [("loss", 0.5, 0), ("loss", 0.25, 1)]
    exp = kit.start(status.value)
    with pytest.raises(type(error)):
        _log_then_raise(exp, points, error)
    kit.expect_delivered(exp.id)
    kit.expect_status(exp.id, status)
    expect_metrics(kit, exp.id, points)


def _log_then_raise(
    exp: Experiment, points: Sequence[tuple[str, float, int]], error: BaseException
) -> None:
    with exp:
        for name, value, step in points:
            exp.log_metric(name, value, step)
        raise error


def resume_continues_the_same_run(kit: Harness) -> None:
    """A second session (``Experiment(run_id=...)``) continues the same run in the tool,
    which shows it running again meanwhile."""
    first = [("loss", 1.0 / (step + 1), step) for step in range(100)]
    second = [("loss", 1.0 / (step + 1), step) for step in range(100, 200)]
    with kit.start("resume") as exp:
        for point in first:
            exp.log_metric(*point)
        exp.log_params({"session_one": 1})
        exp.add_tags({"session": "first"})
    kit.expect_delivered(exp.id)
    with kit.resume(exp.id) as again:
        for point in second:
            again.log_metric(*point)
        again.log_params({"session_two": 2})
        again.add_tags({"session": "second"})
        kit.flushed(again)
        kit.expect_status(exp.id, RunStatus.RUNNING)  # reopened, not left finished
    kit.expect_delivered(exp.id)
    kit.expect_status(exp.id, RunStatus.FINISHED)
    expect_metrics(kit, exp.id, first + second)
    expect_params(kit, exp.id, {"session_one": 1, "session_two": 2})
    expect_tags(kit, exp.id, {"session": "second"})


def replay_creates_no_duplicates(kit: Harness) -> None:
    """Every batch delivered twice in a row, the whole run again, then again by a new
    instance that reopens the run: everything is in the tool exactly once."""
    points = metric_series(600, repeats=0)
    files = _artifact_files(kit)
    artifact = {"checkpoints/epoch1.pt": files["checkpoints/epoch1.pt"]}
    with kit.start("replay", journal_only=True) as exp:
        _log_everything(kit, exp, points, {"replayed": "yes"}, artifact, flush_every=200)
    run = exp.run_info
    batches = kit.journal.read_batches(run.id, 0, limit=1_000_000)
    first = kit.delivery(kit.build_backend(), run)
    _deliver(kit, first, [b for b in batches for _ in (1, 2)] + batches, resumed=False)
    second = kit.delivery(kit.build_backend(), run)
    _deliver(kit, second, batches, resumed=True, status=RunStatus.FINISHED)
    kit.expect_one_run(run.id)
    kit.expect_status(run.id, RunStatus.FINISHED)
    _expect_everything(kit, run.id, points, {"replayed": "yes"}, artifact)


def published_later(kit: Harness) -> None:
    """A run logged to the local store alone, published later (``tracelet sync RUN --to
    NAME``): every point, param, tag, text, image and artifact arrives once, with the
    final status; publishing it again does nothing."""
    points = metric_series(2_000, repeats=0)
    artifact = {"model.bin": _artifact_files(kit)["model.bin"]}
    with kit.start("publish", journal_only=True) as exp:
        _log_everything(kit, exp, points, {"published": "later"}, artifact)
    (result,) = kit.publish(exp.id)
    if result.error is not None:
        raise AssertionError(f"publishing run {exp.id} failed: {result.error}")
    kit.expect_delivered(exp.id)
    kit.expect_status(exp.id, RunStatus.FINISHED)
    if kit.publish(exp.id):
        raise AssertionError("publishing a run the backend already holds did something")
    _expect_everything(kit, exp.id, points, {"published": "later"}, artifact)


def _log_everything(
    kit: Harness,
    exp: Experiment,
    points: Sequence[tuple[str, float, int]],
    tags: dict[str, str],
    artifact: dict[str, bytes],
    flush_every: int | None = None,
) -> None:
    """Log ``points`` (waiting for delivery every ``flush_every``), the kit's params,
    ``tags``, texts and images, and the one ``artifact`` (path to bytes) of the inputs."""
    for i, (name, value, step) in enumerate(points, 1):
        exp.log_metric(name, value, step)
        if flush_every and i % flush_every == 0:
            kit.flushed(exp)
    exp.log_params(PARAMS)
    exp.add_tags(tags)
    for name, step, text in TEXTS:
        exp.log_text(name, text, step)
    for name, step, data in IMAGES:
        exp.log_image(name, data, step)
    (path,) = artifact
    exp.log_artifact(kit.root / "inputs" / Path(path).name, path)


def _expect_everything(
    kit: Harness,
    run_id: str,
    points: Sequence[tuple[str, float, int]],
    tags: dict[str, str],
    artifact: dict[str, bytes],
) -> None:
    """What :func:`_log_everything` logged is in the tool (texts, images and artifacts
    only where the tool reads them back)."""
    expect_metrics(kit, run_id, points)
    expect_params(kit, run_id, PARAMS)
    expect_tags(kit, run_id, tags)
    expect_texts(kit, run_id, TEXTS, optional=True)
    expect_images(kit, run_id, IMAGES, optional=True)
    expect_artifacts(kit, run_id, artifact, optional=True)


def _deliver(
    kit: Harness,
    delivery: Delivery,
    batches: Sequence[Batch],
    *,
    resumed: bool,
    status: RunStatus | None = None,
) -> None:
    """Deliver ``batches`` in this order (repeats included), as a sink does: open the run,
    deliver, finish with ``status`` when given, release."""
    try:
        kit.expect_done(delivery, delivery.open(resumed), "start_run")
        for batch in batches:
            kit.expect_done(delivery, delivery.deliver(batch), f"batch {batch.seq}")
        if status is not None:
            kit.expect_done(delivery, delivery.finish(status), "finish_run")
    finally:
        delivery.release()


def _artifact_files(kit: Harness) -> dict[str, bytes]:
    """Write the artifact files to log; return artifact path to content."""
    folder = kit.root / "inputs"
    folder.mkdir(exist_ok=True)
    rng = random.Random(7)
    files = {"model.bin": rng.randbytes(200_000), "checkpoints/epoch1.pt": rng.randbytes(3_000)}
    (folder / "model.bin").write_bytes(files["model.bin"])
    (folder / "epoch1.pt").write_bytes(files["checkpoints/epoch1.pt"])
    return files


CHECKS: dict[str, Callable[[Harness], None]] = {
    check.__name__: check
    for check in (
        metrics_round_trip,
        nan_and_infinity,
        name_mapping,
        params_round_trip,
        tags_round_trip,
        texts_round_trip,
        images_round_trip,
        artifacts_round_trip,
        histograms_round_trip,
        status_on_success,
        status_on_failure,
        status_on_kill,
        resume_continues_the_same_run,
        replay_creates_no_duplicates,
        published_later,
    )
}
"""Every check by name, in the order they are listed in the documentation."""
