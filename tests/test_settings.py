"""Settings: environment variables, tracelet.yaml, priority, validation, aliases, backend options.

The spec is the user's documents under ``shared/spec``: ``tracelet-configuration.md``
(methods, per-backend options, "Advanced Configuration", priority order, validation) and
``tracelet-core-api-full.txt`` (``TraceletSettings``, ``ExperimentConfig`` and the
environment-variable table). Backends other than ``local`` are replaced by in-memory fakes
named ``mlflow`` and ``wandb`` so that the spec's examples run unchanged.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import tracelet
import tracelet.core.registry as registry_module
from tracelet import ConfigurationError, ExperimentConfig, TraceletSettings
from tracelet.core.registry import PluginRegistry, default_registry
from tracelet.exceptions import TraceletException
from tracelet.hookspecs import hookimpl
from tracelet.plugins import BackendPlugin, BackendRegistration, Option
from tracelet.records import Batch, RunInfo, RunStatus
from tracelet.settings import read_config_file, split_config

pytestmark = pytest.mark.collectors  # these tests check the real defaults

# Option names the fake backends declare (a subset of what the real plugins will accept).
FAKE_OPTIONS: dict[str, set[str]] = {
    "mlflow": {"tracking_uri", "experiment_name", "run_name", "tags"},
    "wandb": {"project", "entity", "tags", "name", "mode"},
}
# The option sets used to call split_config directly (as in the brief).
SPLIT_OPTIONS: dict[str, set[str]] = {
    "mlflow": {"tracking_uri", "experiment_name", "run_name", "tags"},
    "wandb": {"project", "entity", "tags"},
}

VIAS = ["load", "start_logging"]


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def resolve(via: str, **arguments: Any) -> TraceletSettings:
    """Settings as resolved by ``load``, the constructor, or ``tracelet.start_logging``."""
    if via == "load":
        return TraceletSettings.load(arguments)
    if via == "constructor":
        return TraceletSettings(**arguments)
    project = arguments.pop("project", None)
    exp = tracelet.start_logging(project=project, config=arguments)
    assert exp.project == exp.settings.project
    return exp.settings


# -- fake backends ---------------------------------------------------------------------


class FakeBackend(BackendPlugin):
    """Keeps the options it was initialised with (and the run it was started for)."""

    backend_name = "fake"
    received: dict[str, dict[str, Any]] = {}
    runs: dict[str, RunInfo] = {}

    def initialize(self, config: Mapping[str, Any]) -> None:
        super().initialize(config)
        given = {k: v for k, v in config.items() if v is not None}  # the rest: defaults
        FakeBackend.received[self.backend_name] = given

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        FakeBackend.runs[self.backend_name] = run

    def log_batch(self, batch: Batch) -> None:
        pass

    def finish_run(self, status: RunStatus) -> None:
        pass


class FakeMlflow(FakeBackend):
    backend_name = "mlflow"


class FakeWandb(FakeBackend):
    backend_name = "wandb"


def untyped(names: set[str]) -> list[Option]:
    """Options of any type (these tests are about where options go, not their types)."""
    return [Option(name, object) for name in sorted(names)]


class FakeBackendsPlugin:
    """A plugin object registering the fake ``mlflow`` and ``wandb`` backends."""

    @hookimpl
    def tracelet_register_backends(self) -> list[BackendRegistration]:
        return [
            BackendRegistration("mlflow", FakeMlflow, options=untyped(FAKE_OPTIONS["mlflow"])),
            BackendRegistration("wandb", FakeWandb, options=untyped(FAKE_OPTIONS["wandb"])),
        ]


@pytest.fixture
def fake_backends(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, Any]]]:
    """Fake ``mlflow``/``wandb`` backends in the default registry; yields what they received.

    The default registry is swapped for a fresh one without entry points, so that real
    tracelet-mlflow / tracelet-wandb distributions, once installed, cannot collide with them.
    """
    monkeypatch.setattr(registry_module, "_default", PluginRegistry(entry_points_group=None))
    registry = default_registry()
    registry.register(FakeBackendsPlugin(), name="test-fake-backends")
    FakeBackend.received.clear()
    FakeBackend.runs.clear()
    yield FakeBackend.received
    tracelet.stop_logging()
    registry.manager.unregister(name="test-fake-backends")
    FakeBackend.received.clear()
    FakeBackend.runs.clear()


# -- 1. environment variables ------------------------------------------------------------

ENV_CASES = [
    ("project", "TRACELET_PROJECT", "vision", "vision"),
    ("backend", "TRACELET_BACKEND", "mlflow", ["mlflow"]),
    ("backend", "TRACELET_BACKEND", "mlflow, wandb", ["mlflow", "wandb"]),
    ("track_system", "TRACELET_TRACK_SYSTEM", "false", False),
    ("track_git", "TRACELET_TRACK_GIT", "0", False),
    ("track_env", "TRACELET_TRACK_ENV", "no", False),
    ("enable_automagic", "TRACELET_ENABLE_AUTOMAGIC", "true", True),
    ("automagic_frameworks", "TRACELET_AUTOMAGIC_FRAMEWORKS", "pytorch", {"pytorch"}),
    (
        "automagic_frameworks",
        "TRACELET_AUTOMAGIC_FRAMEWORKS",
        "pytorch, lightning,pytorch",
        {"pytorch", "lightning"},
    ),
    ("enable_artifacts", "TRACELET_ENABLE_ARTIFACTS", "1", True),
    ("automagic_artifacts", "TRACELET_AUTOMAGIC_ARTIFACTS", "yes", True),
    ("watch_filesystem", "TRACELET_WATCH_FILESYSTEM", "on", True),
    ("artifact_watch_dirs", "TRACELET_ARTIFACT_WATCH_DIRS", "checkpoints", ["checkpoints"]),
    (
        "artifact_watch_dirs",
        "TRACELET_ARTIFACT_WATCH_DIRS",
        "checkpoints, outputs/models",
        ["checkpoints", "outputs/models"],
    ),
    ("metrics_interval", "TRACELET_METRICS_INTERVAL", "2.5", 2.5),
    ("metrics_interval", "TRACELET_METRICS_INTERVAL", "30", 30.0),
    ("store_path", "TRACELET_STORE_PATH", "/data/runs", "/data/runs"),
]


@pytest.mark.parametrize(
    ("field", "variable", "text", "expected"),
    ENV_CASES,
    ids=[f"{c[1]}={c[2]}" for c in ENV_CASES],
)
def test_environment_variable_sets_field(monkeypatch, field, variable, text, expected):
    assert getattr(TraceletSettings(), field) != expected, "the case must differ from the default"
    monkeypatch.setenv(variable, text)
    value = getattr(TraceletSettings.load(), field)
    assert value == expected
    assert type(value) is type(expected)


def test_environment_variable_names_follow_the_spec_table():
    from tracelet.settings import env_name

    table = {
        "project": "TRACELET_PROJECT",
        "backend": "TRACELET_BACKEND",
        "track_system": "TRACELET_TRACK_SYSTEM",
        "track_git": "TRACELET_TRACK_GIT",
        "track_env": "TRACELET_TRACK_ENV",
        "enable_automagic": "TRACELET_ENABLE_AUTOMAGIC",
        "automagic_frameworks": "TRACELET_AUTOMAGIC_FRAMEWORKS",
        "enable_artifacts": "TRACELET_ENABLE_ARTIFACTS",
        "automagic_artifacts": "TRACELET_AUTOMAGIC_ARTIFACTS",
        "watch_filesystem": "TRACELET_WATCH_FILESYSTEM",
        "artifact_watch_dirs": "TRACELET_ARTIFACT_WATCH_DIRS",
        "metrics_interval": "TRACELET_METRICS_INTERVAL",
    }
    assert {field: env_name(field) for field in table} == table
    assert set(table) <= set(TraceletSettings.field_names())


BOOL_FIELDS = [
    "track_system",
    "track_git",
    "track_env",
    "enable_automagic",
    "enable_artifacts",
    "automagic_artifacts",
    "watch_filesystem",
]
BOOL_TEXTS = [
    ("1", True),
    ("true", True),
    ("yes", True),
    ("on", True),
    ("TRUE", True),
    (" Yes ", True),
    ("0", False),
    ("false", False),
    ("no", False),
    ("off", False),
    ("False", False),
    ("OFF", False),
]


@pytest.mark.parametrize("field", BOOL_FIELDS)
@pytest.mark.parametrize(("text", "expected"), BOOL_TEXTS, ids=[t for t, _ in BOOL_TEXTS])
def test_boolean_environment_variables_parse(monkeypatch, field, text, expected):
    monkeypatch.setenv(f"TRACELET_{field.upper()}", text)
    assert getattr(TraceletSettings.load(), field) is expected


def test_environment_is_read_by_start_logging(monkeypatch, tmp_path):
    values = {
        "TRACELET_PROJECT": "env-project",
        "TRACELET_BACKEND": "local",
        "TRACELET_TRACK_SYSTEM": "off",
        "TRACELET_TRACK_GIT": "no",
        "TRACELET_TRACK_ENV": "0",
        "TRACELET_ENABLE_AUTOMAGIC": "yes",
        "TRACELET_AUTOMAGIC_FRAMEWORKS": "pytorch,lightning",
        "TRACELET_ENABLE_ARTIFACTS": "true",
        "TRACELET_AUTOMAGIC_ARTIFACTS": "1",
        "TRACELET_WATCH_FILESYSTEM": "on",
        "TRACELET_ARTIFACT_WATCH_DIRS": "ckpt,out",
        "TRACELET_METRICS_INTERVAL": "5",
        "TRACELET_STORE_PATH": str(tmp_path / "custom-store"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    exp = tracelet.start_logging("env-run")
    s = exp.settings
    assert exp.project == "env-project"
    assert s.backend == ["local"]
    assert (s.track_system, s.track_git, s.track_env) == (False, False, False)
    assert s.enable_automagic is True
    assert s.automagic_frameworks == {"pytorch", "lightning"}
    assert (s.enable_artifacts, s.automagic_artifacts, s.watch_filesystem) == (True, True, True)
    assert s.artifact_watch_dirs == ["ckpt", "out"]
    assert s.metrics_interval == 5.0
    assert s.store_path == str(tmp_path / "custom-store")
    assert (tmp_path / "custom-store").is_dir()
    assert not (tmp_path / ".tracelet").exists()


def test_environ_argument_replaces_os_environ(monkeypatch):
    monkeypatch.setenv("TRACELET_PROJECT", "from-os")
    assert TraceletSettings.load(environ={"TRACELET_PROJECT": "given"}).project == "given"
    assert TraceletSettings.load(environ={}).project == TraceletSettings().project


def test_unrelated_environment_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("PROJECT", "nope")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://localhost:5000")
    assert TraceletSettings.load() == TraceletSettings()


# -- 2. priority ---------------------------------------------------------------------------


@pytest.mark.parametrize("via", VIAS)
def test_defaults_when_nothing_is_set(via):
    settings = resolve(via)
    assert settings == TraceletSettings()
    assert settings.backend == ["local"]
    assert settings.store_path == ".tracelet"
    assert settings.track_system is True
    assert settings.metrics_interval == 10.0
    assert settings.automagic_frameworks == set()
    assert settings.artifact_watch_dirs == []


@pytest.mark.parametrize("via", VIAS)
def test_file_beats_defaults(via, tmp_path):
    write_yaml(
        tmp_path / "tracelet.yaml",
        "project: from-file\ntrack_git: false\nmetrics_interval: 3\n"
        "automagic_frameworks: [pytorch]\n",
    )
    settings = resolve(via)
    assert settings.project == "from-file"
    assert settings.track_git is False
    assert settings.metrics_interval == 3.0
    assert settings.automagic_frameworks == {"pytorch"}
    assert settings.track_system is True  # not in the file: the default


@pytest.mark.parametrize("via", VIAS)
def test_environment_beats_file(via, tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-file\nmetrics_interval: 3\n")
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    monkeypatch.setenv("TRACELET_METRICS_INTERVAL", "7")
    settings = resolve(via)
    assert settings.project == "from-env"
    assert settings.metrics_interval == 7.0


@pytest.mark.parametrize("via", VIAS)
def test_arguments_beat_environment(via, tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-file\nmetrics_interval: 3\n")
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    monkeypatch.setenv("TRACELET_METRICS_INTERVAL", "7")
    settings = resolve(via, project="from-args", metrics_interval=11)
    assert settings.project == "from-args"
    assert settings.metrics_interval == 11.0


def test_layers_merge_key_by_key(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "track_git: false\nproject: from-file\n")
    monkeypatch.setenv("TRACELET_TRACK_ENV", "false")
    exp = tracelet.start_logging(config={"metrics_interval": 4})
    assert exp.project == "from-file"
    assert exp.settings.track_git is False
    assert exp.settings.track_env is False
    assert exp.settings.metrics_interval == 4.0
    assert exp.settings.track_system is True


def test_start_logging_project_argument_beats_config_environment_and_file(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-file\n")
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    assert tracelet.start_logging(config={"project": "from-config"}).project == "from-config"
    exp = tracelet.start_logging(project="from-arg", config={"project": "from-config"})
    assert exp.project == "from-arg"


def test_start_logging_backend_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("TRACELET_BACKEND", "nonexistent")
    with pytest.raises(ConfigurationError, match="nonexistent"):
        tracelet.start_logging()
    exp = tracelet.start_logging(backend="local")
    assert exp.settings.backend == ["local"]
    assert [b.name for b in exp.backends] == ["local"]


def test_run_name_priority(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "experiment_name: from-file\n")
    assert tracelet.start_logging().name == "from-file"
    monkeypatch.setenv("TRACELET_EXPERIMENT_NAME", "from-env")
    assert tracelet.start_logging().name == "from-env"
    assert tracelet.start_logging("from-arg").name == "from-arg"


def test_settings_argument_replaces_environment_and_file(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-file\ntrack_git: false\n")
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    given = TraceletSettings(project="from-settings", metrics_interval=2.0)
    exp = tracelet.start_logging(settings=given)
    assert exp.project == "from-settings"
    assert exp.settings.track_git is True
    assert exp.settings.metrics_interval == 2.0
    exp = tracelet.start_logging(project="arg", settings=given, config={"track_env": False})
    assert exp.project == "arg"
    assert exp.settings.track_env is False
    assert given.project == "from-settings"
    assert given.track_env is True


@pytest.mark.parametrize("via", VIAS)
def test_config_file_named_by_TRACELET_CONFIG(via, tmp_path, monkeypatch):
    elsewhere = tmp_path / "conf"
    elsewhere.mkdir()
    write_yaml(elsewhere / "prod.yml", "project: from-config-var\nwatch_filesystem: true\n")
    monkeypatch.setenv("TRACELET_CONFIG", str(elsewhere / "prod.yml"))
    settings = resolve(via)
    assert settings.project == "from-config-var"
    assert settings.watch_filesystem is True


def test_TRACELET_CONFIG_beats_the_working_directory_file(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-cwd\ntrack_git: false\n")
    write_yaml(tmp_path / "other.yaml", "project: from-config-var\n")
    monkeypatch.setenv("TRACELET_CONFIG", str(tmp_path / "other.yaml"))
    settings = TraceletSettings.load()
    assert settings.project == "from-config-var"
    assert settings.track_git is True  # the working-directory file is not read at all


def test_environment_beats_TRACELET_CONFIG_file(tmp_path, monkeypatch):
    write_yaml(tmp_path / "other.yaml", "project: from-file\n")
    monkeypatch.setenv("TRACELET_CONFIG", str(tmp_path / "other.yaml"))
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    assert tracelet.start_logging().project == "from-env"


@pytest.mark.parametrize("via", VIAS)
def test_TRACELET_CONFIG_naming_a_missing_file_raises(via, tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "tracelet.yaml"
    monkeypatch.setenv("TRACELET_CONFIG", str(missing))
    with pytest.raises(ConfigurationError) as error:
        resolve(via)
    message = str(error.value)
    assert str(missing) in message
    assert "TRACELET_CONFIG" in message.replace(str(missing), "")  # tmp_path has the test name
    assert tracelet.get_active_experiment() is None


def test_explicit_config_file_argument(tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "project: from-cwd\n")
    write_yaml(tmp_path / "explicit.yaml", "project: explicit\n")
    monkeypatch.setenv("TRACELET_PROJECT", "from-env")
    assert TraceletSettings.load(config_file=tmp_path / "explicit.yaml").project == "from-env"
    monkeypatch.delenv("TRACELET_PROJECT")
    assert TraceletSettings.load(config_file=tmp_path / "explicit.yaml").project == "explicit"
    with pytest.raises(ConfigurationError, match=r"missing\.yaml"):
        TraceletSettings.load(config_file=tmp_path / "missing.yaml")


def test_empty_config_file_gives_defaults(tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", "# nothing configured yet\n")
    assert TraceletSettings.load() == TraceletSettings()


def test_spec_yaml_example_is_read(tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", SPEC_YAML)
    settings = TraceletSettings.load()
    assert settings.backend == ["mlflow"]
    assert settings.project == "my_project"
    assert settings.experiment_name == "my_experiment"


# -- 3. bad input ----------------------------------------------------------------------------


def test_configuration_error_is_a_value_error():
    assert issubclass(ConfigurationError, ValueError)
    assert issubclass(ConfigurationError, TraceletException)
    with pytest.raises(ValueError, match="projct"):
        TraceletSettings.load({"projct": "x"})


TYPOS = [
    ("projct", "project"),
    ("track_sytem", "track_system"),
    ("metrics_intervl", "metrics_interval"),
    ("collect_system_metric", "collect_system_metrics"),
]


@pytest.mark.parametrize(("typo", "suggestion"), TYPOS)
@pytest.mark.parametrize("via", VIAS)
def test_unknown_key_raises_with_suggestion(via, typo, suggestion):
    with pytest.raises(ConfigurationError) as error:
        resolve(via, **{typo: "x"})
    message = str(error.value)
    assert repr(typo) in message
    assert repr(suggestion) in message
    assert tracelet.get_active_experiment() is None


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(ConfigurationError, match="zzzzqqq") as error:
        TraceletSettings.load({"zzzzqqq": 1})
    assert "did you mean" not in str(error.value)


def test_unknown_key_in_config_file_names_file_and_key(tmp_path):
    path = write_yaml(tmp_path / "tracelet.yaml", "projct: vision\n")
    with pytest.raises(ConfigurationError) as error:
        TraceletSettings.load()
    message = str(error.value)
    assert str(path) in message
    assert "'projct'" in message
    assert "'project'" in message


def test_unknown_key_in_replace_raises_with_suggestion():
    with pytest.raises(ConfigurationError, match="'project'"):
        TraceletSettings().replace(projct="x")


WRONG_TYPES = [
    ("metrics_interval", "ten", "number"),
    ("metrics_interval", True, "number"),
    ("metrics_interval", -1, "number"),
    ("track_system", "yes", "bool"),
    ("track_git", 1, "bool"),
    ("enable_automagic", None, "bool"),
    ("project", 3, "string"),
    ("store_path", None, "string"),
    ("backend", 5, "list of strings"),
    ("automagic_frameworks", [1, 2], "list of strings"),
    ("artifact_watch_dirs", {"a": 1}, "list of strings"),
]


@pytest.mark.parametrize(
    ("key", "value", "expected"), WRONG_TYPES, ids=[f"{k}={v!r}" for k, v, _ in WRONG_TYPES]
)
@pytest.mark.parametrize("via", [*VIAS, "constructor"])
def test_wrong_type_raises_naming_key_and_type(via, key, value, expected):
    with pytest.raises(ConfigurationError) as error:
        resolve(via, **{key: value})
    message = str(error.value)
    assert repr(key) in message
    assert expected in message
    assert tracelet.get_active_experiment() is None


BAD_ENV = [
    ("TRACELET_TRACK_SYSTEM", "maybe", "bool"),
    ("TRACELET_ENABLE_ARTIFACTS", "2", "bool"),
    ("TRACELET_WATCH_FILESYSTEM", "enabled", "bool"),
    ("TRACELET_METRICS_INTERVAL", "ten", "number"),
    ("TRACELET_METRICS_INTERVAL", "-5", "number"),
]


@pytest.mark.parametrize(("variable", "text", "expected"), BAD_ENV)
@pytest.mark.parametrize("via", VIAS)
def test_bad_environment_value_raises_naming_variable_and_type(
    via, monkeypatch, variable, text, expected
):
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigurationError) as error:
        resolve(via)
    message = str(error.value)
    assert variable in message
    assert expected in message
    assert repr(text) in message


def test_wrong_type_in_config_file_names_key(tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", "metrics_interval: ten\n")
    with pytest.raises(ConfigurationError, match=r"'metrics_interval'.*number"):
        TraceletSettings.load()


@pytest.mark.parametrize(
    "text",
    ["project: [unclosed\n", "project: x\n  bad: indentation\n", "key: 'unterminated\n"],
    ids=["unclosed-list", "bad-indent", "unterminated-quote"],
)
@pytest.mark.parametrize("via", VIAS)
def test_malformed_yaml_raises_naming_file(via, tmp_path, text):
    path = write_yaml(tmp_path / "tracelet.yaml", text)
    with pytest.raises(ConfigurationError) as error:
        resolve(via)
    assert str(path) in str(error.value)


@pytest.mark.parametrize(
    "text", ["- project\n- vision\n", "just a string\n", "42\n"], ids=["list", "str", "int"]
)
@pytest.mark.parametrize("via", VIAS)
def test_yaml_that_is_not_a_mapping_raises_naming_file(via, tmp_path, monkeypatch, text):
    path = write_yaml(tmp_path / "settings.yml", text)
    monkeypatch.setenv("TRACELET_CONFIG", str(path))
    with pytest.raises(ConfigurationError) as error:
        resolve(via)
    message = str(error.value)
    assert str(path) in message
    assert "mapping" in message.replace(str(path), "")  # tmp_path has the test name


@pytest.mark.parametrize("via", VIAS)
def test_a_backend_section_that_is_not_a_mapping_raises_naming_it(via, tmp_path):
    path = write_yaml(tmp_path / "tracelet.yaml", "mlflow: 5\n")
    with pytest.raises(ConfigurationError, match="the 'mlflow' section must hold") as error:
        resolve(via)
    assert str(path) in str(error.value)


def test_spec_validation_example_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="nonexistent"):
        tracelet.start_logging(backend="nonexistent")
    assert tracelet.get_active_experiment() is None


def test_failed_configuration_leaves_active_run_untouched():
    first = tracelet.start_logging("first")
    with pytest.raises(ConfigurationError):
        tracelet.start_logging("second", config={"metrics_interval": "ten"})
    assert tracelet.get_active_experiment() is first
    assert first.is_running


# -- 4. documented aliases -------------------------------------------------------------------

ALIASES = [
    ("collect_system_metrics", False, "track_system", False),
    ("system_metrics_interval", 30, "metrics_interval", 30.0),
    ("collect_gpu_metrics", False, "track_gpu", False),
    ("track_git_info", False, "track_git", False),
    ("git_repo_path", "src/repo", "git_repo_path", "src/repo"),
    ("include_uncommitted_changes", True, "include_uncommitted_changes", True),
]


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"), ALIASES, ids=[a[0] for a in ALIASES]
)
@pytest.mark.parametrize("via", VIAS)
def test_documented_alias_maps_to_field(via, key, value, field, expected):
    assert getattr(TraceletSettings(), field) != expected
    settings = resolve(via, **{key: value})
    assert getattr(settings, field) == expected
    assert type(getattr(settings, field)) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"), ALIASES, ids=[a[0] for a in ALIASES]
)
def test_documented_alias_in_config_file(tmp_path, key, value, field, expected):
    write_yaml(tmp_path / "tracelet.yaml", f"{key}: {str(value).lower()}\n")
    assert getattr(TraceletSettings.load(), field) == expected


def test_alias_with_wrong_type_raises():
    with pytest.raises(ConfigurationError, match="bool") as error:
        tracelet.start_logging(config={"collect_system_metrics": "yes"})
    assert "track_system" in str(error.value) or "collect_system_metrics" in str(error.value)


def test_alias_in_replace():
    settings = TraceletSettings().replace(collect_gpu_metrics=False, system_metrics_interval=2)
    assert settings.track_gpu is False
    assert settings.metrics_interval == 2.0


def test_short_form_init_takes_settings_and_aliases(monkeypatch):
    monkeypatch.setenv("TRACELET_METRICS_INTERVAL", "7")
    exp = tracelet.init(project="nlp", run_name="r1", collect_system_metrics=False, track_env=False)
    assert exp.project == "nlp"
    assert exp.name == "r1"
    assert exp.settings.track_system is False
    assert exp.settings.track_env is False
    assert exp.settings.metrics_interval == 7.0
    with pytest.raises(ConfigurationError, match="'project'"):
        tracelet.init(project="nlp", projct="typo")


def test_spec_system_metrics_example(fake_backends):
    exp = tracelet.start_logging(
        backend="mlflow",
        config={
            "collect_system_metrics": True,
            "system_metrics_interval": 30,  # seconds
            "collect_gpu_metrics": True,
        },
    )
    assert exp.settings.track_system is True
    assert exp.settings.metrics_interval == 30.0
    assert exp.settings.track_gpu is True
    assert fake_backends == {"mlflow": {}}


def test_spec_system_metrics_example_overrides_environment(fake_backends, monkeypatch):
    monkeypatch.setenv("TRACELET_TRACK_SYSTEM", "false")
    monkeypatch.setenv("TRACELET_METRICS_INTERVAL", "5")
    exp = tracelet.start_logging(
        backend="mlflow",
        config={"collect_system_metrics": True, "system_metrics_interval": 30},
    )
    assert exp.settings.track_system is True
    assert exp.settings.metrics_interval == 30.0


def test_spec_git_example(fake_backends):
    exp = tracelet.start_logging(
        backend="mlflow",
        config={
            "track_git_info": True,
            "git_repo_path": ".",
            "include_uncommitted_changes": True,
        },
    )
    assert exp.settings.track_git is True
    assert exp.settings.git_repo_path == "."
    assert exp.settings.include_uncommitted_changes is True
    assert fake_backends == {"mlflow": {}}


# -- 5. split_config ---------------------------------------------------------------------------


def test_split_nested_sections():
    core, run, options = split_config(
        {"mlflow": {"tracking_uri": "http://localhost:5000"}, "wandb": {"project": "multi"}},
        SPLIT_OPTIONS,
    )
    assert core == {}
    assert run == {}
    assert options == {
        "mlflow": {"tracking_uri": "http://localhost:5000"},
        "wandb": {"project": "multi"},
    }


def test_split_prefixed_keys():
    core, run, options = split_config(
        {"mlflow_tracking_uri": "http://localhost:5000", "wandb_project": "my-wandb-project"},
        SPLIT_OPTIONS,
    )
    assert core == {}
    assert run == {}
    assert options == {
        "mlflow": {"tracking_uri": "http://localhost:5000"},
        "wandb": {"project": "my-wandb-project"},
    }


def test_split_plain_keys_go_to_every_backend_declaring_them():
    core, run, options = split_config(
        {"tracking_uri": "http://localhost:5000", "entity": "team"}, SPLIT_OPTIONS
    )
    assert core == {}
    assert run == {}
    assert options == {
        "mlflow": {"tracking_uri": "http://localhost:5000"},
        "wandb": {"entity": "team"},
    }


def test_split_plain_key_with_one_backend():
    _, _, options = split_config(
        {"tracking_uri": "http://localhost:5000"}, {"mlflow": SPLIT_OPTIONS["mlflow"]}
    )
    assert options == {"mlflow": {"tracking_uri": "http://localhost:5000"}}


def test_split_core_keys():
    config = {"track_system": False, "metrics_interval": 5, "project": "p", "backend": ["mlflow"]}
    core, run, options = split_config(config, SPLIT_OPTIONS)
    assert core == config
    assert run == {}
    assert options["mlflow"] == {}
    # wandb declares "project": a plain key reaches every selected backend that declares it
    assert options["wandb"] == {"project": "p"}


def test_split_core_aliases_stay_core():
    core, run, options = split_config(
        {"collect_system_metrics": False, "system_metrics_interval": 30}, SPLIT_OPTIONS
    )
    assert run == {}
    assert options == {"mlflow": {}, "wandb": {}}
    settings = TraceletSettings.load(core)
    assert settings.track_system is False
    assert settings.metrics_interval == 30.0


def test_split_run_keys():
    core, run, options = split_config({"tags": ["a", "b"], "run_name": "r1"}, SPLIT_OPTIONS)
    assert core == {}
    assert run == {"tags": ["a", "b"], "run_name": "r1"}
    assert options == {
        "mlflow": {"tags": ["a", "b"], "run_name": "r1"},
        "wandb": {"tags": ["a", "b"]},
    }


def test_split_run_keys_without_backends():
    core, run, options = split_config({"tags": {"team": "ml"}, "run_name": "r1"}, {})
    assert (core, run, options) == ({}, {"tags": {"team": "ml"}, "run_name": "r1"}, {})


def test_split_every_selected_backend_has_an_entry():
    _, _, options = split_config({}, SPLIT_OPTIONS)
    assert options == {"mlflow": {}, "wandb": {}}


def test_split_forms_combine_for_one_backend():
    config = {
        "mlflow": {"experiment_name": "nested"},
        "mlflow_run_name": "prefixed",
        "tracking_uri": "plain",
        "track_git": False,
        "wandb_entity": "team",
    }
    core, run, options = split_config(config, SPLIT_OPTIONS)
    assert core == {"track_git": False}
    assert run == {}
    assert options == {
        "mlflow": {"experiment_name": "nested", "run_name": "prefixed", "tracking_uri": "plain"},
        "wandb": {"entity": "team"},
    }


def test_split_does_not_modify_its_input():
    nested = {"tracking_uri": "u"}
    config = {"mlflow": nested, "entity": "e"}
    _, _, options = split_config(config, SPLIT_OPTIONS)
    options["mlflow"]["experiment_name"] = "changed"
    assert nested == {"tracking_uri": "u"}
    assert config == {"mlflow": {"tracking_uri": "u"}, "entity": "e"}


def test_split_option_of_unselected_backend_is_unknown():
    with pytest.raises(ConfigurationError, match="'tracking_uri'"):
        split_config({"tracking_uri": "u"}, {"wandb": SPLIT_OPTIONS["wandb"]})
    with pytest.raises(ConfigurationError, match="'mlflow_tracking_uri'"):
        split_config({"mlflow_tracking_uri": "u"}, {"wandb": SPLIT_OPTIONS["wandb"]})


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("mlflow_tracking_ur", "mlflow_tracking_uri"),
        ("mlfow_tracking_uri", "mlflow_tracking_uri"),
        ("tracking_ur", "tracking_uri"),
        ("wandb_entty", "wandb_entity"),
        ("entiti", "entity"),
        ("projct", "project"),
        ("run_nme", "run_name"),
        ("tgs", "tags"),
    ],
)
def test_split_unknown_key_suggests_close_match(typo, suggestion):
    with pytest.raises(ConfigurationError) as error:
        split_config({typo: "x"}, SPLIT_OPTIONS)
    message = str(error.value)
    assert repr(typo) in message
    assert repr(suggestion) in message


# -- 6. start_logging with (fake) backends ------------------------------------------------------

SPEC_YAML = """\
# tracelet.yaml
backend: mlflow
project: my_project
experiment_name: my_experiment

# Backend-specific configuration
mlflow:
  tracking_uri: http://localhost:5000
  experiment_name: "ML Experiments"

clearml:
  project_name: "Tracelet Experiments"
  task_name: "Training Run"

wandb:
  project: "tracelet-experiments"
  entity: "your-username"

aim:
  repo_path: "./aim_logs"
  experiment_name: "Tracelet Experiments"
"""


def test_spec_advanced_configuration_example(fake_backends):
    experiment = tracelet.start_logging(
        exp_name="advanced_experiment",
        project="research_project",
        backend=["mlflow", "wandb"],
        config={
            "track_system": True,
            "track_git": True,
            "track_env": True,
            "metrics_interval": 10.0,
            "mlflow_tracking_uri": "http://localhost:5000",
            "wandb_project": "my-wandb-project",
        },
    )
    current_exp = tracelet.get_active_experiment()
    assert current_exp is experiment
    assert current_exp.experiment_id == experiment.id
    assert [b.name for b in current_exp.backends] == ["mlflow", "wandb"]
    assert experiment.name == "advanced_experiment"
    assert experiment.project == "research_project"  # wandb_project is wandb's, not Tracelet's
    assert experiment.settings.backend == ["mlflow", "wandb"]
    assert experiment.settings.metrics_interval == 10.0
    assert fake_backends == {
        "mlflow": {"tracking_uri": "http://localhost:5000"},
        "wandb": {"project": "my-wandb-project"},
    }
    tracelet.stop_logging()
    assert FakeBackend.runs["mlflow"].project == "research_project"
    assert FakeBackend.runs["wandb"].name == "advanced_experiment"


def test_spec_multi_backend_nested_example(fake_backends):
    exp = tracelet.start_logging(
        backend=["mlflow", "wandb"],
        config={
            "mlflow": {"tracking_uri": "http://localhost:5000"},
            "wandb": {"project": "multi-backend-experiment"},
        },
    )
    assert fake_backends == {
        "mlflow": {"tracking_uri": "http://localhost:5000"},
        "wandb": {"project": "multi-backend-experiment"},
    }
    assert exp.project == TraceletSettings().project


def test_spec_code_configuration_plain_keys(fake_backends):
    exp = tracelet.start_logging(
        exp_name="my_experiment",
        project="my_project",
        backend="mlflow",
        config={
            "tracking_uri": "http://localhost:5000",
            "experiment_name": "Deep Learning Experiments",
        },
    )
    assert fake_backends == {
        "mlflow": {
            "tracking_uri": "http://localhost:5000",
            "experiment_name": "Deep Learning Experiments",
        }
    }
    assert exp.name == "my_experiment"
    assert exp.project == "my_project"


def test_spec_mlflow_example_run_keys_reach_backend_and_run(fake_backends):
    exp = tracelet.start_logging(
        backend="mlflow",
        config={
            "tracking_uri": "http://localhost:5000",
            "experiment_name": "My Experiments",
            "run_name": "run_001",
            "tags": {"team": "ml", "version": "v1.0"},
        },
    )
    assert fake_backends["mlflow"] == {
        "tracking_uri": "http://localhost:5000",
        "experiment_name": "My Experiments",
        "run_name": "run_001",
        "tags": {"team": "ml", "version": "v1.0"},
    }
    assert exp.name == "run_001"


def test_spec_wandb_example(fake_backends):
    exp = tracelet.start_logging(
        backend="wandb",
        config={
            "project": "tracelet-experiments",
            "entity": "your-username",
            "name": "experiment_001",
            "tags": ["pytorch", "baseline"],
            "mode": "online",  # or "offline"
        },
    )
    assert fake_backends == {
        "wandb": {
            "project": "tracelet-experiments",
            "entity": "your-username",
            "name": "experiment_001",
            "tags": ["pytorch", "baseline"],
            "mode": "online",
        }
    }
    assert exp.tags == ["pytorch", "baseline"]


def test_spec_interface_example_with_entity_and_tags(fake_backends):
    exp = tracelet.start_logging(
        exp_name="hyperparameter_tuning",
        project="optimization",
        backend="wandb",
        config={"entity": "my_team", "tags": ["pytorch", "resnet"]},
    )
    assert fake_backends == {"wandb": {"entity": "my_team", "tags": ["pytorch", "resnet"]}}
    assert exp.project == "optimization"
    assert exp.tags == ["pytorch", "resnet"]


def test_spec_configuration_based_setup(fake_backends):
    settings = TraceletSettings(
        project="ml_pipeline",
        backend=["mlflow", "wandb"],
        track_system=True,
        metrics_interval=10.0,
    )
    experiment = tracelet.start_logging(exp_name="pipeline_run_001", settings=settings)
    assert experiment.project == "ml_pipeline"
    assert [b.name for b in experiment.backends] == ["mlflow", "wandb"]
    assert fake_backends == {"mlflow": {}, "wandb": {}}


def test_backend_from_environment(fake_backends, monkeypatch):
    monkeypatch.setenv("TRACELET_BACKEND", "mlflow")
    monkeypatch.setenv("TRACELET_PROJECT", "my_default_project")
    exp = tracelet.start_logging(config={"tracking_uri": "http://localhost:5000"})
    assert [b.name for b in exp.backends] == ["mlflow"]
    assert exp.project == "my_default_project"
    assert fake_backends == {"mlflow": {"tracking_uri": "http://localhost:5000"}}


def test_backend_from_config_dict(fake_backends):
    exp = tracelet.start_logging(config={"backend": "wandb", "entity": "team"})
    assert [b.name for b in exp.backends] == ["wandb"]
    assert fake_backends == {"wandb": {"entity": "team"}}


def test_spec_yaml_example_reaches_backend(fake_backends, tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", SPEC_YAML)
    exp = tracelet.start_logging()
    assert [b.name for b in exp.backends] == ["mlflow"]
    assert exp.project == "my_project"
    assert exp.name == "my_experiment"
    assert fake_backends == {
        "mlflow": {"tracking_uri": "http://localhost:5000", "experiment_name": "ML Experiments"}
    }


def test_yaml_sections_of_unselected_backends_are_not_delivered(fake_backends, tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", SPEC_YAML)
    tracelet.start_logging(backend="wandb")
    assert fake_backends == {
        "wandb": {"project": "tracelet-experiments", "entity": "your-username"}
    }


@pytest.mark.parametrize(
    "config",
    [
        {"mlflow": {"experiment_name": "from-config"}, "wandb": {"entity": "config-team"}},
        {"mlflow_experiment_name": "from-config", "wandb_entity": "config-team"},
        {"experiment_name": "from-config", "entity": "config-team"},
    ],
    ids=["nested", "prefixed", "plain"],
)
def test_config_beats_yaml_sections_key_by_key(fake_backends, tmp_path, config):
    write_yaml(
        tmp_path / "tracelet.yaml",
        "mlflow:\n  tracking_uri: http://file:5000\n  experiment_name: from-file\n"
        "wandb:\n  entity: file-team\n  project: file-project\n",
    )
    tracelet.start_logging("run", backend=["mlflow", "wandb"], config=config)
    assert fake_backends == {
        "mlflow": {"tracking_uri": "http://file:5000", "experiment_name": "from-config"},
        "wandb": {"entity": "config-team", "project": "file-project"},
    }


def test_yaml_sections_from_TRACELET_CONFIG_reach_backend(fake_backends, tmp_path, monkeypatch):
    write_yaml(tmp_path / "tracelet.yaml", "mlflow:\n  tracking_uri: http://cwd:5000\n")
    path = write_yaml(tmp_path / "prod.yaml", "mlflow:\n  tracking_uri: http://prod:5000\n")
    monkeypatch.setenv("TRACELET_CONFIG", str(path))
    tracelet.start_logging(backend="mlflow")
    assert fake_backends == {"mlflow": {"tracking_uri": "http://prod:5000"}}


def test_yaml_sections_apply_with_explicit_settings(fake_backends, tmp_path):
    write_yaml(tmp_path / "tracelet.yaml", "mlflow:\n  tracking_uri: http://file:5000\n")
    tracelet.start_logging(settings=TraceletSettings(backend="mlflow"))
    assert fake_backends == {"mlflow": {"tracking_uri": "http://file:5000"}}


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("mlflow_tracking_ur", "mlflow_tracking_uri"),
        ("tracking_ur", "tracking_uri"),
        ("wandb_projet", "wandb_project"),
    ],
)
def test_start_logging_unknown_backend_option_suggests(fake_backends, typo, suggestion):
    with pytest.raises(ConfigurationError) as error:
        tracelet.start_logging(backend=["mlflow", "wandb"], config={typo: "x"})
    assert repr(typo) in str(error.value)
    assert repr(suggestion) in str(error.value)
    assert fake_backends == {}
    assert tracelet.get_active_experiment() is None


# -- 7. constructor, replace, ExperimentConfig --------------------------------------------------


def test_constructor_single_backend_string_gives_list():
    assert TraceletSettings(backend="mlflow").backend == ["mlflow"]
    assert TraceletSettings(backend=("mlflow", "wandb")).backend == ["mlflow", "wandb"]
    assert TraceletSettings(backend=["wandb"]).backend == ["wandb"]


def test_constructor_normalises_collections():
    settings = TraceletSettings(
        automagic_frameworks=["pytorch", "pytorch", "lightning"], artifact_watch_dirs=("a", "b")
    )
    assert settings.automagic_frameworks == {"pytorch", "lightning"}
    assert isinstance(settings.automagic_frameworks, set)
    assert settings.artifact_watch_dirs == ["a", "b"]
    assert isinstance(settings.artifact_watch_dirs, list)
    assert TraceletSettings(metrics_interval=3).metrics_interval == 3.0
    assert isinstance(TraceletSettings(metrics_interval=3).metrics_interval, float)


def test_mutable_defaults_are_not_shared():
    first = TraceletSettings()
    first.backend.append("wandb")
    first.artifact_watch_dirs.append("ckpt")
    first.automagic_frameworks.add("pytorch")
    second = TraceletSettings()
    assert second.backend == ["local"]
    assert second.artifact_watch_dirs == []
    assert second.automagic_frameworks == set()


def test_replace_returns_checked_copy():
    original = TraceletSettings(project="a")
    changed = original.replace(project="b", backend="wandb", track_git=False)
    assert (changed.project, changed.backend, changed.track_git) == ("b", ["wandb"], False)
    assert (original.project, original.backend, original.track_git) == ("a", ["local"], True)
    with pytest.raises(ConfigurationError, match=r"'metrics_interval'.*number"):
        original.replace(metrics_interval="ten")
    with pytest.raises(ConfigurationError, match=r"'track_git'.*bool"):
        original.replace(track_git="no")


def test_settings_has_the_spec_fields():
    settings = TraceletSettings()
    expected_types = {
        "project": str,
        "backend": list,
        "track_system": bool,
        "track_git": bool,
        "track_env": bool,
        "metrics_interval": float,
        "enable_automagic": bool,
        "automagic_frameworks": set,
        "enable_artifacts": bool,
        "automagic_artifacts": bool,
        "watch_filesystem": bool,
        "artifact_watch_dirs": list,
    }
    for field, kind in expected_types.items():
        assert isinstance(getattr(settings, field), kind), field
    assert set(expected_types) <= set(TraceletSettings.field_names())


EXPERIMENT_CONFIG_DEFAULTS = {
    "track_metrics": True,
    "track_environment": True,
    "track_args": True,
    "track_stdout": True,
    "track_checkpoints": True,
    "track_system_metrics": True,
    "track_git": True,
    "enable_automagic": False,
    "automagic_frameworks": None,
    "enable_artifacts": False,
    "automagic_artifacts": False,
    "artifact_watch_dirs": None,
    "watch_filesystem": False,
}


def test_experiment_config_fields_and_defaults():
    parameters = inspect.signature(ExperimentConfig).parameters
    assert list(parameters) == list(EXPERIMENT_CONFIG_DEFAULTS)
    assert {n: p.default for n, p in parameters.items()} == EXPERIMENT_CONFIG_DEFAULTS
    config = ExperimentConfig()
    assert {n: getattr(config, n) for n in EXPERIMENT_CONFIG_DEFAULTS} == EXPERIMENT_CONFIG_DEFAULTS


def test_experiment_config_takes_values():
    config = ExperimentConfig(
        track_git=False,
        enable_automagic=True,
        automagic_frameworks={"pytorch"},
        artifact_watch_dirs=["ckpt"],
        watch_filesystem=True,
    )
    assert config.track_git is False
    assert config.enable_automagic is True
    assert config.automagic_frameworks == {"pytorch"}
    assert config.artifact_watch_dirs == ["ckpt"]
    assert config.watch_filesystem is True
    assert config.track_metrics is True


def test_experiment_config_is_a_dataclass_as_specified():
    # The spec declares ExperimentConfig with @dataclass: dataclasses helpers must work on it.
    config = ExperimentConfig(track_git=False)
    assert dataclasses.is_dataclass(config)
    assert [f.name for f in dataclasses.fields(ExperimentConfig)] == list(
        EXPERIMENT_CONFIG_DEFAULTS
    )
    assert dataclasses.asdict(config) == {**EXPERIMENT_CONFIG_DEFAULTS, "track_git": False}
    assert dataclasses.replace(config, watch_filesystem=True).watch_filesystem is True


def test_empty_environment_variables_count_as_unset():
    environ = {"TRACELET_TRACK_SYSTEM": "", "TRACELET_BACKEND": "  ", "TRACELET_PROJECT": ""}
    settings = TraceletSettings.load(environ=environ)
    assert settings.track_system is True
    assert settings.backend == ["local"]
    assert settings.project == "default"


def test_alias_and_field_given_together_is_an_error():
    with pytest.raises(ConfigurationError, match="another name for 'track_system'"):
        TraceletSettings.load({"track_system": True, "collect_system_metrics": False})


def test_empty_backend_section_in_the_config_file_is_allowed(tmp_path):
    (tmp_path / "tracelet.yaml").write_text("project: from-file\nmlflow:\n")
    found = read_config_file(environ={})
    assert found.sections == {"mlflow": {}}
    assert TraceletSettings.load(environ={}).project == "from-file"
