"""`tracelet ui`: the JSON API in-process (fast), and the page in headless Chromium (slow).

The browser tests drive Debian's ``chromium`` with Playwright's Python package; the
``chromium`` fixture installs the browser with apt-get when it is missing (CI starts on a
fresh machine, as root). Screenshots are saved as test artifacts under pytest's temporary
folder; with ``UPDATE_UI_SCREENSHOTS=1`` they are also copied to docs/images for docs/ui.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("plotly")

import tracelet
from tracelet.records import Batch, RunInfo, RunStatus
from tracelet.storage import LocalStore
from tracelet.testing.browser import CHROMIUM, CHROMIUM_FLAGS, chromium_path
from tracelet.testing.debian import can_install
from tracelet.testing.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS_IMAGES = ROOT / "docs" / "images"
UPDATE_SCREENSHOTS = os.environ.get("UPDATE_UI_SCREENSHOTS") == "1"
QUIET = {"track_system": False, "track_env": False, "track_git": False, "track_stdout": False}
LONG_POINTS = 1_000_000
MOST_POINTS_DRAWN = 4000


# -- generated stores ---------------------------------------------------------------------


def demo_runs(store: Path, tmp: Path) -> dict[str, str]:
    """Three small runs, logged through the API as training code would; run ids by name.

    ``baseline`` and ``tuned`` (project vision) log loss, accuracy and lr for 2,000 steps;
    ``tuned`` has a loss spike at step 1,500 and a NaN at 1,800 (both found by live
    detection); ``bert`` (project nlp) fails. Each has params, tags, a text, an image,
    an artifact and checkpoints.
    """
    ids = {}
    plans = {
        "baseline": ("vision", {"lr": 0.001, "batch_size": 64}, {"team": "ml"}, 0.0),
        "tuned": ("vision", {"lr": 0.01, "batch_size": 64}, {"team": "research"}, 0.3),
        "bert": ("nlp", {"lr": 0.0005, "batch_size": 32}, {"team": "ml", "model": "bert"}, 0.1),
    }
    for name, (project, params, tags, noise) in plans.items():
        exp = tracelet.start_logging(
            name, project=project, config={"store_path": str(store), **QUIET}
        )
        exp.log_params(params)
        exp.add_tags(tags)
        rng = random.Random(name)
        for step in range(2000):
            loss = 2.0 * math.exp(-step / 600) + 0.05 + noise * 0.05 * rng.random()
            if name == "tuned" and step == 1500:
                loss *= 25
            if name == "tuned" and step == 1800:
                loss = math.nan
            exp.log_metric("loss", loss, step)
            exp.log_metric("accuracy", 1 - loss / 3 if math.isfinite(loss) else 0.5, step)
            if step % 10 == 0:
                exp.log_metric("lr", params["lr"] * (1 - step / 2000), step)
            if step % 500 == 499:
                exp.checkpoint(step)
        exp.log_text("notes", f"{name}: {project} run with lr={params['lr']}", 1999)
        exp.log_image("sample", _gradient_image(name), 1999)
        artifact = tmp / f"{name}-config.json"
        artifact.write_text(json.dumps(params))
        exp.log_artifact(str(artifact), "config.json")
        ids[name] = exp.id
        exp.stop("failed" if name == "bert" else "finished")
    store_ = LocalStore(store)
    try:  # what `tracelet show` reports for a backend that is down
        store_.ensure_cursor(ids["tuned"], "mlflow")
        store_.set_cursor(
            ids["tuned"],
            "mlflow",
            3,
            error="ConnectionError: mlflow:5000 refused",
            state="retrying",
        )
    finally:
        store_.close()
    return ids


def _gradient_image(seed: str) -> Any:
    import numpy as np

    rng = np.random.default_rng(abs(hash(seed)) % 2**32)
    x = np.linspace(0, 1, 48)
    base = np.stack([np.outer(x, 1 - x), np.outer(1 - x, x), np.outer(x, x)], axis=-1)
    return (255 * np.clip(base * 3 + rng.normal(0, 0.05, base.shape), 0, 1)).astype("uint8")


def long_run(store: Path, points: int = LONG_POINTS, name: str = "long") -> str:
    """A finished run of ``points`` points of ``loss`` (a spike of 50 at the middle, a NaN
    at 70 %) and one ``accuracy`` point per 10, journaled directly: a few seconds."""
    local = LocalStore(store)
    run_id = uuid.uuid4().hex
    now = time.time()
    try:
        local.create_run(RunInfo(run_id, name, "scale", now))
        rng = random.Random(7)
        for seq, start in enumerate(range(0, points, 50_000), start=1):
            rows = []
            for step in range(start, min(points, start + 50_000)):
                value = 2.0 * 0.999995**step * (1 + rng.gauss(0, 0.02))
                if step == points // 2:
                    value = 50.0
                if step == points * 7 // 10:
                    value = math.nan
                rows.append(("loss", value, step, now + step * 1e-4))
                if step % 10 == 0:
                    rows.append(("accuracy", 1 - value / 3, step, now + step * 1e-4))
            local.write_batch(Batch(run_id, seq, rows))
        local.finish_run(run_id, RunStatus.FINISHED)
    finally:
        local.close()
    return run_id


def spiky_run(store: Path, points: int = 100_000) -> tuple[str, dict[int, float]]:
    """A finished run of ``points`` points of ``signal`` (noise around 1) with 20 spikes
    and dips at random steps, an inf and a NaN; returns its id and the odd points."""
    local = LocalStore(store)
    run_id = uuid.uuid4().hex
    rng = random.Random(11)
    odd = {
        step: rng.choice([-1, 1]) * rng.uniform(20, 90) for step in rng.sample(range(points), 20)
    }
    odd[points // 3] = math.inf
    odd[points // 4] = math.nan
    try:
        local.create_run(RunInfo(run_id, "spiky", "tests", time.time()))
        rows = [("signal", odd.get(s, 1 + rng.gauss(0, 0.01)), s, 0.0) for s in range(points)]
        for seq, start in enumerate(range(0, points, 7_000), start=1):
            local.write_batch(Batch(run_id, seq, rows[start : start + 7_000]))
        local.finish_run(run_id, RunStatus.FINISHED)
    finally:
        local.close()
    return run_id, odd


# -- the JSON API, in-process ---------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A store with the three demo runs and the spiky one (``ids["spiky"]``)."""
    folder = tmp_path_factory.mktemp("ui-demo")
    store = folder / ".tracelet"
    ids = demo_runs(store, folder)
    ids["spiky"], _ = spiky_run(store)
    return store, ids


@pytest.fixture(scope="module")
def client(demo_store: tuple[Path, dict[str, str]]) -> Iterator[Any]:
    from starlette.testclient import TestClient

    from tracelet.ui.app import create_app

    with TestClient(create_app(demo_store[0])) as test_client:
        yield test_client


def get_json(client: Any, url: str, status: int = 200) -> Any:
    response = client.get(url)
    assert response.status_code == status, response.text
    return response.json()


def test_runs_are_listed_and_filtered_as_tracelet_list_filters(client, demo_store):
    _, ids = demo_store
    found = get_json(client, "/api/runs")
    assert [run["name"] for run in found["runs"]] == ["baseline", "tuned", "bert", "spiky"]
    assert found["projects"] == ["nlp", "tests", "vision"]
    assert found["runs"][0]["tags"] == {"team": "ml"}
    assert found["runs"][0]["id"] == ids["baseline"]
    names = lambda query: [r["name"] for r in get_json(client, f"/api/runs?{query}")["runs"]]  # noqa: E731
    assert names("project=vision") == ["baseline", "tuned"]
    assert names("status=failed") == ["bert"]
    assert names("tag=team=ml") == ["baseline", "bert"]
    assert names("tag=model") == ["bert"]
    assert names("param=lr=0.01") == ["tuned"]
    assert names("project=vision&tag=team=ml") == ["baseline"]
    assert "unknown run status" in get_json(client, "/api/runs?status=nope", 400)["error"]
    assert "name=value" in get_json(client, "/api/runs?param=lr", 400)["error"]


def test_a_run_in_full(client, demo_store):
    _, ids = demo_store
    run = get_json(client, "/api/runs/tuned")  # a name, as on the command line
    assert run["id"] == ids["tuned"]
    assert run["status"] == "finished"
    assert run["params"] == {"lr": 0.01, "batch_size": 64}
    assert run["anomalies"] == {"loss_spike": 1, "nan_or_inf": 1}
    assert run["counts"] == {
        "checkpoints": 4,
        "texts": 1,
        "images": 1,
        "artifacts": 1,
        "histograms": 0,
    }
    assert run["metric_names"] == ["accuracy", "loss", "lr"]
    mlflow = next(d for d in run["deliveries"] if d["backend"] == "mlflow")
    assert mlflow["phase"] == "retrying"
    assert "retrying since" in mlflow["description"]
    assert "ConnectionError" in mlflow["error"]
    assert get_json(client, f"/api/runs/{ids['tuned'][:8]}")["name"] == "tuned"
    assert "no run" in get_json(client, "/api/runs/nothing-like-it", 404)["error"]


def test_metric_summaries_checkpoints_anomalies_texts_and_files(client, demo_store):
    metrics = get_json(client, "/api/runs/tuned/metrics")
    assert list(metrics) == ["accuracy", "loss", "lr"]
    assert metrics["loss"]["count"] == 2000
    assert metrics["loss"]["nan"] == 1
    assert metrics["loss"]["step"] == 1999
    assert metrics["loss"]["max"] > 5  # the spike
    assert [c["step"] for c in get_json(client, "/api/runs/tuned/checkpoints")] == [
        499,
        999,
        1499,
        1999,
    ]
    anomalies = get_json(client, "/api/runs/tuned/anomalies?metric=loss")
    assert [(a["step"], a["kind"]) for a in anomalies] == [
        (1500, "loss_spike"),
        (1800, "nan_or_inf"),
    ]
    assert anomalies[1]["value"] == "nan"  # JSON has no NaN
    assert get_json(client, "/api/runs/tuned/anomalies?after=1500")[0]["step"] == 1800
    assert get_json(client, "/api/runs/tuned/texts")[0]["text"].startswith("tuned: vision")
    (image,) = get_json(client, "/api/runs/tuned/images")
    png = client.get(image["url"])
    assert png.status_code == 200
    assert png.content.startswith(b"\x89PNG")
    (artifact,) = get_json(client, "/api/runs/tuned/artifacts")
    assert artifact["artifact_path"] == "config.json"
    download = client.get(artifact["url"])
    assert json.loads(download.content) == {"lr": 0.01, "batch_size": 64}
    assert "attachment" in download.headers["content-disposition"]
    assert client.get("/api/runs/tuned/images/5").status_code == 404


def test_compare_shows_the_params_that_differ_and_final_metrics(client):
    found = get_json(client, "/api/compare?runs=baseline,tuned,bert")
    assert [run["name"] for run in found["runs"]] == ["baseline", "tuned", "bert"]
    assert found["params"] == {"batch_size": [64, 64, 32], "lr": [0.001, 0.01, 0.0005]}
    assert set(found["metrics"]) == {"accuracy", "loss", "lr"}
    assert [side["count"] for side in found["metrics"]["loss"]] == [2000, 2000, 2000]
    assert "2 to" in get_json(client, "/api/compare?runs=baseline", 400)["error"]


def test_a_short_series_comes_whole(client):
    series = get_json(client, "/api/runs/tuned/metrics/loss?points=2000")
    assert series["kind"] == "points"
    assert series["total"] == 2000
    assert series["step"] == list(range(2000))
    assert series["value"][1800] is None
    assert series["nonfinite"] == [[1800, "nan"]]
    assert series["running"] is False
    assert "has no metric 'nope'" in get_json(client, "/api/runs/tuned/metrics/nope", 404)["error"]


def test_downsampling_keeps_every_spike_and_dip(client, demo_store):
    _, ids = demo_store
    local = LocalStore(demo_store[0])
    try:
        points = [(s, v) for _, v, s, _ in local.metrics(ids["spiky"], "signal")]
    finally:
        local.close()
    series = get_json(client, "/api/runs/spiky/metrics/signal?points=500")
    assert series["kind"] == "buckets"
    assert len(series["step"]) <= 500
    assert series["total"] == len(points) == sum(series["count"])
    finite = [(s, v) for s, v in points if math.isfinite(v)]
    assert max(h for h in series["high"] if h is not None) == max(v for _, v in finite)
    assert min(lo for lo in series["low"] if lo is not None) == min(v for _, v in finite)
    assert_exact(series, dict(points))
    after = get_json(client, "/api/runs/spiky/metrics/signal?after=12345&points=100")
    assert after["kind"] == "buckets"  # from the index, its first bucket cut at step 12345
    assert len(after["step"]) <= 100
    assert after["first_step"][0] == 12346
    assert after["total"] == len(points) - 12346
    assert_exact(after, {s: v for s, v in points if s > 12345})
    odd = {step: kind for step, kind, _ in series["nonfinite"]}
    assert odd == {len(points) // 3: "inf", len(points) // 4: "nan"}


def assert_exact(series: dict[str, Any], by_step: dict[int, float]) -> None:
    """Each bucket holds exactly the count, min and max of its points (of ``by_step``):
    spikes and dips survive downsampling."""
    for first, last, low, high, count in zip(
        series["first_step"],
        series["last_step"],
        series["low"],
        series["high"],
        series["count"],
        strict=True,
    ):
        inside = [by_step[s] for s in range(first, last + 1) if s in by_step]
        assert count == len(inside)
        values = [v for v in inside if math.isfinite(v)]
        assert (low, high) == ((min(values), max(values)) if values else (None, None))


def test_a_zoom_fetches_the_detail_of_its_range(client, demo_store):
    _, ids = demo_store
    local = LocalStore(demo_store[0])
    try:
        points = {s: v for _, v, s, _ in local.metrics(ids["spiky"], "signal")}
    finally:
        local.close()
    wide = get_json(client, "/api/runs/spiky/metrics/signal?start=10000&end=60000&points=400")
    assert wide["kind"] == "buckets"
    assert wide["first_step"][0] >= 10000
    assert wide["last_step"][-1] <= 60000
    assert wide["total"] == 50001
    detail = get_json(client, "/api/runs/spiky/metrics/signal?start=20000&end=20999&points=2000")
    assert detail["kind"] == "points"
    assert detail["step"] == list(range(20000, 21000))
    assert detail["value"] == [
        points[s] if math.isfinite(points[s]) else None for s in detail["step"]
    ]


def test_after_returns_only_the_points_of_later_steps_as_they_are_journaled(tmp_path):
    from starlette.testclient import TestClient

    from tracelet.ui.app import create_app

    store = tmp_path / "live"
    local = LocalStore(store)
    run_id = uuid.uuid4().hex
    local.create_run(RunInfo(run_id, "live", "tests", time.time()))
    local.write_batch(Batch(run_id, 1, [("loss", 1.0 / (s + 1), s, 0.0) for s in range(100)]))
    try:
        with TestClient(create_app(store)) as api:
            first = get_json(api, f"/api/runs/{run_id}/metrics/loss")
            assert first["step"] == list(range(100))
            assert get_json(api, f"/api/runs/{run_id}/metrics/loss?after=99")["total"] == 0
            for seq in range(2, 6):  # the writer goes on
                rows = [("loss", 0.5, s, 0.0) for s in range(seq * 100 - 100, seq * 100)]
                local.write_batch(Batch(run_id, seq, rows))
                new = get_json(api, f"/api/runs/{run_id}/metrics/loss?after={seq * 100 - 101}")
                assert new["step"] == list(range(seq * 100 - 100, seq * 100))
            whole = get_json(api, f"/api/runs/{run_id}/metrics/loss")
            assert whole["step"] == list(range(500))
            assert get_json(api, f"/api/runs/{run_id}/metrics")["loss"]["count"] == 500
    finally:
        local.close()


def test_a_long_live_history_stays_within_its_bounds(tmp_path, monkeypatch):
    """An index fed batch after batch (a live run polled every second) merges its buckets
    and answers the same min and max as one built at once."""
    from tracelet.ui import series
    from tracelet.ui.readonly import ReadOnlyStore
    from tracelet.ui.series import SeriesIndex, StepRange

    monkeypatch.setattr(series, "INDEX_BUCKETS", 64)
    monkeypatch.setattr(series, "MIN_SPAN_ROWS", 16)

    store = tmp_path / "growing"
    local = LocalStore(store)
    run_id = uuid.uuid4().hex
    local.create_run(RunInfo(run_id, "growing", "tests", time.time()))
    reader = ReadOnlyStore(store)
    try:
        growing = SeriesIndex(reader.run_pk(run_id), "loss")
        rng = random.Random(3)
        for seq in range(1, 400):
            rows = [("loss", rng.gauss(0, 1), s, 0.0) for s in range(seq * 50 - 50, seq * 50)]
            local.write_batch(Batch(run_id, seq, rows))
            growing.refresh(reader.connection())
            assert len(growing.buckets) <= 2 * 64
        built = SeriesIndex(reader.run_pk(run_id), "loss")
        built.refresh(reader.connection())
        assert growing.span_rows > 16  # merged as it grew
        a = growing.read(reader.connection(), StepRange(), 60)
        b = built.read(reader.connection(), StepRange(), 60)
        assert a["total"] == b["total"] == 399 * 50
        assert max(a["high"]) == max(b["high"])
        assert min(a["low"]) == min(b["low"])
    finally:
        reader.close()
        local.close()


def test_no_endpoint_changes_the_store(demo_store):
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tracelet.ui.app import create_app
    from tracelet.ui.readonly import ReadOnlyStore

    store, ids = demo_store
    app = create_app(store)
    for route in app.routes:
        assert isinstance(route, Route)
        assert route.methods <= {"GET", "HEAD"}, route.path

    def fingerprint() -> dict[str, str]:
        files = [store / "tracelet.db", store / "tracelet.db-wal"]
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.exists()}

    before = fingerprint()
    with TestClient(app) as api:
        for url in (
            "/",
            "/static/app.js",
            "/static/plotly.min.js",
            "/api/store",
            "/api/runs?tag=team",
            "/api/compare?runs=baseline,tuned",
            "/api/runs/tuned",
            "/api/runs/tuned/metrics",
            "/api/runs/spiky/metrics/signal?points=100",
            "/api/runs/spiky/metrics/signal?start=5&end=500",
            "/api/runs/tuned/metrics/loss?after=10",
            "/api/runs/tuned/anomalies",
            "/api/runs/tuned/checkpoints",
            "/api/runs/tuned/texts",
            "/api/runs/tuned/images",
            "/api/runs/tuned/images/0",
            "/api/runs/tuned/artifacts",
            "/api/runs/tuned/artifacts/0",
        ):
            assert api.get(url).status_code == 200, url
        assert api.post("/api/runs").status_code == 405
        assert api.delete(f"/api/runs/{ids['tuned']}").status_code == 405
    assert fingerprint() == before
    reader = ReadOnlyStore(store)
    try:
        con = reader.connection()
        assert con.execute("PRAGMA query_only").fetchone()[0] == 1
        with pytest.raises(Exception, match=r"readonly|read-only|query_only"):
            con.execute("DELETE FROM runs")
    finally:
        reader.close()


def test_readers_never_hold_up_the_journal_writer(tmp_path):
    """The dashboard reads (building a long run's index, over and over) while a writer
    journals batches: no write waits on a reader."""
    from tracelet.ui.readonly import ReadOnlyStore
    from tracelet.ui.series import SeriesIndex, StepRange

    store = tmp_path / "busy"
    long_run(store, points=200_000)
    local = LocalStore(store)
    run_id = uuid.uuid4().hex
    local.create_run(RunInfo(run_id, "writer", "tests", time.time()))
    reader = ReadOnlyStore(store)
    stop = threading.Event()

    def read() -> None:
        long_pk = reader.run_pk(reader.list_runs(project="scale")[0].id)
        while not stop.is_set():
            index = SeriesIndex(long_pk, "loss")
            index.refresh(reader.connection())
            index.read(reader.connection(), StepRange.of(1000, 150_000, None), 1000)

    thread = threading.Thread(target=read)
    thread.start()
    slowest = 0.0
    try:
        for seq in range(1, 101):
            began = time.perf_counter()
            local.write_batch(Batch(run_id, seq, [("loss", 1.0, s, 0.0) for s in range(1000)]))
            slowest = max(slowest, time.perf_counter() - began)
    finally:
        stop.set()
        thread.join()
        reader.close()
        local.close()
    assert slowest < 1.0  # a blocked writer would wait for the 60 s busy timeout


def test_the_page_and_plotly_are_served_from_the_installed_packages(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "/static/app.js" in page.text
    plotly = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert plotly.status_code == 200
    assert plotly.headers["content-type"].startswith("text/javascript")
    assert b"plotly" in plotly.content[:2000].lower()
    again = client.get("/static/plotly.min.js", headers={"If-None-Match": plotly.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/static/../readonly.py").status_code == 404


def test_a_loopback_server_answers_only_requests_addressed_to_it(demo_store):
    """A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) gets 400."""
    from starlette.testclient import TestClient

    from tracelet.ui.app import create_app
    from tracelet.ui.command import loopback_hosts

    app = create_app(demo_store[0], allowed_hosts=loopback_hosts("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:8765") as api:
        assert api.get("/api/store").status_code == 200
    with TestClient(app, base_url="http://localhost:8765") as api:
        assert api.get("/api/store").status_code == 200
    with TestClient(app, base_url="http://attacker.example:8765") as api:
        assert api.get("/api/store").status_code == 400


def test_import_tracelet_loads_nothing_of_the_dashboard():
    code = (
        "import sys, tracelet, tracelet.cli, tracelet.cli.commands\n"
        "heavy = ('starlette', 'uvicorn', 'plotly', 'tracelet.ui.app', 'tracelet.ui.dashboard')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# -- the command -------------------------------------------------------------------------------


def test_the_command_refuses_another_host_without_allow_remote(demo_store, capsys):
    from tracelet.cli import main

    assert main(["ui", "--store", str(demo_store[0]), "--host", "0.0.0.0"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("tracelet: error: --host 0.0.0.0 would serve every run")
    assert "--allow-remote" in error


def test_the_command_explains_its_options(capsys):
    from tracelet.cli import main

    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--store PATH", "--host HOST", "--port N", "--allow-remote"):
        assert option in help_text


def test_the_command_warns_before_serving_other_machines(demo_store, monkeypatch, capsys):
    """``--allow-remote``: a warning, then the address; the server itself is not started
    here (the browser tests start the real one, on the loopback address)."""
    import uvicorn

    from tracelet.cli import main

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets: served.append(sockets))
    store = str(demo_store[0])
    assert main(["ui", "--store", store, "--host", "0.0.0.0", "--allow-remote", "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert "tracelet ui: warning: serving" in err
    assert "reachable from other machines" in err
    assert out.startswith("tracelet ui: http://0.0.0.0:")
    assert len(served) == 1


def test_the_command_says_what_is_wrong_in_one_line(tmp_path, capsys):
    from tracelet.cli import main

    assert main(["ui", "--store", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.startswith("tracelet: error: no Tracelet store at")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        local = LocalStore(tmp_path / "store")
        local.close()
        assert main(["ui", "--store", str(tmp_path / "store"), "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


# -- a real server -----------------------------------------------------------------------------


def fetch(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class UiServer:
    """``tracelet ui`` in a subprocess, stopped (and its output kept) at the end."""

    def __init__(self, store: Path, port: int, *options: str) -> None:
        command = [sys.executable, "-m", "tracelet", "ui", "--store", str(store)]
        self.url = f"http://127.0.0.1:{port}/"
        self.process = subprocess.Popen(
            [*command, "--port", str(port), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr_text = ""

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tracelet ui exited: {self.process.communicate()}")
            try:
                fetch(self.url + "api/store", timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("tracelet ui did not answer in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            _, self.stderr_text = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, self.stderr_text = self.process.communicate()


class ui_server:
    """A started :class:`UiServer`, stopped on exit."""

    def __init__(self, store: Path, port: int, *options: str) -> None:
        self.server = UiServer(store, port, *options)

    def __enter__(self) -> UiServer:
        try:
            self.server.wait_ready()
        except BaseException:
            self.server.stop()
            raise
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# -- the page, in headless Chromium ------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium (installed now if missing)."""
    if not Path(CHROMIUM).exists() and not can_install():
        pytest.skip(f"no {CHROMIUM}, and no apt-get as root to install it")
    return chromium_path()


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The demo runs, a run of a million points of ``loss`` (``ids["long"]``, first read
    by the million-point test) and one of 300,000 (``ids["zoomable"]``, for the zoom)."""
    folder = tmp_path_factory.mktemp("ui-browser")
    store = folder / ".tracelet"
    ids = demo_runs(store, folder)
    ids["long"] = long_run(store)
    ids["zoomable"] = long_run(store, points=300_000, name="zoomable")
    return store, ids


@pytest.fixture(scope="module")
def server(ui_store: tuple[Path, dict[str, str]]) -> Iterator[UiServer]:
    with ui_server(ui_store[0], free_port()) as started:
        yield started


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        # Playwright gives each launch a fresh profile (user data dir) of its own.
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page; any script error on it fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert not errors, errors


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ui-screenshots")


def snap(page: Any, folder: Path, name: str) -> Path:
    """A screenshot of the whole page, kept as a test artifact (and for docs/ui.md when
    ``UPDATE_UI_SCREENSHOTS=1``)."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    if UPDATE_SCREENSHOTS:
        DOCS_IMAGES.mkdir(exist_ok=True)
        shutil.copyfile(path, DOCS_IMAGES / path.name)
    return path


def shown_runs(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#runs-body tr[data-run] td:nth-child(2)", "c => c.map(e => e.textContent)"
    )


def wait_shown(page: Any, names: list[str]) -> None:
    """Wait until the runs table shows exactly ``names`` (in any order): a row count alone
    can match the table from before the filter changed."""
    wanted = json.dumps(sorted(names), separators=(",", ":"))  # as JSON.stringify writes
    page.wait_for_function(
        "() => JSON.stringify([...document.querySelectorAll("
        "'#runs-body tr[data-run] td:nth-child(2)')].map(e => e.textContent).sort())"
        f" === {wanted!r}",
        timeout=10_000,
    )


def wait_rows(page: Any, count: int) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('#runs-body tr[data-run]').length === {count}",
        timeout=10_000,
    )


def chart_data(page: Any, index: int = 0) -> list[dict[str, Any]]:
    """The traces Plotly drew on chart ``index``: role, name, and how many points."""
    return page.evaluate(
        f"""() => document.querySelectorAll('.chart .plot')[{index}].data.map(t => ({{
            role: t.meta.role, name: t.name, points: t.x.length,
            top: Math.max(...t.y.filter(v => v !== null)) }}))"""
    )


def ready_chart(page: Any, timeout: float = 30_000) -> Any:
    page.wait_for_selector(".chart[data-state=ready]", timeout=timeout)
    return page.locator(".chart").first


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_runs_table_lists_the_runs(page, server, ui_store, screenshots):
    page.goto(server.url + "#/runs")
    wait_rows(page, 5)
    assert sorted(shown_runs(page)) == ["baseline", "bert", "long", "tuned", "zoomable"]
    page.click("#runs th[data-sort=name]")
    assert shown_runs(page) == ["baseline", "bert", "long", "tuned", "zoomable"]
    page.click("#runs th[data-sort=name]")
    assert shown_runs(page) == ["zoomable", "tuned", "long", "bert", "baseline"]
    assert page.inner_text("#store").endswith("5 runs")
    snap(page, screenshots, "ui-runs")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_filtering_the_runs_table(page, server):
    page.goto(server.url + "#/runs")
    wait_rows(page, 5)
    page.select_option("#filters select[name=project]", "vision")
    wait_shown(page, ["baseline", "tuned"])
    page.fill("#filters input[name=tag]", "team=ml")
    wait_shown(page, ["baseline"])
    assert "tag=team%3Dml" in page.url or "tag=team=ml" in page.url  # a link to this view
    page.fill("#filters input[name=tag]", "")
    page.select_option("#filters select[name=project]", "")
    page.select_option("#filters select[name=status]", "failed")
    wait_shown(page, ["bert"])
    page.select_option("#filters select[name=status]", "")
    page.fill("#filters input[name=param]", "lr=0.01")
    wait_shown(page, ["tuned"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_chart_draws_one_series_per_selected_run(page, server, screenshots):
    page.goto(server.url + "#/runs")
    wait_rows(page, 5)
    for name in ("baseline", "tuned", "bert"):
        page.check(f"#runs-body input[aria-label='select {name}']")
    page.click("#chart-selected")
    page.wait_for_selector(".chart[data-metric=loss][data-state=ready]")
    loss = page.locator(".chart[data-metric=loss]")
    assert loss.get_attribute("data-series") == "3"
    traces = chart_data(page)
    assert sorted(t["name"] for t in traces if t["role"] == "series") == [
        "baseline",
        "bert",
        "tuned",
    ]
    assert [t["role"] for t in traces].count("anomalies") == 1  # tuned's loss spike
    assert page.locator(".chart[data-metric=loss] .scatterlayer .trace").count() == len(traces)
    assert page.locator(".chart[data-metric=loss] .shapelayer path").count() == 1  # its NaN
    assert "NaN/inf" in loss.inner_text()
    page.fill("#smooth", "0.8")
    page.dispatch_event("#smooth", "input")
    page.wait_for_function(
        "() => document.querySelector('.chart .plot').data.some(t => t.meta.role === 'smoothed')"
    )
    assert [t["role"] for t in chart_data(page)].count("smoothed") == 3
    page.check("#log")
    assert page.evaluate("document.querySelector('.chart .plot').layout.yaxis.type") == "log"
    assert "smooth=0.8" in page.url
    assert "log=1" in page.url
    snap(page, screenshots, "ui-charts")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zooming_fetches_the_detail_of_that_range(page, server, ui_store):
    ids = ui_store[1]
    page.goto(server.url + f"#/charts?runs={ids['zoomable']}&metrics=loss")
    chart = ready_chart(page)
    whole = int(chart.get_attribute("data-points"))
    with page.expect_response(lambda r: "start=149900" in r.url and "end=150100" in r.url):
        page.evaluate(
            "Plotly.relayout(document.querySelector('.chart .plot'),"
            " {'xaxis.range[0]': 149900, 'xaxis.range[1]': 150100})"
        )
    page.wait_for_function("() => document.querySelector('.chart').dataset.state === 'ready'")
    (series,) = [t for t in chart_data(page) if t["role"] == "series"]
    assert series["points"] == 201  # every point of the range, the spike among them
    assert series["top"] == 50.0
    assert "zoomed" in chart.inner_text()
    with page.expect_response(lambda r: "/metrics/loss?points=" in r.url and "start=" not in r.url):
        page.evaluate(
            "Plotly.relayout(document.querySelector('.chart .plot'), {'xaxis.autorange': true})"
        )
    page.wait_for_function("() => document.querySelector('.chart').dataset.state === 'ready'")
    assert int(chart.get_attribute("data-points")) == whole


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_live_run_chart_grows_while_the_run_logs(page, server, ui_store):
    store = ui_store[0]
    exp = tracelet.start_logging("live", project="live", config={"store_path": str(store), **QUIET})
    step = 0
    for step in range(200):
        exp.log_metric("loss", 1.0 / (step + 1), step)
    exp.flush()
    stop = threading.Event()

    def train() -> None:
        step = 200
        while not stop.is_set():
            for _ in range(50):
                exp.log_metric("loss", 1.0 / (step + 1), step)
                step += 1
            time.sleep(0.05)

    writer = threading.Thread(target=train)
    writer.start()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(server.url + f"#/charts?runs={exp.id}&metrics=loss")
        chart = ready_chart(page)
        first = int(chart.get_attribute("data-last-step"))
        assert page.locator("#live").is_visible()
        for _ in range(2):  # grows, and grows again
            shown = int(chart.get_attribute("data-last-step"))
            page.wait_for_function(
                f"() => +document.querySelector('.chart').dataset.lastStep > {shown + 300}",
                timeout=15_000,
            )
        grown = int(chart.get_attribute("data-total"))
    finally:
        stop.set()
        writer.join()
        exp.stop()
    polls = [url for url in requests if "/metrics/loss?" in url and "after=" in url]
    assert len(polls) >= 2  # only the points after the last step shown, once a second
    assert grown > first + 600


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_million_point_chart_arrives_bounded_and_fast(page, server, ui_store, screenshots):
    ids = ui_store[1]
    url = server.url + f"#/charts?runs={ids['long']}&metrics=loss"
    page.goto(server.url + "#/runs")  # the page and plotly.js are loaded before timing
    page.evaluate("loadPlotly()")
    timings = []
    for attempt in ("first (index built now)", "again (index kept)"):
        began = time.perf_counter()
        page.goto(url)
        chart = ready_chart(page)
        wall = time.perf_counter() - began
        data = {k: chart.get_attribute(f"data-{k}") for k in ("load-ms", "fetch-ms", "render-ms")}
        points, total = (
            int(chart.get_attribute("data-points")),
            int(chart.get_attribute("data-total")),
        )
        size = int(chart.get_attribute("data-bytes"))
        timings.append(data["load-ms"])
        print(
            f"\n1,000,000-point chart, {attempt}: data arrived and drawn in {data['load-ms']} ms"
            f" (fetch {data['fetch-ms']} ms, draw {data['render-ms']} ms), {wall:.2f} s from"
            f" navigation; {total:,} points sent as {points:,} buckets, {size:,} bytes of JSON"
        )
        assert total == LONG_POINTS
        assert points <= MOST_POINTS_DRAWN
        assert size < 1_000_000
        (series,) = [t for t in chart_data(page) if t["role"] == "series"]
        assert series["top"] == 50.0  # the one spike in a million survives
        assert series["points"] <= 2 * MOST_POINTS_DRAWN
        page.goto(server.url + "#/runs")
    snap_page = page
    snap_page.goto(url)
    ready_chart(snap_page)
    snap(snap_page, screenshots, "ui-million")


SLOW_RUNS_LIST = """() => {
  const fetchNow = window.fetch;
  window.fetch = (url, ...rest) => String(url).startsWith("/api/runs?")
    ? new Promise((resolve) => setTimeout(resolve, 1500)).then(() => fetchNow(url, ...rest))
    : fetchNow(url, ...rest);
}"""
"""Makes the runs list answer 1.5 s late (the page is not reloaded by hash changes)."""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_views_asked_faster_than_they_load_end_on_the_last_one(page, server, ui_store):
    """Each view waits for the one before it, and the last one asked is shown (two views
    loading at once raced: the slower replaced the later one's page, and its chart never
    became ready)."""
    chart = server.url + f"#/charts?runs={ui_store[1]['long']}&metrics=loss"
    page.goto(server.url + "#/runs")
    page.wait_for_selector("#runs-body tr[data-run]")  # (other tests add runs)
    page.evaluate(SLOW_RUNS_LIST)  # the runs view now loads after the chart asked next
    for _ in range(5):
        page.goto(server.url + "#/runs")
        page.goto(chart)
    ready_chart(page)
    assert page.get_attribute("#view", "data-view") == "charts"
    page.goto(chart + "&log=1")  # a chart asked for, and left before it loads
    page.goto(server.url + "#/runs")
    page.wait_for_selector("#runs-body tr[data-run]")
    assert page.get_attribute("#view", "data-view") == "runs"
    assert page.locator(".chart").count() == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_run_page_and_the_compare_view(page, server, ui_store, screenshots):
    ids = ui_store[1]
    page.goto(server.url + f"#/run/{ids['tuned']}")
    page.wait_for_selector("#run-images img")
    page.wait_for_function("() => document.querySelector('#run-images img').naturalWidth > 0")
    assert "0.01" in page.inner_text("#run-params")
    assert "team=research" in page.inner_text("#run-params")
    anomalies = page.inner_text("#run-anomalies")
    assert "loss_spike" in anomalies
    assert "nan_or_inf" in anomalies
    assert "retrying since" in page.inner_text("#run-deliveries")
    assert page.locator("#run-checkpoints tbody tr").count() == 4
    assert "download" in page.inner_text("#run-artifacts")
    assert "tuned: vision run" in page.inner_text("#run-texts")
    page.wait_for_selector("#run-metrics tbody tr")
    snap(page, screenshots, "ui-run")
    page.goto(server.url + f"#/compare?runs={ids['baseline']},{ids['tuned']},{ids['bert']}")
    page.wait_for_selector("#compare-params")
    params = page.inner_text("#compare-params")
    assert "lr" in params
    assert "batch_size" in params
    assert page.locator("#compare-metrics tbody tr").count() == 3
    snap(page, screenshots, "ui-compare")


def test_a_file_row_naming_a_path_outside_the_store_is_not_served(tmp_path):
    """A copied store could name any file; the dashboard serves only the store's own."""
    import sqlite3

    from starlette.testclient import TestClient

    from tracelet.ui.app import create_app

    store = tmp_path / ".tracelet"
    (tmp_path / "model.pt").write_bytes(b"weights")
    with tracelet.start_logging("copied", config={"store_path": str(store), **QUIET}) as exp:
        exp.log_artifact(tmp_path / "model.pt")
    with sqlite3.connect(store / "tracelet.db") as con:
        con.execute("UPDATE artifacts SET path = '../../../../../../../../etc/passwd'")
    with TestClient(create_app(store)) as api:
        response = api.get(f"/api/runs/{exp.id}/artifacts/0")
    assert response.status_code == 404
    assert "is not in the store" in response.json()["error"]


@pytest.mark.parametrize("query", ["points=0", "points=-5", "start=inf", "after=nan", "start=x"])
def test_a_bad_number_in_a_query_is_a_400_that_names_it(client, demo_store, query):
    _, ids = demo_store
    response = client.get(f"/api/runs/{ids['baseline']}/metrics/loss?{query}")
    assert response.status_code == 400
    assert query.split("=")[0] in response.json()["error"]
