"""Settings: one resolver for arguments, ``TRACELET_*`` variables, ``tracelet.yaml`` and defaults.

Priority, highest first: function arguments, environment variables, the configuration file
(``tracelet.yaml`` in the working directory, or the file named by ``TRACELET_CONFIG``),
defaults. Every value is checked against its field's type; a bad key or value raises
:class:`~tracelet.exceptions.ConfigurationError` naming the key and what it expects.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs

from tracelet.exceptions import ConfigurationError, did_you_mean
from tracelet.redaction import REDACTED
from tracelet.setting_kinds import Bool, Names, Number, Str, setting

CONFIG_FILE_NAME = "tracelet.yaml"
CONFIG_FILE_ENV = "TRACELET_CONFIG"
_SECTIONS = {"local", "mlflow", "wandb", "clearml", "aim"}
"""Backend names whose ``tracelet.yaml`` section may be empty (``mlflow:`` alone)."""


@attrs.define(kw_only=True)
class TraceletSettings:
    """Tracelet's global settings. Each field ``x`` can also be set as ``TRACELET_X``."""

    project: str = setting(
        "default", Str(empty=False), "Project (group of runs) when none is given."
    )
    backend: list[str] = setting(["local"], Names(), "Backends to send to.")
    experiment_name: str | None = setting(None, Str(optional=True), "Default run name.")
    store_path: str = setting(".tracelet", Str(), "Folder of the local store (the journal).")
    track_system: bool = setting(True, Bool(), "Sample CPU, memory and GPU use.")
    track_gpu: bool = setting(True, Bool(), "Include NVIDIA GPUs in system samples.")
    track_git: bool = setting(True, Bool(), "Record the git commit and branch.")
    track_env: bool = setting(True, Bool(), "Record Python, platform and packages.")
    metrics_interval: float = setting(10.0, Number(float, 0.1), "Seconds between samples.")
    git_repo_path: str = setting(".", Str(), "Repository whose state is recorded.")
    include_uncommitted_changes: bool = setting(
        False, Bool(), "Log `git diff HEAD` as the text artifact `git/uncommitted.diff`."
    )
    enable_automagic: bool = setting(False, Bool(), "Capture hyperparameters automatically.")
    automagic_frameworks: set[str] = setting(set(), Names(unique=True), "Frameworks to hook.")
    enable_artifacts: bool = setting(False, Bool(), "Enable the artifact system.")
    automagic_artifacts: bool = setting(False, Bool(), "Detect artifacts automatically.")
    watch_filesystem: bool = setting(False, Bool(), "Watch folders for new artifacts.")
    artifact_watch_dirs: list[str] = setting([], Names(), "Folders to watch.")
    flush_interval: float = setting(
        0.5,
        Number(float, 0.001),
        "Seconds between drains of the buffer to the journal writer (the most a killed "
        "training process loses); while logging goes on, a batch is committed every 4.",
    )
    flush_timeout: float = setting(
        30.0, Number(float, 0.0), "Seconds `stop` waits for backends before leaving the rest."
    )
    buffer_size: int = setting(
        200_000, Number(int, 1), "Records buffered in memory before the caller waits."
    )
    async_writes: bool = setting(
        True, Bool(), "Journal on a background thread (off: each logging call waits for it)."
    )
    max_workers: int = setting(4, Number(int, 1), "Most threads delivering to backends at once.")
    journal_process: bool = setting(
        True,
        Bool(),
        "Journal in a writer process of its own, off the training loop's GIL (off: on a thread).",
    )
    media_buffer_mb: float = setting(
        512.0, Number(float, 1.0), "Megabytes of images, texts and params queued before waiting."
    )
    disable_plugins: list[str] = setting([], Names(), "Plugins (entry-point names) to skip.")
    checkpoint_interval: int = setting(
        1000, Number(int, 0), "Steps between checkpoints (`tracelet.step()`); 0: none."
    )
    capture_samples: int = setting(5, Number(int, 0), "Samples kept per checkpoint.")
    retention_days: int = setting(30, Number(int, 1), "Age at which `tracelet gc` removes runs.")
    track_gradients: bool = setting(True, Bool(), "Record gradient statistics of watched models.")
    gradient_layers: list[str] = setting([], Names(), "Layers whose gradients are recorded.")
    detect_anomalies: bool = setting(True, Bool(), "Watch metrics for anomalies while logging.")
    track_metrics: bool = setting(
        True, Bool(), "Record metrics (off: metric calls are checked, then dropped)."
    )
    track_args: bool = setting(True, Bool(), "Record the command line (secrets redacted).")
    log_all_ranks: bool = setting(
        False,
        Bool(),
        "In distributed training, each rank logs its own run (off: rank zero only).",
    )
    track_stdout: bool = setting(
        True, Bool(), "Keep what the program prints (stdout, stderr) as texts of the run."
    )
    track_checkpoints: bool = setting(
        True, Bool(), "Write checkpoints every `checkpoint_interval` steps."
    )
    debug: bool = setting(False, Bool(), "Trace every plugin hook call to stderr (pluggy).")
    redact_secrets: bool = setting(
        True, Bool(), "Mask params and tags named like secrets, and URI credentials in them."
    )

    ALIASES: ClassVar[Mapping[str, str]] = {
        "collect_system_metrics": "track_system",
        "system_metrics_interval": "metrics_interval",
        "collect_gpu_metrics": "track_gpu",
        "track_git_info": "track_git",
        "track_environment": "track_env",
        "storage_path": "store_path",
        "project_name": "project",
        "track_system_metrics": "track_system",
        "write_buffer_size": "buffer_size",
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
    "track_stdout": "track_stdout",
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
    for name, section in sections.items():
        if not isinstance(section, dict):
            raise ConfigurationError(
                f"{path}: the {name!r} section must hold that backend's options "
                f"(a mapping), not {type(section).__name__} {section!r}"
            )
    flat = {k: v for k, v in data.items() if k not in sections}
    return ConfigFile(path, normalise_keys(flat, source=str(path)), sections)


RUN_KEYS = frozenset(
    {"tags", "run_name", "run_id", "resume", "notes", "on_anomaly", "anomaly_config"}
)
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


def stored_backend_options(
    run_config: Mapping[str, Any], backend: str
) -> tuple[dict[str, Any], set[str]]:
    """A finished run's options for ``backend``, to deliver it again (``tracelet sync``):
    those it was logged with under today's ``tracelet.yaml`` section (which may hold a
    corrected address). Also returns the options that were withheld as secret and that the
    section does not give again: sync must get them elsewhere, or refuse."""
    stored = dict(run_config.get("backends", {}).get(backend, {}))
    withheld = {key for key, value in stored.items() if REDACTED in repr(value)}
    section = read_config_file().sections.get(backend, {})
    options = {k: v for k, v in stored.items() if k not in withheld} | dict(section)
    return options, withheld - set(section)


RESUME_MODES = ("allow", "must", "never")
"""What a run id that may already be in the store means: continue it or start it (allow),
continue it or fail (must), start it or fail (never)."""


def run_identity(
    run_id: str | None, resume: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str | None, str]:
    """The run id and resume mode: the arguments, else ``TRACELET_RUN_ID`` and
    ``TRACELET_RESUME``, else a new run (``"allow"``). Checked; ``must`` needs an id."""
    environ = os.environ if environ is None else environ
    run_id = run_id if run_id is not None else environ.get("TRACELET_RUN_ID") or None
    resume = resume if resume is not None else environ.get("TRACELET_RESUME") or "allow"
    if resume not in RESUME_MODES:
        raise ConfigurationError(
            f"resume={resume!r} is not a resume mode; choose one of "
            f"{', '.join(map(repr, RESUME_MODES))}"
        )
    if resume == "must" and run_id is None:
        raise ConfigurationError(
            "resume='must' continues a run: give its run_id (or set TRACELET_RUN_ID)"
        )
    return run_id, resume
