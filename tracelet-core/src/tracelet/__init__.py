"""Tracelet: one tracking API for training code, delivered to every tool your team uses.

``import tracelet`` stays cheap: names are imported when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "start_logging": "tracelet.interface",
    "stop_logging": "tracelet.interface",
    "get_active_experiment": "tracelet.interface",
    "init": "tracelet.interface",
    "log": "tracelet.interface",
    "step": "tracelet.interface",
    "watch": "tracelet.interface",
    "unwatch": "tracelet.interface",
    "finish": "tracelet.interface",
    "log_sample": "tracelet.interface",
    "Experiment": "tracelet.core.experiment",
    "Orchestrator": "tracelet.core.orchestrator",
    "TraceletSettings": "tracelet.settings",
    "ExperimentConfig": "tracelet.settings",
    "TracerConfig": "tracelet.config",
    "AutomagicConfig": "tracelet.automagic",
    "TraceletException": "tracelet.exceptions",
    "ConfigurationError": "tracelet.exceptions",
    "BackendError": "tracelet.exceptions",
    "StoreError": "tracelet.exceptions",
    "RejectedBatchError": "tracelet.exceptions",
    "PermanentBackendError": "tracelet.exceptions",
    "RunStatus": "tracelet.records",
    "ArtifactType": "tracelet.artifacts",
    "TraceletArtifact": "tracelet.artifacts",
    "ArtifactFile": "tracelet.artifacts",
    "ArtifactObject": "tracelet.artifacts",
    "ArtifactReference": "tracelet.artifacts",
    "ArtifactResult": "tracelet.artifacts",
    "PluginInterface": "tracelet.plugins",
    "BackendPlugin": "tracelet.plugins",
    "FrameworkPlugin": "tracelet.plugins",
    "CollectorPlugin": "tracelet.plugins",
    "PluginMetadata": "tracelet.plugins",
    "PluginType": "tracelet.plugins",
    "BackendRegistration": "tracelet.plugins",
    "CollectorRegistration": "tracelet.plugins",
    "FrameworkRegistration": "tracelet.plugins",
    "hookimpl": "tracelet.hookspecs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tracelet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from tracelet.artifacts import (
        ArtifactFile,
        ArtifactObject,
        ArtifactReference,
        ArtifactResult,
        ArtifactType,
        TraceletArtifact,
    )
    from tracelet.automagic import AutomagicConfig
    from tracelet.config import TracerConfig
    from tracelet.core.experiment import Experiment
    from tracelet.core.orchestrator import Orchestrator
    from tracelet.exceptions import (
        BackendError,
        ConfigurationError,
        PermanentBackendError,
        RejectedBatchError,
        StoreError,
        TraceletException,
    )
    from tracelet.hookspecs import hookimpl
    from tracelet.interface import (
        finish,
        get_active_experiment,
        init,
        log,
        log_sample,
        start_logging,
        step,
        stop_logging,
        unwatch,
        watch,
    )
    from tracelet.plugins import (
        BackendPlugin,
        BackendRegistration,
        CollectorPlugin,
        CollectorRegistration,
        FrameworkPlugin,
        FrameworkRegistration,
        PluginInterface,
        PluginMetadata,
        PluginType,
    )
    from tracelet.records import RunStatus
    from tracelet.settings import ExperimentConfig, TraceletSettings
