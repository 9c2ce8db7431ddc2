"""Built-in collectors (system, environment, git) and the collector hook."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tracelet
from tracelet import ExperimentConfig, TraceletSettings
from tracelet.core.registry import default_registry
from tracelet.plugins import CollectorPlugin, CollectorRegistration
from tracelet.redaction import redact_argv

pytestmark = pytest.mark.collectors


def run_with(settings: dict, config: ExperimentConfig | None = None, wait: float = 0.3):
    exp = tracelet.Experiment("collected", settings=TraceletSettings.load(settings), config=config)
    exp.start()
    time.sleep(wait)
    exp.stop()
    return exp


def with_collector(name: str, plugin_class: type[CollectorPlugin]):
    """The default registry with one more collector; unregister it with ``.manager``."""

    class Plugin:
        @tracelet.hookimpl
        def tracelet_register_collectors(self):
            return [CollectorRegistration(name, plugin_class)]

    registry = default_registry()
    registry.register(Plugin(), name=f"{name}-collector")
    return registry


OFF = {"track_system": False, "track_env": False, "track_git": False}


def test_system_samples_are_metrics_on_the_interval(read_store):
    exp = run_with({"track_env": False, "track_git": False, "metrics_interval": 0.1}, wait=0.45)
    points = read_store().metrics(exp.id)
    names = {p[0] for p in points}
    assert {"system/cpu_percent", "system/memory_percent", "system/process_rss_gb"} <= names
    samples = [p for p in points if p[0] == "system/process_rss_gb"]
    assert len(samples) >= 3
    assert all(0 < p[1] < 1000 for p in samples)


def test_a_system_sample_covers_cores_swap_io_rates_and_the_process(read_store, tmp_path):
    exp = tracelet.Experiment(
        "system",
        settings=TraceletSettings.load({"track_env": False, "track_git": False}),
        options={"metrics_interval": 0.1},
    )
    with exp:
        (tmp_path / "written.bin").write_bytes(b"x" * 2_000_000)  # some disk traffic
        time.sleep(0.35)
    names = read_store().metric_names(exp.id)
    import psutil

    cores = {f"system/cpu{i}_percent" for i in range(psutil.cpu_count())}
    expected = {
        "system/swap_percent",
        "system/swap_used_gb",
        "system/process_threads",
        "system/process_open_files",
        "system/disk_read_mb_s",
        "system/disk_write_mb_s",
        "system/net_sent_mb_s",
        "system/net_recv_mb_s",
    }
    if psutil.disk_io_counters() is None:  # a container without disk counters
        expected -= {"system/disk_read_mb_s", "system/disk_write_mb_s"}
    assert cores | expected <= set(names)
    threads = [p[1] for p in read_store().metrics(exp.id, "system/process_threads")]
    assert all(t >= 2 for t in threads)  # at least the training and the collector thread
    rates = [p[1] for p in read_store().metrics(exp.id, "system/net_recv_mb_s")]
    assert all(r >= 0 for r in rates)


def nvidia_gpus() -> int:
    """How many GPUs NVML (the real ``nvidia-ml-py`` bindings) finds here; 0 without a driver."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def test_without_an_nvidia_driver_gpu_metrics_are_absent_and_nothing_is_reported(
    read_store, caplog
):
    if nvidia_gpus():
        pytest.skip("this machine has an NVIDIA GPU")
    exp = run_with({"track_env": False, "track_git": False, "metrics_interval": 0.1})
    names = read_store().metric_names(exp.id)
    assert "system/cpu_percent" in names
    assert not [n for n in names if n.startswith("system/gpu")]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


GPU_METRICS = ("utilization_percent", "memory_used_gb", "memory_total_gb", "memory_percent")


def test_each_gpu_is_sampled_into_the_store_and_mlflow(read_store, store_path, mlflow_server):
    count = nvidia_gpus()
    if not count:
        pytest.skip("no NVIDIA GPU and driver here (run on the GPU machine)")
    from tracelet_mlflow.testing import MlflowReadBack

    config = {"metrics_interval": 0.1, "tracking_uri": mlflow_server.url, "track_env": False}
    with tracelet.start_logging("gpu", backend=["local", "mlflow"], config=config) as exp:
        time.sleep(0.5)
    local = read_store().metrics(exp.id)
    for index in range(count):
        for key in GPU_METRICS:
            values = [p[1] for p in local if p[0] == f"system/gpu{index}_{key}"]
            assert values, (index, key)
            assert all(v >= 0 for v in values), (index, key)
    total = [p[1] for p in local if p[0] == "system/gpu0_memory_total_gb"]
    assert total[0] > 1  # (a real board: more than a gigabyte)
    mlflow = MlflowReadBack(mlflow_server.url).metrics(exp.id)
    gpu = sorted(p[:3] for p in local if p[0].startswith("system/gpu"))
    assert sorted(p[:3] for p in mlflow if p[0].startswith("system/gpu")) == gpu


@pytest.mark.slow
def test_what_the_collectors_gather_reaches_every_backend_under_the_same_names(
    tmp_path, every_backend
):
    options, readers = every_backend
    settings = {"metrics_interval": 0.1, "git_repo_path": str(dirty_repo(tmp_path))}
    settings["include_uncommitted_changes"] = True
    with tracelet.Experiment(
        "collected", backend=list(readers), options=settings, backend_options=options
    ) as exp:
        time.sleep(0.6)
    local = readers.pop("local")
    system = sorted((p[0], p[2]) for p in local.metrics(exp.id) if p[0].startswith("system/"))
    assert {"system/cpu_percent", "system/process_rss_gb", "system/disk_read_mb_s"} <= {
        name for name, _ in system
    }
    collected = {n for n in local.params(exp.id) if n.startswith(("env/", "git/"))}
    assert {"env/python", "env/hostname", "git/commit", "git/dirty"} <= collected
    diff = local.artifacts(exp.id)["git/uncommitted.diff"]
    for name, tool in readers.items():
        points = tool.metrics(exp.id)
        assert sorted((p[0], p[2]) for p in points if p[0].startswith("system/")) == system, name
        assert collected <= set(tool.params(exp.id)), name
        assert tool.artifacts(exp.id)["git/uncommitted.diff"] == diff, name


def test_the_collector_thread_stops_at_once(read_store):
    exp = tracelet.Experiment(
        "slow samples",
        settings=TraceletSettings.load({"track_env": False, "track_git": False}),
        options={"metrics_interval": 3600.0},
    )
    exp.start()
    time.sleep(0.2)  # the first sample is taken, the next due in an hour
    exp.stop()
    assert not [t for t in threading.enumerate() if t.name == "tracelet-collectors"]
    assert read_store().metrics(exp.id, "system/cpu_percent")


def test_environment_is_recorded_once_as_params_with_secrets_hidden(read_store, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", "sk-live-1", "--lr=0.1"])
    exp = run_with({"track_system": False, "track_git": False})
    params = read_store().params(exp.id)
    assert params["env/python"] == ".".join(map(str, sys.version_info[:3]))
    assert params["env/argv"] == "train.py --api-key *** --lr=0.1"
    assert params["env/packages/numpy"]
    assert "sk-live-1" not in repr(params)


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def committed_repo(folder):
    """A repository in ``folder`` on branch ``main`` with one (empty) commit."""
    git(folder, "init", "-q", "-b", "main")
    git(
        folder,
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "1",
    )
    return folder


def test_git_state_and_diff_are_recorded(tmp_path, read_store):
    committed_repo(tmp_path)
    git(tmp_path, "remote", "add", "origin", "https://bot:hunter2@example.invalid/repo.git")
    (tmp_path / "train.py").write_text("print('x')\n")
    git(tmp_path, "add", "train.py")
    settings = {"track_system": False, "track_env": False, "include_uncommitted_changes": True}
    exp = run_with(settings)
    store = read_store()
    params = store.params(exp.id)
    assert len(params["git/commit"]) == 40
    assert params["git/branch"] == "main"
    assert params["git/dirty"] is True
    assert params["git/remote"] == "https://***@example.invalid/repo.git"
    assert "git/diff" not in params
    (diff,) = store.artifacts(exp.id)
    assert diff.artifact_path == "git/uncommitted.diff"
    assert "+print('x')" in Path(diff.path).read_text()


def test_a_clean_tree_with_the_store_inside_is_clean_and_has_no_diff(tmp_path, read_store):
    committed_repo(tmp_path)
    settings = {"track_system": False, "track_env": False, "include_uncommitted_changes": True}
    exp = run_with(settings)
    assert read_store().params(exp.id)["git/dirty"] is False
    assert read_store().artifacts(exp.id) == []


def test_a_folder_deep_inside_a_repository_finds_it(tmp_path, read_store):
    committed_repo(tmp_path)
    deep = tmp_path / "src" / "models"
    deep.mkdir(parents=True)
    settings = {"track_system": False, "track_env": False, "git_repo_path": str(deep)}
    exp = run_with(settings)
    assert read_store().params(exp.id)["git/branch"] == "main"


def test_a_repository_path_with_a_tilde_is_expanded_as_git_expands_it(
    tmp_path, read_store, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "proj").mkdir()
    committed_repo(tmp_path / "proj")
    settings = {"track_system": False, "track_env": False, "git_repo_path": "~/proj"}
    exp = run_with(settings)
    assert read_store().params(exp.id)["git/branch"] == "main"


def test_installed_packages_lists_what_importlib_metadata_reads():
    from importlib import metadata

    from tracelet.collectors.environment import installed_packages

    pairs = {(d.metadata["Name"] or "?", d.version) for d in metadata.distributions()}
    expected = [f"{n}=={v}" for n, v in sorted(pairs, key=lambda pair: pair[0].lower())]
    assert installed_packages().splitlines() == expected


def test_outside_a_repository_git_records_nothing(tmp_path, read_store):
    exp = run_with({"track_system": False, "track_env": False, "git_repo_path": str(tmp_path)})
    assert read_store().params(exp.id) == {}


@pytest.mark.parametrize(
    ("settings", "config"),
    [
        ({"track_system": False, "track_env": False, "track_git": False}, None),
        (
            {},
            ExperimentConfig(track_system_metrics=False, track_environment=False, track_git=False),
        ),
    ],
    ids=["settings", "experiment-config"],
)
def test_collectors_can_be_switched_off(settings, config, read_store):
    exp = run_with(settings, config, wait=0.1)
    store = read_store()
    assert store.metrics(exp.id) == []
    assert store.params(exp.id) == {}


def test_a_failing_collector_is_reported_once_and_the_run_goes_on(read_store, caplog):
    class Broken(CollectorPlugin):
        interval = 0.05

        def collect(self):
            raise OSError("sensor unplugged")

    registry = with_collector("broken", Broken)
    try:
        with caplog.at_level(logging.WARNING, "tracelet"):
            exp = run_with(OFF)
            exp_metrics = read_store().metrics(exp.id)
    finally:
        registry.manager.unregister(name="broken-collector")
    assert exp_metrics == []
    assert sum("sensor unplugged" in r.getMessage() for r in caplog.records) == 1


def test_start_returns_once_the_first_round_is_done(read_store):
    collected = threading.Event()

    class Once(CollectorPlugin):
        interval = None

        def collect(self):
            time.sleep(0.2)  # (the environment's listing takes about 0.03 s)
            collected.set()
            return {"value": "collected"}

    registry = with_collector("once", Once)
    try:
        exp = tracelet.start_logging("first round", config=OFF)
        assert collected.is_set(), "its work is done before the training loop begins"
        tracelet.stop_logging()
    finally:
        registry.manager.unregister(name="once-collector")
    assert read_store().params(exp.id) == {"once/value": "collected"}


def test_a_first_round_slower_than_the_wait_finishes_while_the_run_goes_on(read_store, monkeypatch):
    from tracelet.core import collecting

    monkeypatch.setattr(collecting, "FIRST_ROUND_WAIT", 0.1)
    release = threading.Event()

    class Slow(CollectorPlugin):
        interval = None

        def collect(self):
            release.wait(10)
            return {"value": "late"}

    registry = with_collector("slow", Slow)
    try:
        exp = tracelet.start_logging("slow first round", config=OFF)
        exp.log_metric("loss", 1.0, 0)  # start returned with the collector still busy
        release.set()
        tracelet.stop_logging()
    finally:
        registry.manager.unregister(name="slow-collector")
    assert read_store().params(exp.id) == {"slow/value": "late"}
    assert [p[:3] for p in read_store().metrics(exp.id)] == [("loss", 1.0, 0)]


def test_a_collector_still_busy_at_stop_is_left_behind_without_a_report(
    read_store, caplog, monkeypatch
):
    from tracelet.core import collecting
    from tracelet.core.collecting import CollectorRunner

    monkeypatch.setattr(collecting, "FIRST_ROUND_WAIT", 0.05)
    sampling, release = threading.Event(), threading.Event()

    class Slow(CollectorPlugin):
        interval = 60.0

        def collect(self):
            sampling.set()
            release.wait(5)
            return {"value": 1.0}

    exp = tracelet.Experiment("slow", settings=TraceletSettings.load({"track_system": False}))
    exp.start()
    runner = CollectorRunner(exp, {"slow": Slow()})
    runner.start()
    assert sampling.wait(5)
    with caplog.at_level(logging.WARNING, "tracelet"):
        runner.stop(timeout=0.05)  # gives up waiting: the sample comes after the run ends
        exp.stop()
        release.set()
        runner._thread.join(5)
    assert not runner._thread.is_alive()
    assert [r.getMessage() for r in caplog.records if "slow" in r.getMessage()] == []
    assert "slow/value" not in {p[0] for p in read_store().metrics(exp.id)}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["x", "--token", "t0k"], ["x", "--token", "***"]),
        (["x", "--password=pw"], ["x", "--password=***"]),
        (["x", "WANDB_API_KEY=abc"], ["x", "WANDB_API_KEY=***"]),
        (["x", "--uri", "postgres://u:p@h/db"], ["x", "--uri", "postgres://***@h/db"]),
        (["x", "--keyboard", "qwerty"], ["x", "--keyboard", "qwerty"]),
    ],
)
def test_command_line_redaction(argv, expected):
    assert redact_argv(argv) == expected


def test_one_shot_collectors_run_even_in_a_very_short_run(read_store):
    with tracelet.start_logging("blink", config={"track_system": False, "track_git": False}) as e:
        pass
    assert "env/python" in read_store().params(e.id)


SECRETS = {
    "MY_API_KEY": "sk-planted-api-key",
    "HF_TOKEN": "hf_planted_token",
    "SERVICE_CREDENTIAL": "planted-credential",
    "DATABASE_URL": "postgres://bob:planted-db-password@db.internal/app",
    "WEBHOOK": "https://hooks.example/x?token=planted-query-token",
}
"""Environment variables planted with secrets (the value's secret part is the needle)."""
NEEDLES = [
    "sk-planted-api-key",
    "hf_planted_token",
    "planted-credential",
    "planted-db-password",
    "planted-query-token",
    "planted-argv-secret",
    "planted-git-password",
    "planted-param-secret",
]


def files_containing(root, needles):
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [(str(path), n) for n in needles if n.encode() in data]
    return found


def test_planted_secrets_reach_neither_the_store_nor_mlflow(
    tmp_path, read_store, mlflow_server, monkeypatch
):
    """Secrets in environment variables, the command line, a git remote and parameters:
    the environment and git are recorded, the secrets are not, anywhere."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", "planted-argv-secret"])
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    remote = "https://alice:planted-git-password@git.example/repo.git"
    subprocess.run([*git, "remote", "add", "origin", remote], check=True)
    options = {"tracking_uri": mlflow_server.url, "git_repo_path": str(repo)}
    with tracelet.start_logging("secrets", backend=["local", "mlflow"], config=options) as exp:
        exp.log_params({"db_password": "planted-param-secret", "lr": 0.1})
    store = read_store()
    params = store.params(exp.id)
    assert params["git/remote"] == "https://***@git.example/repo.git"
    assert "--api-key ***" in params["env/argv"]
    variables = {t.name: t.text for t in store.texts(exp.id)}["env/variables"]
    assert "MY_API_KEY=***" in variables
    assert "DATABASE_URL=postgres://***@db.internal/app" in variables
    assert "PATH=" in variables  # the rest of the environment is there
    store.close()
    for root in (read_store().path, mlflow_server.root):  # where each keeps everything
        assert root.is_dir()
        assert files_containing(root, ["MY_API_KEY=***"]), f"no environment in {root}"
        assert files_containing(root, NEEDLES) == []


def test_printed_output_is_kept_as_the_run_s_texts_and_reaches_mlflow(
    read_store, mlflow_server, capsys
):
    """What the terminal gets is unchanged (colours, a progress bar's carriage returns);
    the run keeps it as a terminal shows it."""
    from mlflow.tracking import MlflowClient

    settings = TraceletSettings.load({"track_env": False, "track_git": False})
    config = {"tracking_uri": mlflow_server.url, "track_system": False}
    exp = tracelet.Experiment(
        "printed", backend=["local", "mlflow"], settings=settings, options=config
    )
    with exp:
        print("epoch 1: \x1b[32mgood\x1b[0m")
        for percent in (10, 50, 100):
            print(f"\rtraining {percent}%", end="", file=sys.stderr)
        print(file=sys.stderr)
        print("done")
    shown = capsys.readouterr()
    # unchanged (MLflow itself prints a link to the run when it ends, after the capture)
    assert shown.out.startswith("epoch 1: \x1b[32mgood\x1b[0m\ndone\n")
    assert shown.err == "\rtraining 10%\rtraining 50%\rtraining 100%\n"
    texts = {t.name: t.text for t in read_store().texts(exp.id)}
    assert texts == {"stdout": "epoch 1: good\ndone\n", "stderr": "training 100%\n"}
    client = MlflowClient(mlflow_server.url)
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`tracelet.run_id` = '{exp.id}'",
    )
    import mlflow

    folder = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="tracelet/texts/stdout",
        tracking_uri=mlflow_server.url,
    )
    (only,) = Path(folder).iterdir()
    assert only.read_text() == texts["stdout"]
    assert type(sys.stdout).__name__ != "TeeStream"  # unwrapped


@pytest.mark.parametrize(
    "off",
    [{"track_stdout": False}, ExperimentConfig(track_stdout=False)],
    ids=["setting", "experiment config"],
)
def test_track_stdout_off_keeps_nothing(off, read_store, capsys):
    settings = TraceletSettings.load({"track_env": False, "track_git": False})
    if isinstance(off, ExperimentConfig):
        exp = tracelet.Experiment("quiet", settings=settings, config=off)
    else:
        exp = tracelet.Experiment("quiet", settings=settings, options=off)
    with exp:
        print("not kept")
    assert capsys.readouterr().out == "not kept\n"
    assert read_store().texts(exp.id) == []


def dirty_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    committed_repo(repo)
    (repo / "train.py").write_text("print('x')\n")
    git(repo, "add", "train.py")
    return repo


OPTION_CASES = {
    # option: (value, what the run shows then), in the store and in MLflow
    "track_system": (False, {"system": False}),
    "collect_system_metrics": (False, {"system": False}),
    "track_system_metrics": (False, {"system": False}),
    "metrics_interval": (0.1, {"samples": 3}),
    "system_metrics_interval": (0.1, {"samples": 3}),
    "track_git": (False, {"git": False}),
    "track_git_info": (False, {"git": False}),
    "track_env": (False, {"env": False}),
    "track_environment": (False, {"env": False}),
    "track_args": (False, {"argv": False, "env": True}),
    "include_uncommitted_changes": (True, {"diff": True, "git": True}),
    "collect_gpu_metrics": (False, {"gpu": False, "system": True}),
    "track_stdout": (False, {"stdout": False}),
    "track_metrics": (False, {"loss": False, "git": True}),
    "track_checkpoints": (False, {"checkpoints": False, "loss": True}),
}
ENVIRONMENT_FORMS = ("track_system", "metrics_interval", "track_git", "track_env", "track_args")
"""The options the spec also names as ``TRACELET_*`` variables."""
CONFIG_FIELDS = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name in OPTION_CASES]
"""The ``track_*`` fields of :class:`ExperimentConfig`, given as one."""
FORMS = (
    [(o, "config") for o in OPTION_CASES]
    + [(o, "environment") for o in ENVIRONMENT_FORMS]
    + [(o, "ExperimentConfig") for o in CONFIG_FIELDS]
)


def shown_in(tool, run_id):
    metrics = {name for name, *_ in tool.metrics(run_id)}
    params = tool.params(run_id)
    return {
        "system": any(m.startswith("system/") for m in metrics),
        "gpu": any(m.startswith("system/gpu") for m in metrics),
        "loss": "loss" in metrics,
        "git": any(p.startswith("git/") for p in params),
        "env": any(p.startswith("env/") for p in params),
        "argv": "env/argv" in params,
        "diff": "git/uncommitted.diff" in tool.artifacts(run_id),
        "stdout": any(name == "stdout" for name, *_ in tool.texts(run_id)),
    }


def run_with_option(option, value, form, mlflow_url, repo, monkeypatch):
    """A run to the store and MLflow with ``option`` given in ``form``, as a user runs."""
    settings = {"git_repo_path": str(repo), "checkpoint_interval": 2}
    config = None
    if form == "environment":
        monkeypatch.setenv(f"TRACELET_{option.upper()}", str(value).lower())
    elif form == "config":
        settings[option] = value
    else:
        config = ExperimentConfig(**{option: value})
    with tracelet.Experiment(
        "option",
        backend=["local", "mlflow"],
        config=config,
        options=settings,
        backend_options={"mlflow": {"tracking_uri": mlflow_url}},
    ) as exp:
        print("printed while the run is active")
        for step in range(4):
            exp.log_metric("loss", 1.0 / (step + 1))
            exp.step()
        time.sleep(0.7)  # (the one-shot collectors take about 0.15 s first)
    return exp


@pytest.mark.slow  # (the module's collectors mark: every collector on, as a user gets them)
@pytest.mark.parametrize(("option", "form"), FORMS)
def test_each_tracking_option_reads_back_from_the_store_and_mlflow(
    option, form, tmp_path, store_path, read_store, mlflow_server, monkeypatch
):
    from tracelet.testing.local import LocalReadBack
    from tracelet_mlflow.testing import MlflowReadBack

    value, expected = OPTION_CASES[option]
    exp = run_with_option(option, value, form, mlflow_server.url, dirty_repo(tmp_path), monkeypatch)
    tools = {"local": LocalReadBack(store_path), "mlflow": MlflowReadBack(mlflow_server.url)}
    for where, tool in tools.items():
        shown = shown_in(tool, exp.id)
        for key, wanted in expected.items():
            if key in shown:
                assert shown[key] is wanted, (where, key)
    if "checkpoints" in expected:  # (checkpoints are the local store's own)
        assert bool(read_store().checkpoints(exp.id)) is expected["checkpoints"]
    if "samples" in expected:
        local, mlflow = (
            sorted(p[1:3] for p in tool.metrics(exp.id) if p[0] == "system/cpu_percent")
            for tool in tools.values()
        )
        assert len(local) >= expected["samples"]
        assert mlflow == local


def test_an_old_single_file_egg_info_is_listed_by_name_and_version(tmp_path):
    from importlib import metadata

    from tracelet.collectors.environment import _name_and_version

    (tmp_path / "oldegg-1.0.egg-info").write_text(
        "Metadata-Version: 1.0\nname: oldegg\nVersion: 1.0\nSummary: distutils era\n"
    )
    (distribution,) = metadata.distributions(path=[str(tmp_path)])
    assert _name_and_version(distribution) == ("oldegg", "1.0")


def test_a_collectors_numpy_values_reach_checkpoints_as_numbers(read_store):
    """A sample's values are kept as the floats they were logged as: a checkpoint's
    ``system_metrics`` holds numbers (a NumPy scalar was written as its str)."""
    import numpy as np

    class Sensor(CollectorPlugin):
        interval = 0.05

        def collect(self):
            return {"temperature": np.float32(42.5), "fans": np.int64(3)}

    registry = with_collector("sensor", Sensor)
    try:
        exp = tracelet.start_logging("numpy sensor", config={**OFF, "checkpoint_interval": 1})
        deadline = time.monotonic() + 5
        while "sensor/fans" not in exp.latest_system and time.monotonic() < deadline:
            time.sleep(0.01)
        assert {type(v) for v in exp.latest_system.values()} == {float}
        exp.log_metric("loss", 1.0)
        exp.step()
        tracelet.stop_logging()
    finally:
        registry.manager.unregister(name="sensor-collector")
    system = read_store().checkpoints(exp.id)[-1]["system_metrics"]
    assert system == {"sensor/temperature": 42.5, "sensor/fans": 3.0}
