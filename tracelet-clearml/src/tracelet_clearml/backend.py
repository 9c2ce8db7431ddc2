"""The ClearML backend: one Tracelet run is one ClearML task.

- Project: ``project_name``, else the Tracelet project; task: ``task_name``, else the
  Tracelet run name. Server address and credentials are ClearML's own (``clearml.conf``,
  ``CLEARML_*`` variables); ``offline`` (or ``CLEARML_OFFLINE_MODE``) writes an offline
  session instead.
- ClearML's slow shutdown is turned off through its own configuration overrides, for this
  process only (``clearml.conf`` is never edited): no reporter subprocess, no background
  repository detection. Framework hooks, argparse capture, stdout capture and resource
  monitoring stay off unless ``auto_connect`` is on.
- Scalars: ``report_scalar`` with the title and series of :func:`names.title_series`, NaN
  and infinities as documented there; params: ``update_parameters`` under ``General/``
  (never replacing earlier ones); tags: ``key:value`` for a tag with a value; texts: the
  console log; images: ``report_image``; histograms: ``report_histogram``; artifacts:
  ``upload_artifact``, one per file.
- Exactly once: the user property ``tracelet_seq`` holds the last batch delivered whole
  (reporting waits until ClearML has the batch's events); a replayed batch is skipped.
- Status: completed, failed (``mark_failed``) or stopped (``mark_stopped``), also in the
  user property ``tracelet_status`` (offline sessions keep no status of their own).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracelet.plugins import BackendPlugin, Batch, RunInfo, RunStatus
from tracelet_clearml import sessions
from tracelet_clearml.names import PARAM_SECTION, bin_labels, finite, text_block, title_series

QUIET_CONFIG = {
    "sdk": {"development": {"report_use_subprocess": False, "vcs_repo_detect_async": False}},
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
sometimes hangs about 300 s), and bound each request to an unreachable server to about a
second (ClearML's own 240 retries with backoff up to 120 s hold it for hours): Tracelet
retries instead."""


class ClearmlBackend(BackendPlugin):
    """Delivers a Tracelet run to a ClearML task (server or offline session)."""

    def __init__(self) -> None:
        super().__init__()
        self.clearml: Any = None
        self.task: Any = None
        self.logger: Any = None
        self._delivered = 0

    def start(self) -> None:
        """Import ClearML and quiet its shutdown (on the delivery worker)."""
        import clearml
        from clearml.config import config_obj

        config_obj.set_overrides(QUIET_CONFIG)
        self.clearml = clearml

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Start a ClearML task for the run (offline: one session per start)."""
        task_class = self.clearml.Task
        offline = self._offline()
        if offline:
            task_class.set_offline(True)
        earlier = self._earlier_sessions(run) if offline else []
        if self.task is None:
            auto = self.config["auto_connect"]
            self.task = task_class.init(
                project_name=self.config.get("project_name") or run.project,
                task_name=self.config.get("task_name") or run.name,
                task_type=self.config["task_type"],
                tags=self._option_tags(),
                output_uri=self.config.get("output_uri"),
                reuse_last_task_id=False,
                continue_last_task=self._online_task(run) if not offline else False,
                auto_connect_frameworks=auto,
                auto_connect_arg_parser=auto,
                auto_connect_streams=auto,
                auto_resource_monitoring=auto,
            )
            self.task.set_initial_iteration(0)  # Tracelet's steps, never offset
        self.task.set_user_properties(
            **{sessions.RUN_ID: run.id, sessions.SESSION: str(len(earlier) + 1)}
        )
        self.logger = self.task.get_logger()
        if earlier:
            self._carry_over(earlier)
        self._delivered = sessions.delivered_seq(earlier) if offline else self._online_seq(run)

    def _carry_over(self, earlier: list[Path]) -> None:
        """Give a new offline session the parameters and tags of the earlier ones (a server
        keeps them on the task): each session then describes the whole run."""
        params, tags = sessions.held(earlier)
        if params:
            self.task.update_parameters(params)
        if tags:
            self.task.set_tags(list(dict.fromkeys([*tags, *(self.task.get_tags() or ())])))

    def _offline(self) -> bool:
        """The ``offline`` option, else ``CLEARML_OFFLINE_MODE`` (read now), else ClearML's."""
        given = self.config.get("offline")
        if given is None:
            given = os.environ.get("CLEARML_OFFLINE_MODE", "").lower() in ("1", "true", "yes", "on")
        return bool(given) or self.clearml.Task.is_offline()

    def _earlier_sessions(self, run: RunInfo) -> list[Path]:
        from clearml.config import get_offline_dir

        return sessions.session_folders(get_offline_dir(), run.id)

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
        tags = self.config.get("tags")
        return [tags] if isinstance(tags, str) else (list(map(str, tags)) if tags else None)

    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``, then wait until ClearML holds it, then record its seq."""
        if batch.seq <= self._delivered:
            return
        report = self.logger.report_scalar
        for name, value, step, _ in batch.metrics:
            title, series = title_series(name)
            report(title, series, finite(value), step)
        if batch.params:
            self.task.update_parameters(
                {f"{PARAM_SECTION}/{k}": v for k, v in batch.params.items()}
            )
        if batch.tags:
            self._set_tags(batch.tags)
        for text in batch.texts:
            self.logger.report_text(
                text_block(text.name, text.step, text.text), print_console=False
            )
        for image in batch.images:
            title, series = title_series(image.name)
            self.logger.report_image(title, series, iteration=image.step, local_path=image.path)
        for histogram in batch.histograms:
            title, series = title_series(histogram.name)
            self.logger.report_histogram(
                title,
                series,
                values=list(histogram.counts),
                iteration=histogram.step,
                xlabels=bin_labels(histogram.edges),
            )
        for artifact in batch.artifacts:
            self.task.upload_artifact(
                artifact.artifact_path, artifact_object=artifact.path, wait_on_upload=True
            )
        self.logger.flush(wait=True)
        self.task.set_user_properties(**{sessions.SEQ: str(batch.seq)})
        self._delivered = batch.seq

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
        self.task.close()
        self.task = None

    def stop(self) -> None:
        """Close a task whose final status never came (delivery stopped) as stopped."""
        task, self.task = self.task, None
        if task is not None:
            task.mark_stopped(force=True, status_message="tracelet delivery stopped")
            task.close()

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """``clearml://<project>/<task name>/<artifact>`` (the task id is not known yet)."""
        project = self.config.get("project_name") or run.project
        return f"clearml://{project}/{self.config.get('task_name') or run.name}/{artifact_path}"
