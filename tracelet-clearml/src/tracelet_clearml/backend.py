"""The ClearML backend: one Tracelet run is one ClearML task.

- Project: ``project_name``, else the Tracelet project; task: ``task_name``, else the
  Tracelet run name. Server address and credentials are ClearML's own (``clearml.conf``,
  ``CLEARML_*`` variables); ``offline`` (or ``CLEARML_OFFLINE_MODE``) writes an offline
  session instead, for this task only.
- ClearML is made quick and bounded through its own configuration overrides, for this
  process (``clearml.conf`` is never edited): :data:`QUIET_CONFIG`, and each request's
  read timeout is ``request_timeout``. Framework hooks, argparse capture, stdout capture
  and resource monitoring stay off unless ``auto_connect`` is on.
- Scalars: ``report_scalar`` with the title and series of :func:`names.title_series`, NaN
  and infinities as documented there; params: ``update_parameters`` under ``General/``
  (never replacing earlier ones); tags: ``key:value`` for a tag with a value; texts: the
  console log; images: ``report_image``; histograms: ``report_histogram``; artifacts:
  ``upload_artifact``, one per file and version.
- Exactly once: a batch is a list of operations; a retry goes on from the first one not
  done. Once ClearML holds all of it (``flush``), the user property ``tracelet_seq``
  records it; a batch delivered again is skipped.
- Status: completed, failed (``mark_failed``) or stopped (``mark_stopped``), also in the
  user property ``tracelet_status`` (offline sessions keep no status of their own).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from tracelet.plugins import (
    BackendError,
    BackendPlugin,
    Batch,
    PermanentBackendError,
    RunInfo,
    RunStatus,
    versioned_name,
    versioned_path,
)
from tracelet_clearml import sessions
from tracelet_clearml.names import PARAM_SECTION, bin_labels, finite, text_block, title_series

logger = logging.getLogger("tracelet")

QUIET_CONFIG = {
    "sdk": {
        "development": {
            "report_use_subprocess": False,
            "vcs_repo_detect_async": False,
            "store_uncommitted_code_diff": False,
        }
    },
    "api": {
        "http": {
            "retries": {
                **dict.fromkeys(("total", "connect", "read", "redirect", "status"), 2),
                "backoff_factor": 0.5,
                "backoff_max": 2.0,
            },
            "wait_on_maintenance_forever": False,
        }
    },
}
"""ClearML settings that make a task start and close in well under a second (with the
reporter subprocess and asynchronous repository detection on, ``close`` takes 5-11 s and
sometimes hangs about 300 s; the uncommitted diff, which may hold secrets, is not
stored: Tracelet's git collector records the state), and bound a request to an unreachable
server to about a second (ClearML's own 240 retries with backoff up to 120 s hold it for
hours): Tracelet retries instead."""


_OWN_MODE: list[bool] = []
"""Whether ClearML was offline before Tracelet first set its (process-wide) mode."""
_QUIET: list[Any] = []
""":data:`QUIET_CONFIG` as ClearML's config tree, made once (told apart from the program's
own overrides by identity)."""


def quiet_clearml(request_timeout: float) -> None:
    """Apply :data:`QUIET_CONFIG` after any overrides the program set (ClearML has one list
    of overrides per process), make ClearML read its SDK settings again (they may be cached
    already), and bound each request's read timeout (ClearML's own: 300 s, three tries)."""
    from clearml.backend_api.session import Session
    from clearml.config import ConfigSDKWrapper, ConfigWrapper
    from clearml.utilities.pyhocon import ConfigFactory

    if not _QUIET:
        _QUIET.append(ConfigFactory.from_dict(QUIET_CONFIG))
    config = ConfigWrapper._init()
    given = getattr(config, "_overrides_configs", None) or []
    theirs = [tree for tree in given if tree is not _QUIET[0]]
    ConfigWrapper.set_overrides(*theirs, _QUIET[0])
    ConfigSDKWrapper.clear_config_impl()
    Session._session_timeout = (10.0, request_timeout)


class ClearmlBackend(BackendPlugin):
    """Delivers a Tracelet run to a ClearML task (server or offline session)."""

    def __init__(self) -> None:
        super().__init__()
        self.clearml: Any = None
        self.task: Any = None
        self.logger: Any = None
        self._delivered = 0
        self._progress = (0, 0)
        """(batch seq, operations of that batch done): where a retried batch goes on."""

    def start(self) -> None:
        """Import ClearML and make it quick and bounded (on the delivery worker)."""
        import clearml

        quiet_clearml(self.config["request_timeout"])
        self.clearml = clearml

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Start a ClearML task for the run (offline: one session per start)."""
        task_class = self.clearml.Task
        if not _OWN_MODE:  # ClearML's mode before Tracelet first set it
            _OWN_MODE.append(task_class.is_offline())
        offline = self._offline()
        task_class.set_offline(offline)  # ClearML's mode is per process: set it every time
        earlier = self._earlier_sessions(run) if offline else sessions.Held()
        if self.task is None:
            self.task = self._init(run, offline)
        self.task.set_user_properties(
            **{sessions.RUN_ID: run.id, sessions.SESSION: str(earlier.sessions + 1)}
        )
        self.logger = self.task.get_logger()
        self._carry_over(earlier)
        self._delivered = earlier.seq if offline else self._online_seq(run)

    def _init(self, run: RunInfo, offline: bool) -> Any:
        """``Task.init`` with the options; online, continuing the run's earlier task."""
        auto = self.config["auto_connect"]
        earlier = False if offline else self._online_task(run)
        _own_process()
        task = self.clearml.Task.init(
            project_name=self.config.get("project_name") or run.project,
            task_name=self.config.get("task_name") or run.name,
            task_type=self.config["task_type"],
            tags=self._option_tags(),
            output_uri=self.config.get("output_uri"),
            reuse_last_task_id=False,
            continue_last_task=earlier,
            auto_connect_frameworks=auto,
            auto_connect_arg_parser=auto,
            auto_connect_streams=auto,
            auto_resource_monitoring=auto,
        )
        if type(task).__name__ == "_TaskStub":  # (it would take every call, store nothing)
            raise PermanentBackendError(
                "ClearML returned a stub task that stores nothing (it took this process for a "
                "subprocess of another task)"
            )
        if earlier and task.id != earlier:
            logger.warning(
                "tracelet clearml: task %s of run %s could not be continued; ClearML "
                "created task %s, which gets the rest",
                earlier,
                run.id,
                task.id,
            )
        task.set_initial_iteration(0)  # Tracelet's steps, never offset
        return task

    def _carry_over(self, earlier: sessions.Held) -> None:
        """Give a new offline session the parameters and tags of the earlier ones (a server
        keeps them on the task): each session then describes the whole run."""
        if earlier.params:
            self.task.update_parameters(earlier.params)
        if earlier.tags:
            current = self.task.get_tags() or ()
            self.task.set_tags(list(dict.fromkeys([*earlier.tags, *current])))

    def _offline(self) -> bool:
        """The ``offline`` option, else ``CLEARML_OFFLINE_MODE`` as it is now, else
        ClearML's own mode."""
        given = self.config.get("offline")
        if given is not None:
            return bool(given)
        variable = os.environ.get("CLEARML_OFFLINE_MODE", "").strip().lower()
        if variable:
            return variable in ("1", "true", "yes", "on")
        return _OWN_MODE[0]

    def _earlier_sessions(self, run: RunInfo) -> sessions.Held:
        """What the run's earlier offline sessions hold."""
        from clearml.config import get_offline_dir

        tasks = [task for _, task in sessions.session_tasks(get_offline_dir(), run.id)]
        return sessions.held(tasks)

    def _online_task(self, run: RunInfo) -> str | bool:
        """The id of the task an earlier session of this run created (resume), else False."""
        found = self.clearml.Task.get_tasks(
            task_filter={"system_tags": [f"tracelet:{run.id}"]}, allow_archived=False
        )
        return found[0].id if found else False

    def _online_seq(self, run: RunInfo) -> int:
        """Mark the task as this run's (for a later resume); the last batch it holds."""
        tags = list(self.task.get_system_tags())
        if f"tracelet:{run.id}" not in tags:
            self.task.set_system_tags([*tags, f"tracelet:{run.id}"])
        return int(self.task.get_user_properties(value_only=True).get(sessions.SEQ) or 0)

    def _option_tags(self) -> list[str] | None:
        """The ``tags`` option as a list (None: no extra tags)."""
        tags = self.config.get("tags")
        return [tags] if isinstance(tags, str) else (list(map(str, tags)) if tags else None)

    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``: its operations from the first not done, then wait until
        ClearML holds all of it, then record its seq."""
        if batch.seq <= self._delivered:
            return
        operations = self._operations(batch)
        seq, done = self._progress
        start = done if seq == batch.seq else 0
        for number, operation in enumerate(operations[start:], start + 1):
            operation()
            self._progress = (batch.seq, number)
        if not self.logger.flush(wait=True):
            raise BackendError("ClearML could not send the batch's reports; retrying")
        self.task.set_user_properties(**{sessions.SEQ: str(batch.seq)})
        self._delivered = batch.seq

    def _operations(self, batch: Batch) -> list[Callable[[], Any]]:
        """The ClearML calls that deliver ``batch``, in order (the same batch: the same list)."""
        log = self.logger
        operations: list[Callable[[], Any]] = []
        if batch.metrics:
            operations.append(lambda: self._report_scalars(batch))
        if batch.params:
            params = {f"{PARAM_SECTION}/{k}": v for k, v in batch.params.items()}
            operations.append(lambda: self.task.update_parameters(params))
        if batch.tags:
            operations.append(lambda: self._set_tags(batch.tags))
        for t in batch.texts:
            block = text_block(t.name, t.step, t.text)
            operations.append(lambda block=block: log.report_text(block, print_console=False))
        for i in batch.images:
            title, series = title_series(i.name)
            operations.append(
                lambda i=i, title=title, series=series: log.report_image(
                    title, series, iteration=i.step, local_path=i.path
                )
            )
        for h in batch.histograms:
            title, series = title_series(h.name)
            operations.append(
                lambda h=h, title=title, series=series: log.report_histogram(
                    title,
                    series,
                    values=list(h.counts),
                    iteration=h.step,
                    xlabels=bin_labels(h.edges),
                )
            )
        operations += [lambda a=a: self._upload(a) for a in batch.artifacts]
        return operations

    def _report_scalars(self, batch: Batch) -> None:
        report = self.logger.report_scalar
        for name, value, step, _ in batch.metrics:
            title, series = title_series(name)
            report(title, series, finite(value), step)

    def _upload(self, artifact: Any) -> None:
        """One artifact file; a later version of a path gets its own name."""
        name = versioned_path(artifact)
        if not self.task.upload_artifact(name, artifact_object=artifact.path, wait_on_upload=True):
            raise BackendError(f"ClearML did not upload artifact {name!r}; retrying")

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        """Tracelet tags as ClearML tags (``key:value``), a key's new value replacing the old."""
        current = list(self.task.get_tags() or ())
        for key, value in tags.items():
            current = [tag for tag in current if tag.partition(":")[0] != key]
            current.append(key if value == "" else f"{key}:{value}")
        self.task.set_tags(current)

    def finish_run(self, status: RunStatus) -> None:
        """Record the final status and close the task."""
        self.task.set_user_properties(**{sessions.STATUS: status.value})
        if status is RunStatus.FINISHED:
            self.task.mark_completed(force=True)
        elif status is RunStatus.KILLED:
            self.task.mark_stopped(force=True, status_message="killed")
        else:
            self.task.mark_failed(force=True, status_reason=f"tracelet run {status.value}")
        self._close(self.task)
        self.task = None

    def stop(self) -> None:
        """Close a task whose final status never came (delivery stopped) as stopped."""
        task, self.task = self.task, None
        if task is not None:
            task.mark_stopped(force=True, status_message="tracelet delivery stopped")
            self._close(task)

    def _close(self, task: Any) -> None:
        """Close ``task``. ClearML's offline mode stays as this run set it: ClearML's own
        threads may still finish the task's last calls after ``close`` returns."""
        task.close()

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """``clearml://<project>/<task name>/<artifact name>`` (no task id yet)."""
        project = self.config.get("project_name") or run.project
        task = self.config.get("task_name") or run.name
        return f"clearml://{project}/{task}/{versioned_name(artifact_path, version)}"


MASTER_VARIABLES = ("CLEARML_PROC_MASTER_ID", "TRAINS_PROC_MASTER_ID")
"""Where ClearML notes the process whose task this process's tasks belong to."""


def _own_process() -> None:
    """Make this process ClearML's master process again when it inherited another's mark
    (a parent that ran a task started it): ClearML would take it for that task's
    subprocess and return a stub that stores nothing, whereas each Tracelet run is a task
    of its own."""
    for variable in MASTER_VARIABLES:
        master = os.environ.get(variable, "")
        if master and master.partition(":")[0] != str(os.getpid()):
            os.environ[variable] = f"{os.getpid()}:"
