"""The plugin interfaces under their older import path (``tracelet.core.plugins``).

Plugin authors import :mod:`tracelet.plugins`; this module re-exports the same objects so
that code written against the spec's ``from tracelet.core.plugins import BackendPlugin``
keeps working.
"""

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

__all__ = [
    "BackendPlugin",
    "BackendRegistration",
    "CollectorPlugin",
    "CollectorRegistration",
    "FrameworkPlugin",
    "FrameworkRegistration",
    "PluginInterface",
    "PluginMetadata",
    "PluginType",
]
