"""Everything a plugin author imports, and nothing else is needed.

A backend in a few lines::

    from tracelet.plugins import BackendPlugin, BackendRegistration, Option, hookimpl

    class MyBackend(BackendPlugin):
        def start_run(self, run, resumed): ...     # create or reopen the run
        def log_batch(self, batch): ...           # deliver; raise to have it retried
        def finish_run(self, status): ...          # record the final status

    @hookimpl
    def tracelet_register_backends():
        return [BackendRegistration("mine", MyBackend, options=[Option("url", str)])]

Delivery (the cursor, retries with capped backoff, refused batches, state reports) is
Tracelet's; a backend only turns a :class:`Batch` into its tool's calls. See
``docs/plugins.md``.
"""

from tracelet.exceptions import (
    BackendError,
    ConfigurationError,
    PermanentBackendError,
    RejectedBatchError,
)
from tracelet.forks import fork_safe
from tracelet.gradients import layer_selected
from tracelet.hookspecs import hookimpl
from tracelet.plugins.interfaces import (
    BackendPlugin,
    CollectorPlugin,
    FrameworkPlugin,
    PendingValue,
    PluginInterface,
    PluginMetadata,
    PluginType,
    TextFile,
)
from tracelet.plugins.names import (
    NameMap,
    bundle_name,
    versioned_name,
    versioned_path,
    with_suffix,
)
from tracelet.plugins.options import Option
from tracelet.plugins.registrations import (
    BackendRegistration,
    CollectorRegistration,
    FrameworkRegistration,
)
from tracelet.records import (
    Artifact,
    Batch,
    Histogram,
    Image,
    MetricPoint,
    RunInfo,
    RunStatus,
    Text,
)
from tracelet.reporting import report_once
from tracelet.values import ParamValue

__all__ = [
    "Artifact",
    "BackendError",
    "BackendPlugin",
    "BackendRegistration",
    "Batch",
    "CollectorPlugin",
    "CollectorRegistration",
    "ConfigurationError",
    "FrameworkPlugin",
    "FrameworkRegistration",
    "Histogram",
    "Image",
    "MetricPoint",
    "NameMap",
    "Option",
    "ParamValue",
    "PendingValue",
    "PermanentBackendError",
    "PluginInterface",
    "PluginMetadata",
    "PluginType",
    "RejectedBatchError",
    "RunInfo",
    "RunStatus",
    "Text",
    "TextFile",
    "bundle_name",
    "fork_safe",
    "hookimpl",
    "layer_selected",
    "report_once",
    "versioned_name",
    "versioned_path",
    "with_suffix",
]
