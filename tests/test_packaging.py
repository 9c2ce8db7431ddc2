"""The six distributions as a user gets them: wheels and sdists built with ``python -m build``,
installed from that folder into clean virtual environments, used from outside the source tree.

- Every distribution builds an sdist and, from that sdist, a wheel: its own version, the
  MIT license file, its README as the description, ``py.typed`` and its entry point.
  tracelet-core's wheel is this platform's, with ``log_metric``'s hot path compiled (its C
  source in the sdist only); the others are pure Python.
- ``pip install --find-links <dist> "tracelet-core[mlflow,wandb,clearml,aim,torch]"`` into
  a fresh venv, then a script run from a folder outside the checkout logs one run to the
  local store, MLflow (SQLite), W&B (offline), ClearML (offline) and Aim (a local
  repository), with a torch tensor as a metric value, and reads each tool back; the
  installed ``log_metric`` is the compiled one.
- Built where no C compiler works, tracelet-core's wheel has no compiled module, and the
  installed ``log_metric`` is the pure-Python one.
- ``pip install --find-links <dist> "tracelet-core[mlflow]"`` alone (``mlflow-skinny``,
  the README's command) refuses a SQLite tracking URI at start, naming the extra.

torch is pinned (a constraints file) to the build the development set-up installed, the CPU
wheel ``torch==2.13.0`` that lies on these machines' disk: with a bare range pip would take
a CUDA build of several GB. Installs skip byte-compiling (``--no-compile``), which otherwise
takes most of their time.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "tracelet-core": "tracelet",
    "tracelet-mlflow": "tracelet_mlflow",
    "tracelet-wandb": "tracelet_wandb",
    "tracelet-clearml": "tracelet_clearml",
    "tracelet-aim": "tracelet_aim",
    "tracelet-torch": "tracelet_torch",
}
EVERYTHING = "tracelet-core[mlflow,wandb,clearml,aim,torch]"
TORCH = "2.13.0"


def version_of(distribution: str) -> str:
    """``__version__`` as the package's ``__init__`` writes it (the build reads it there)."""
    init = ROOT / distribution / "src" / PACKAGES[distribution] / "__init__.py"
    return re.search(r'^__version__ = "([^"]+)"', init.read_text("utf-8"), re.M).group(1)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would point Python at the checkout or the dev venv,
    or at a tool's state from this test process. (ClearML leaves ``CLEARML_PROC_MASTER_ID``
    and ``TRAINS_PROC_MASTER_ID`` in the environment of a process that ran a task; a child
    that inherits them takes itself for that task's subprocess and writes no session.)"""
    tools = ("WANDB_", "CLEARML_", "TRAINS_", "MLFLOW_", "TRACELET_")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", *tools))
    }
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **extra}


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run ``command``; a failure shows its output."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def torch_pin() -> str:
    """The torch build of the development set-up (``2.13.0+cpu``: the wheel on disk)."""
    try:
        installed = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        installed = TORCH
    assert installed.startswith(TORCH), f"the dev set-up pins torch=={TORCH}, found {installed}"
    return installed


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution's sdist and wheel (built from the sdist), in one folder."""
    folder = tmp_path_factory.mktemp("dist")

    def build(distribution: str) -> str:
        command = [sys.executable, "-m", "build", "--outdir", str(folder), str(ROOT / distribution)]
        result = run(command, env=clean_env())
        return result.stdout + result.stderr

    with ThreadPoolExecutor(3) as pool:
        logs = dict(zip(PACKAGES, pool.map(build, PACKAGES), strict=True))
    for distribution, log in logs.items():
        assert "Building wheel from sdist" in log, f"{distribution}: the wheel is not the sdist's"
    return folder


def make_venv(folder: Path, dist: Path, requirement: str) -> Path:
    """A fresh venv (no system site packages) with ``requirement`` installed from ``dist``;
    returns its python."""
    run([sys.executable, "-m", "venv", str(folder)], env=clean_env())
    python = folder / "bin" / "python"
    constraints = folder / "constraints.txt"
    constraints.write_text(f"torch=={torch_pin()}\n")
    command = [str(python), "-m", "pip", "install", "--no-compile", "-c", str(constraints)]
    run([*command, "--find-links", str(dist), requirement], env=clean_env(), cwd=folder)
    return python


@pytest.fixture(scope="module")
def venvs(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two clean venvs, made at the same time: every extra, and ``[mlflow]`` alone."""
    root = tmp_path_factory.mktemp("venvs")
    wanted = {"all": EVERYTHING, "mlflow": "tracelet-core[mlflow]"}
    with ThreadPoolExecutor(2) as pool:
        made = {name: pool.submit(make_venv, root / name, dist, wanted[name]) for name in wanted}
        return {name: future.result() for name, future in made.items()}


def test_every_distribution_has_its_sdist_and_wheel(dist):
    for distribution, package in PACKAGES.items():
        version = version_of(distribution)
        name = distribution.replace("-", "_")
        project = tomllib.loads((ROOT / distribution / "pyproject.toml").read_text("utf-8"))
        (wheel_file,) = dist.glob(f"{name}-{version}-*.whl")
        with zipfile.ZipFile(wheel_file) as wheel:
            files = set(wheel.namelist())
            info = f"{name}-{version}.dist-info"
            metadata = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
            entry_points = wheel.read(f"{info}/entry_points.txt").decode()
            license_text = wheel.read(f"{info}/licenses/LICENSE").decode()
        assert f"{package}/py.typed" in files, distribution
        assert f"{package}/__init__.py" in files, distribution
        assert not any("__pycache__" in f or f.startswith("tests/") for f in files), distribution
        assert metadata["Name"] == distribution
        assert metadata["Version"] == version
        assert metadata["License-Expression"] == "MIT"
        assert metadata["Summary"] == project["project"]["description"]
        assert "Typing :: Typed" in metadata.get_all("Classifier")
        readme = (ROOT / distribution / "README.md").read_text("utf-8")
        assert metadata.get_payload().strip() == readme.strip()
        assert metadata["Description-Content-Type"] == "text/markdown"
        assert license_text.startswith("MIT License")
        if distribution == "tracelet-core":
            assert "tracelet = tracelet.cli:main" in entry_points
            extras = set(metadata.get_all("Provides-Extra"))
            assert {"mlflow", "wandb", "clearml", "aim", "torch"} <= extras
            python = f"cp{sys.version_info.major}{sys.version_info.minor}"
            platform = re.sub(r"[-.]", "_", sysconfig.get_platform())
            assert wheel_file.name.endswith(f"-{python}-{python}-{platform}.whl"), wheel_file.name
            assert sorted(f for f in files if f.startswith("tracelet/core/_hotpath.")) == [
                f"tracelet/core/_hotpath{sysconfig.get_config_var('EXT_SUFFIX')}",
                "tracelet/core/_hotpath.pyi",  # its types, for a checker
            ]
            assert "ui/static/app.js" in {f.removeprefix("tracelet/") for f in files}
        else:
            assert wheel_file.name.endswith("-py3-none-any.whl"), wheel_file.name
            assert f"= {package}.plugin" in entry_points, distribution
        with tarfile.open(dist / f"{name}-{version}.tar.gz") as sdist:
            members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
        for needed in ("LICENSE", "README.md", "pyproject.toml", f"src/{package}/py.typed"):
            assert needed in members, f"{distribution} sdist lacks {needed}"
        if distribution == "tracelet-core":
            assert {"setup.py", "src/tracelet/core/_hotpath.c"} <= members


SMOKE = r'''
"""Log one run to every installed backend, then read each tool back."""
import json
import os
import site
import sys
from pathlib import Path

import torch

import tracelet
from tracelet.storage import LocalStore

root = Path(sys.argv[1])
here = Path(tracelet.__file__).resolve()
sites = [Path(p).resolve() for p in site.getsitepackages()]
assert any(here.is_relative_to(p) for p in sites), f"tracelet from {here}, not {sites}"
assert not here.is_relative_to(Path(sys.argv[2]).resolve()), here
assert torch.version.cuda is None, f"a CUDA build of torch: {torch.__version__}"
from tracelet.core._hotpath import HotPath

assert tracelet.Experiment.log_metric is HotPath.log_metric, "not the compiled hot path"

uri = f"sqlite:///{root / 'mlflow.db'}"
config = {
    "store_path": str(root / "store"),
    "track_system": False,
    "track_env": False,
    "track_git": False,
    "mlflow": {"tracking_uri": uri, "experiment_name": "packaging"},
    "wandb": {"dir": str(root / "wandb"), "mode": "offline"},
    "clearml": {"offline": True},
    "aim": {"repo_path": str(root / "aim")},
}
backends = ["local", "mlflow", "wandb", "clearml", "aim"]
with tracelet.start_logging("smoke", project="packaging", backend=backends, config=config) as exp:
    exp.log_params({"lr": 0.01, "batch_size": 32})
    for step in range(5):
        exp.log_metric("loss", 1.0 / (step + 1), step)
    exp.log_metric("tensor", torch.tensor(0.25), 5)  # tracelet-torch turns it into a float

expected = sorted([("loss", 1.0 / (s + 1), s) for s in range(5)] + [("tensor", 0.25, 5)])
found = {}

store = LocalStore(root / "store")
assert store.get_run(exp.id).status.value == "finished", store.get_run(exp.id).status
found["local"] = sorted((n, v, s) for n, v, s, _ in store.metrics(exp.id))
store.close()

from mlflow import MlflowClient

client = MlflowClient(uri)
(mlflow_run,) = client.search_runs(
    [client.get_experiment_by_name("packaging").experiment_id],
    filter_string=f"tags.`tracelet.run_id` = '{exp.id}'",
)
assert mlflow_run.data.params == {"lr": "0.01", "batch_size": "32"}, mlflow_run.data.params
found["mlflow"] = sorted(
    (name, m.value, m.step)
    for name in ("loss", "tensor")
    for m in client.get_metric_history(mlflow_run.info.run_id, name)
)

from tracelet_wandb.testing import WandbReadBack

wandb_points = WandbReadBack(root / "wandb" / "wandb").metrics(exp.id)
found["wandb"] = sorted((n, v, s) for n, v, s, _ in wandb_points)

from tracelet_clearml.testing import ClearmlReadBack

clearml = ClearmlReadBack(Path(os.environ["CLEARML_CACHE_DIR"]) / "offline")
found["clearml"] = sorted((n, v, s) for n, v, s, _ in clearml.metrics(exp.id))

from aim import Repo

repo = Repo.from_path(str(root / "aim"))
(aim_run,) = [r for r in repo.iter_runs() if (r.get("tracelet") or {}).get("run_id") == exp.id]
aim_points = []
for name, context, _ in aim_run.iter_sequence_info_by_type("float"):
    steps, (values, _, _) = aim_run.get_metric(name, context).data.items_list()
    aim_points += [(name, v, s) for s, v in zip(steps, values)]
found["aim"] = sorted(aim_points)

offline = Path(os.environ["CLEARML_CACHE_DIR"]) / "offline"
sessions = {str(f.relative_to(offline)): f.stat().st_size for f in offline.glob("*/*")}
for backend, points in found.items():
    assert points == expected, f"{backend}: {points} (ClearML's sessions: {sessions})"
print(json.dumps({"run": exp.id, "backends": sorted(found)}))
'''


def test_the_wheels_install_with_every_extra_and_log_to_each_backend(venvs, tmp_path):
    python = venvs["all"]
    outside = tmp_path / "project"  # the user's project: nowhere near the checkout
    outside.mkdir()
    assert not outside.resolve().is_relative_to(ROOT)
    script = outside / "smoke.py"
    script.write_text(SMOKE, "utf-8")
    env = clean_env(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_ERROR_REPORTING="false",
        WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"),
        WANDB_CACHE_DIR=str(tmp_path / "wandb-cache"),
        WANDB_DATA_DIR=str(tmp_path / "wandb-data"),
        CLEARML_OFFLINE_MODE="1",
        CLEARML_CACHE_DIR=str(tmp_path / "clearml-cache"),
        HOME=str(tmp_path / "home"),
    )
    result = run([str(python), str(script), str(outside), str(ROOT)], cwd=outside, env=env)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["backends"] == ["aim", "clearml", "local", "mlflow", "wandb"]

    listed = run(
        [str(python.parent / "tracelet"), "list", "--store", str(outside / "store"), "--json"],
        cwd=outside,
        env=env,
    )
    assert summary["run"] in listed.stdout
    assert "smoke" in listed.stdout
    pip_list = run([str(python), "-m", "pip", "list", "--format", "json"], env=env).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(pip_list)}
    for distribution in PACKAGES:
        assert installed[distribution] == version_of(distribution)
    assert installed["torch"] == torch_pin()
    assert "mlflow" not in installed, "the [mlflow] extra needs only mlflow-skinny"


MLFLOW_ONLY = r"""
import sys
import tracelet

uri = f"sqlite:///{sys.argv[1]}/mlflow.db"
for config in ({"tracking_uri": uri}, {}):  # the URI given, and MLflow's own default
    try:
        tracelet.start_logging("x", backend="mlflow", config={**config, "track_git": False})
    except tracelet.ConfigurationError as error:
        print(error)
    else:
        raise SystemExit(f"{config}: no ConfigurationError")
try:
    tracelet.start_logging("x", backend="wandb")
except tracelet.ConfigurationError as error:
    print(error)
"""


def test_mlflow_skinny_refuses_a_sqlite_uri_at_start_naming_the_extra(venvs, tmp_path):
    python = venvs["mlflow"]
    installed = run([str(python), "-m", "pip", "list", "--format", "json"]).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"tracelet-core", "tracelet-mlflow", "mlflow-skinny"} <= names
    assert not names & {"mlflow", "sqlalchemy", "tracelet-wandb", "torch"}, names
    script = tmp_path / "refused.py"
    script.write_text(MLFLOW_ONLY, "utf-8")
    env = clean_env(HOME=str(tmp_path / "home"))
    result = run([str(python), str(script), str(tmp_path)], cwd=tmp_path, env=env)
    given, default, wandb = result.stdout.strip().splitlines()
    for message in (given, default):
        assert 'pip install "tracelet-mlflow[local]"' in message, message
        assert "no module named 'sqlalchemy'" in message, message
    assert f"sqlite:///{tmp_path}/mlflow.db" in given
    assert "unknown backend 'wandb'" in wandb
    assert "pip install ./tracelet-wandb" in wandb
    assert "pip install tracelet-wandb --find-links dist" in wandb


WITHOUT_C = r"""
import sys
import tracelet
from tracelet.core.experiment import Experiment, HotPath
from tracelet.storage import LocalStore

assert tracelet.__file__.startswith(sys.argv[2]), tracelet.__file__
assert HotPath is object and Experiment.log_metric is Experiment._log_metric_checked
config = {"store_path": sys.argv[1], "track_git": False, "track_system": False}
with tracelet.start_logging("no-c", config=config) as exp:
    for step in range(100):
        exp.log_metric("loss", 1.0 / (step + 1), step)
print(len(LocalStore(sys.argv[1]).metrics(exp.id)))
"""


def test_tracelet_core_installs_without_a_c_compiler_and_logs_in_pure_python(tmp_path):
    """No working C compiler (``CC=false``): the build goes on, its wheel has no compiled
    module, and ``log_metric`` is the pure-Python one."""
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT / "tracelet-core")]
    run(command, env=clean_env(CC="false"))
    (wheel_file,) = dist.glob("tracelet_core-*.whl")
    with zipfile.ZipFile(wheel_file) as wheel:
        compiled = [f for f in wheel.namelist() if f.startswith("tracelet/core/_hotpath.")]
    assert compiled == ["tracelet/core/_hotpath.pyi"]
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target)]
    run([*pip, str(wheel_file)], env=clean_env())
    env = clean_env(PYTHONPATH=str(target), HOME=str(tmp_path / "home"))
    script = [sys.executable, "-c", WITHOUT_C, str(tmp_path / "store"), str(target)]
    assert run(script, env=env, cwd=tmp_path).stdout.strip() == "100"
