"""Settings: one resolver for arguments, ``TRACELET_*`` variables, ``tracelet.yaml`` and defaults.

Priority, highest first: function arguments, environment variables, the configuration file
(``tracelet.yaml`` in the working directory, or the file named by ``TRACELET_CONFIG``),
defaults. Every value is checked against its field's type; a bad key or value raises
:class:`~tracelet.exceptions.ConfigurationError` naming the key and what it expects.
"""

from __future__ import annotations

import abc
import copy
import dataclasses
import math
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from tracelet.exceptions import ConfigurationError, did_you_mean

CONFIG_FILE_NAME = "tracelet.yaml"
CONFIG_FILE_ENV = "TRACELET_CONFIG"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECTIONS = {"local", "mlflow", "wandb", "clearml", "aim"}
"""Backend names whose ``tracelet.yaml`` section may be empty (``mlflow:`` alone)."""


class _Kind(abc.ABC):
    """How one kind of setting is parsed from the environment and checked."""

    name: str

    @abc.abstractmethod
    def check(self, key: str, value: Any) -> Any:
        """Return ``value`` normalised, or raise ConfigurationError naming ``key``."""

    def from_env(self, key: str, text: str) -> Any:
        return self.check(key, text)

    def fail(self, key: str, value: Any) -> ConfigurationError:
        return ConfigurationError(
            f"setting {key!r} expects {self.name}, got {type(value).__name__} {value!r}"
        )


class _Bool(_Kind):
    name = "a bool (true/false)"

    def check(self, key: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise self.fail(key, value)

    def from_env(self, key: str, text: str) -> bool:
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise self.fail(key, text)


class _Number(_Kind):
    def __init__(self, kind: type, minimum: float) -> None:
        self.kind = kind
        self.minimum = minimum
        self.name = f"{'an int' if kind is int else 'a finite number'} >= {minimum}"

    def check(self, key: str, value: Any) -> Any:
        ok_types = (int,) if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, ok_types):
            raise self.fail(key, value)
        if not math.isfinite(value) or value < self.minimum:
            raise self.fail(key, value)
        return self.kind(value)

    def from_env(self, key: str, text: str) -> Any:
        try:
            return self.check(key, self.kind(text.strip()))
        except ValueError:
            raise self.fail(key, text) from None


class _Str(_Kind):
    def __init__(self, optional: bool = False) -> None:
        self.optional = optional
        self.name = "a string or null" if optional else "a string"

    def check(self, key: str, value: Any) -> str | None:
        if isinstance(value, str) or (value is None and self.optional):
            return value
        raise self.fail(key, value)


class _Names(_Kind):
    """A list (or set) of strings; a single string or a comma-separated one also works."""

    def __init__(self, unique: bool = False) -> None:
        self.unique = unique
        self.name = "a list of strings"

    def check(self, key: str, value: Any) -> list[str] | set[str]:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple | set | frozenset) or not all(
            isinstance(item, str) for item in value
        ):
            raise self.fail(key, value)
        return set(value) if self.unique else list(value)


def _setting(default: Any, kind: _Kind, doc: str) -> Any:
    def convert(value: Any, _self: Any, field: attrs.Attribute) -> Any:
        return kind.check(field.name, value)

    mutable = isinstance(default, list | set)
    return attrs.field(
        default=attrs.Factory(lambda: copy.copy(default)) if mutable else default,
        converter=attrs.Converter(convert, takes_self=True, takes_field=True),
        metadata={"kind": kind, "doc": doc},
    )


@attrs.define(kw_only=True)
class TraceletSettings:
    """Tracelet's global settings. Each field ``x`` can also be set as ``TRACELET_X``."""

    project: str = _setting("default", _Str(), "Project (group of runs) when none is given.")
    backend: list[str] = _setting(["local"], _Names(), "Backends to send to.")
    experiment_name: str | None = _setting(None, _Str(optional=True), "Default run name.")
    store_path: str = _setting(".tracelet", _Str(), "Folder of the local store (the journal).")
    track_system: bool = _setting(True, _Bool(), "Sample CPU, memory and GPU use.")
    track_gpu: bool = _setting(True, _Bool(), "Include NVIDIA GPUs in system samples.")
    track_git: bool = _setting(True, _Bool(), "Record the git commit and branch.")
    track_env: bool = _setting(True, _Bool(), "Record Python, platform and packages.")
    metrics_interval: float = _setting(10.0, _Number(float, 0.1), "Seconds between samples.")
    git_repo_path: str = _setting(".", _Str(), "Repository whose state is recorded.")
    include_uncommitted_changes: bool = _setting(False, _Bool(), "Record the git diff too.")
    enable_automagic: bool = _setting(False, _Bool(), "Capture hyperparameters automatically.")
    automagic_frameworks: set[str] = _setting(set(), _Names(unique=True), "Frameworks to hook.")
    enable_artifacts: bool = _setting(False, _Bool(), "Enable the artifact system.")
    automagic_artifacts: bool = _setting(False, _Bool(), "Detect artifacts automatically.")
    watch_filesystem: bool = _setting(False, _Bool(), "Watch folders for new artifacts.")
    artifact_watch_dirs: list[str] = _setting([], _Names(), "Folders to watch.")
    flush_interval: float = _setting(
        0.5, _Number(float, 0.001), "Seconds between journal commits (the most a crash loses)."
    )
    flush_timeout: float = _setting(
        30.0, _Number(float, 0.0), "Seconds `stop` waits for backends before leaving the rest."
    )
    buffer_size: int = _setting(
        200_000, _Number(int, 1), "Records buffered in memory before the caller waits."
    )
    disable_plugins: list[str] = _setting([], _Names(), "Plugins (entry-point names) to skip.")
    checkpoint_interval: int = _setting(
        1000, _Number(int, 0), "Steps between checkpoints (`tracelet.step()`); 0: none."
    )
    capture_samples: int = _setting(5, _Number(int, 0), "Samples kept per checkpoint.")
    retention_days: int = _setting(30, _Number(int, 1), "Age at which `tracelet gc` removes runs.")
    track_gradients: bool = _setting(True, _Bool(), "Record gradient statistics of watched models.")
    gradient_layers: list[str] = _setting([], _Names(), "Layers whose gradients are recorded.")
    detect_anomalies: bool = _setting(True, _Bool(), "Watch metrics for anomalies while logging.")
    track_metrics: bool = _setting(
        True, _Bool(), "Record metrics (off: metric calls are checked, then dropped)."
    )
    track_args: bool = _setting(True, _Bool(), "Record the command line (secrets redacted).")
    track_checkpoints: bool = _setting(
        True, _Bool(), "Write checkpoints every `checkpoint_interval` steps."
    )
    debug: bool = _setting(False, _Bool(), "Trace every plugin hook call to stderr (pluggy).")

    ALIASES: ClassVar[Mapping[str, str]] = {
        "collect_system_metrics": "track_system",
        "system_metrics_interval": "metrics_interval",
        "collect_gpu_metrics": "track_gpu",
        "track_git_info": "track_git",
        "track_environment": "track_env",
        "storage_path": "store_path",
    }

    @classmethod
    def field_names(cls) -> list[str]:
        """Every setting's name."""
        return [field.name for field in attrs.fields(cls)]

    @classmethod
    def load(
        cls,
        arguments: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> TraceletSettings:
        """Resolve settings: ``arguments``, then ``TRACELET_*`` variables, the file, defaults.

        ``arguments`` may use the documented aliases (``collect_system_metrics`` ...). Only core
        settings are accepted here; :func:`split_config` separates backend options first.
        """
        environ = os.environ if environ is None else environ
        layers = [
            read_config_file(config_file, environ).settings,
            from_environment(environ),
            normalise_keys(arguments or {}, source="arguments"),
        ]
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        return cls(**merged)

    def replace(self, **changes: Any) -> TraceletSettings:
        """A copy with ``changes`` applied (and checked)."""
        return attrs.evolve(self, **normalise_keys(changes, source="arguments"))


@dataclasses.dataclass
class ExperimentConfig:
    """What one experiment tracks (the per-run counterpart of :class:`TraceletSettings`)."""

    track_metrics: bool = True
    track_environment: bool = True
    track_args: bool = True
    track_stdout: bool = True
    track_checkpoints: bool = True
    track_system_metrics: bool = True
    track_git: bool = True
    enable_automagic: bool = False
    automagic_frameworks: set[str] | None = None
    enable_artifacts: bool = False
    automagic_artifacts: bool = False
    artifact_watch_dirs: list[str] | None = None
    watch_filesystem: bool = False

    def settings(self) -> dict[str, Any]:
        """The settings this configuration changes: every field not at its default.

        Each field is the per-run synonym of a setting (:data:`EXPERIMENT_CONFIG_SETTINGS`).
        ``track_stdout`` has no setting yet: output is not captured.
        """
        return {
            EXPERIMENT_CONFIG_SETTINGS[field.name]: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.name in EXPERIMENT_CONFIG_SETTINGS
            and getattr(self, field.name) != field.default
        }


EXPERIMENT_CONFIG_SETTINGS = {
    "track_metrics": "track_metrics",
    "track_environment": "track_env",
    "track_args": "track_args",
    "track_checkpoints": "track_checkpoints",
    "track_system_metrics": "track_system",
    "track_git": "track_git",
    "enable_automagic": "enable_automagic",
    "automagic_frameworks": "automagic_frameworks",
    "enable_artifacts": "enable_artifacts",
    "automagic_artifacts": "automagic_artifacts",
    "artifact_watch_dirs": "artifact_watch_dirs",
    "watch_filesystem": "watch_filesystem",
}
"""Each :class:`ExperimentConfig` field and the setting it stands for in one run."""


def env_name(field: str) -> str:
    """The environment variable for a setting: ``TRACELET_`` and its name in capitals."""
    return f"TRACELET_{field.upper()}"


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings given by ``TRACELET_*`` variables, parsed and checked."""
    found = {}
    for field in attrs.fields(TraceletSettings):
        text = environ.get(env_name(field.name))
        if text is not None and text.strip():  # an empty variable counts as unset
            found[field.name] = field.metadata["kind"].from_env(env_name(field.name), text)
    return found


def normalise_keys(values: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Map aliases to setting names; raise for unknown keys, suggesting close matches."""
    names = set(TraceletSettings.field_names())
    result = {}
    for key, value in values.items():
        name = TraceletSettings.ALIASES.get(key, key)
        if name not in names:
            raise unknown_key(key, source, names | set(TraceletSettings.ALIASES))
        if name in result:
            raise ConfigurationError(
                f"{key!r} in {source} is another name for {name!r}, which is also given; keep one"
            )
        result[name] = value
    return result


def unknown_key(key: str, source: str, known: Iterable[str]) -> ConfigurationError:
    """A ConfigurationError for an unknown key, with the closest known keys as suggestions."""
    return ConfigurationError(f"unknown setting {key!r} in {source}{did_you_mean(key, known)}")


@attrs.frozen
class ConfigFile:
    """What a ``tracelet.yaml`` holds: core settings and per-backend sections."""

    path: Path | None = None
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    sections: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


def find_config_file(
    config_file: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path | None:
    """The file to read: the argument, else ``TRACELET_CONFIG``, else ``./tracelet.yaml``."""
    if config_file is not None:
        return Path(config_file)
    if environ.get(CONFIG_FILE_ENV):
        path = Path(environ[CONFIG_FILE_ENV])
        if not path.is_file():
            raise ConfigurationError(f"{CONFIG_FILE_ENV} names {path}, which is not a file")
        return path
    default = Path.cwd() / CONFIG_FILE_NAME
    return default if default.is_file() else None


def read_config_file(
    config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> ConfigFile:
    """Read and check ``tracelet.yaml``; mappings at the top level are backend sections."""
    path = find_config_file(config_file, os.environ if environ is None else environ)
    if path is None:
        return ConfigFile()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigurationError(f"cannot read the configuration file {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{path} must hold a mapping of settings, not {type(data).__name__}"
        )
    sections = {k: v or {} for k, v in data.items() if isinstance(v, dict) or k in _SECTIONS}
    flat = {k: v for k, v in data.items() if k not in sections}
    return ConfigFile(path, normalise_keys(flat, source=str(path)), sections)


RUN_KEYS = frozenset({"tags", "run_name", "notes", "on_anomaly", "anomaly_config"})
"""Keys of ``config=`` that describe the run itself; backends that declare them get them too."""


def split_config(
    config: Mapping[str, Any], backend_options: Mapping[str, Iterable[str]]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a ``config=`` mapping into core settings, run keys and per-backend options.

    ``backend_options`` maps each selected backend to the option names it declares. A key
    is read, in order, as: a nested section (``{"mlflow": {...}}``), a prefixed option
    (``"mlflow_tracking_uri"``), a core setting or run key, or a plain option of every
    selected backend that declares it (``"tracking_uri"``). Anything else raises
    :class:`ConfigurationError` with the closest known keys.
    """
    options = {name: set(keys) for name, keys in backend_options.items()}
    core_names = set(TraceletSettings.field_names()) | set(TraceletSettings.ALIASES)
    core: dict[str, Any] = {}
    run: dict[str, Any] = {}
    per_backend: dict[str, dict[str, Any]] = {name: {} for name in options}
    for key, value in config.items():
        if key in options and isinstance(value, Mapping):
            per_backend[key].update(value)
            continue
        target = _prefixed(key, options)
        if target is not None:
            per_backend[target[0]][target[1]] = value
            continue
        taken = key in core_names or key in RUN_KEYS
        if key in core_names:
            core[key] = value
        elif key in RUN_KEYS:
            run[key] = value
        for name, keys in options.items():
            if key in keys:
                per_backend[name][key] = value
                taken = True
        if not taken:
            known = core_names | RUN_KEYS | {f"{n}_{k}" for n, ks in options.items() for k in ks}
            known |= {k for ks in options.values() for k in ks}
            raise unknown_key(key, "config", known)
    return core, run, per_backend


def _prefixed(key: str, options: Mapping[str, set[str]]) -> tuple[str, str] | None:
    for name, keys in options.items():
        rest = key.removeprefix(f"{name}_")
        if rest != key and rest in keys:
            return name, rest
    return None


@attrs.frozen
class RunSettings:
    """One run's configuration, resolved once: settings, run keys and backend options."""

    settings: TraceletSettings
    run_keys: Mapping[str, Any]
    """``tags``, ``run_name``, ``notes``, ``on_anomaly``, ``anomaly_config`` when given."""
    backend_options: Mapping[str, Mapping[str, Any]]
    """Per selected backend, its options (checked when the backend is built)."""


DeclaredOptions = Callable[[TraceletSettings], Mapping[str, Iterable[str]]]
"""Given the settings, each selected backend's declared option names (from the registry)."""


def resolve_run(
    declared: DeclaredOptions,
    *,
    settings: TraceletSettings | None = None,
    config: Mapping[str, Any] | None = None,
    experiment_config: ExperimentConfig | None = None,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
    arguments: Mapping[str, Any] | None = None,
) -> RunSettings:
    """Resolve a run's configuration, lowest priority first:

    ``settings`` (else environment, ``tracelet.yaml`` and defaults), ``experiment_config``,
    ``config`` (``start_logging``'s mapping of settings, run keys and backend options),
    then ``arguments`` (``project=``, ``backend=`` ... given by name). Backend options:
    the ``tracelet.yaml`` section, under ``backend_options``, under ``config``.
    """
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, not {type(config).__name__}")
    config = dict(config or {})
    base = settings if settings is not None else TraceletSettings.load()
    core_names = set(TraceletSettings.field_names()) | set(TraceletSettings.ALIASES)
    given = {k: v for k, v in config.items() if k in core_names}
    explicit = {k: v for k, v in (arguments or {}).items() if v is not None}
    changes = {
        **(experiment_config.settings() if experiment_config else {}),
        **normalise_keys(given, source="config"),
        **normalise_keys(explicit, source="arguments"),
    }
    resolved = base.replace(**changes)
    _, run_keys, options = split_config(config, declared(resolved))
    sections = read_config_file().sections
    for name, nested in (backend_options or {}).items():
        if name not in options:
            raise ConfigurationError(
                f"options given for backend {name!r}, which the run does not use "
                f"(backends: {', '.join(resolved.backend)})"
            )
        options[name] = {**nested, **options[name]}
    for name in options:
        options[name] = {**sections.get(name, {}), **options[name]}
    return RunSettings(resolved, run_keys, options)
