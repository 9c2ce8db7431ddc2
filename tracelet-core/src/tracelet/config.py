"""Tracer's configuration type, :class:`TracerConfig`, over Tracelet's settings.

Code written for Tracer runs unchanged::

    config = TracerConfig(project_name="gpt-finetuning", checkpoint_interval=500)
    tracelet.init(config=config)            # or tracelet.init(project=..., **fields)
    StorageBackend(config)                  # the low-level storage API

Each field stands for one Tracelet setting or run key (:data:`TRACER_CONFIG_KEYS`) and is
checked as that setting is. A field takes effect when it is set (given to the constructor,
or assigned later); a field never set keeps Tracelet's setting, whatever the environment
and ``tracelet.yaml`` make it. So ``TracerConfig(project_name="p")`` runs with Tracelet's
defaults (the store in ``./.tracelet``, a 200,000-record buffer), while
``TracerConfig(project_name="p", write_buffer_size=100)`` buffers 100 records. A field set
to None (``run_name``, ``notes``, ``gradient_layers``) also keeps Tracelet's setting.
``attrs.evolve`` gives every field to the constructor, so its copy sets them all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import attrs

from tracelet.setting_kinds import Bool, Names, Number, Str, setting
from tracelet.settings import RUN_KEYS, TraceletSettings


def _remember(config: TracerConfig, field: attrs.Attribute, value: Any) -> Any:
    object.__setattr__(config, "_given", config._given | {field.name})
    return value


@attrs.define(on_setattr=[attrs.setters.convert, _remember])
class TracerConfig:
    """A run's configuration in Tracer's terms (``tracer.TracerConfig``); the defaults are
    Tracer's, and only the fields set take effect (see the module's docstring)."""

    # project metadata
    project_name: str = setting(attrs.NOTHING, Str(empty=False), "Project of the run.")
    run_name: str | None = setting(None, Str(optional=True), "Run name (None: generated).")
    tags: list[str] = setting([], Names(), "Bare tags of the run.")
    notes: str | None = setting(None, Str(optional=True), "Free text, kept as the tag `notes`.")
    # storage
    storage_path: str = setting(".tracelet", Str(), "Folder of the local store.")
    retention_days: int = setting(30, Number(int, 1), "Days `tracelet gc` keeps the run.")
    # capture
    checkpoint_interval: int = setting(1000, Number(int, 0), "Steps between checkpoints.")
    capture_samples: int = setting(5, Number(int, 0), "Samples kept per checkpoint.")
    track_gradients: bool = setting(True, Bool(), "Gradient statistics of watched models.")
    track_system_metrics: bool = setting(True, Bool(), "CPU, memory and GPU samples.")
    gradient_layers: list[str] | None = setting(
        None, Names(optional=True), "Layers whose gradients are recorded (None: all)."
    )
    # performance
    async_writes: bool = setting(True, Bool(), "Journal on a background thread.")
    write_buffer_size: int = setting(100, Number(int, 1), "Records buffered before waiting.")
    max_workers: int = setting(4, Number(int, 1), "Most threads delivering to backends.")
    _given: frozenset[str] = attrs.field(init=False, factory=frozenset, repr=False)
    """The fields set so far (part of equality: they decide what takes effect)."""

    def as_config(self) -> dict[str, Any]:
        """The ``config=`` of :func:`tracelet.start_logging` this stands for: every field set
        (and not None), under the name of the setting or run key it sets."""
        return canonical({n: getattr(self, n) for n in TRACER_CONFIG_KEYS if n in self._given})

    def settings(self) -> TraceletSettings:
        """Tracelet's settings with this configuration applied over the environment,
        ``tracelet.yaml`` and the defaults (run keys such as ``tags`` left out)."""
        changed = {k: v for k, v in self.as_config().items() if k not in RUN_KEYS}
        return TraceletSettings.load(changed)


TRACER_CONFIG_KEYS = {
    name: TraceletSettings.ALIASES.get(name, name) for name in attrs.fields_dict(TracerConfig)
}
"""Each :class:`TracerConfig` field and the Tracelet setting (or run key) it sets: the
same name, or the setting it is an alias of (``write_buffer_size`` -> ``buffer_size``)."""
TRACER_CONFIG_KEYS.pop("_given")

OPTIONAL_FIELDS = frozenset({"run_name", "notes", "gradient_layers"})
"""Fields whose None means "not set" (Tracer's default), as a field and as a keyword."""


def canonical(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` under Tracelet's names (aliases resolved), Tracer's optional fields given
    as None left out: so keywords and ``config=`` merge key by key."""
    return {
        TraceletSettings.ALIASES.get(key, key): value
        for key, value in options.items()
        if not (value is None and key in OPTIONAL_FIELDS)
    }


def _given_fields(init: Any) -> Any:
    """Wrap attrs' ``__init__`` to note which fields the caller gave."""
    names = list(TRACER_CONFIG_KEYS)

    @functools.wraps(init)
    def __init__(self: TracerConfig, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        object.__setattr__(self, "_given", frozenset(names[: len(args)]) | frozenset(kwargs))

    return __init__


TracerConfig.__init__ = _given_fields(TracerConfig.__init__)  # type: ignore[method-assign]
