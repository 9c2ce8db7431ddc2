"""The MLflow backend: one Tracelet run is one MLflow run.

- The Tracelet project is the MLflow experiment (``experiment_name`` or
  ``MLFLOW_EXPERIMENT_NAME`` when given); the Tracelet run name is the MLflow run name
  (``run_name`` when given). The tracking URI is ``tracking_uri``, else
  ``MLFLOW_TRACKING_URI``, else MLflow's default.
- The MLflow run carries the tag ``tracelet.run_id``: starting again with the same run id
  (a resumed run, or ``tracelet sync``) continues the same MLflow run.
- Metrics go through ``log_batch`` in calls of at most 1000 metrics or 100 params/tags,
  with every point's step and original timestamp (in milliseconds, MLflow's unit); up to
  ``requests_in_flight`` of a batch's metric calls are sent at once (default 4, as many as
  ``mlflow server`` has workers by default; MLflow's own async logging uses 10 threads),
  params before them, tags after.
- The tag ``tracelet.seq`` holds the last batch delivered, so a batch delivered again is
  skipped: replays never duplicate.
- ``log_artifact`` returns MLflow's address of the artifact, ``runs:/<MLflow run id>/<path>``;
  before the MLflow run exists, a placeholder that
  :func:`tracelet_mlflow.uris.resolve_artifact_uri` resolves later (see that module).
- Texts, images, histograms and files land as artifacts:
  ``tracelet/texts/<name>/step_<step>.txt``, ``tracelet/images/<name>/step_<step>.png``,
  ``tracelet/histograms/<name>/step_<step>.json`` (``counts``, ``edges``, ``nonfinite``;
  MLflow has no histogram type), and each artifact at its own path; MLflow keys files by
  path, so a later version gets its own path (``model.pt (v2)``, a bundle's files in
  ``<name> (v2)/``, as :func:`~tracelet.plugins.versioned_path` says) and never replaces
  the first.

Everything runs on a delivery worker (and the backend's own threads for requests in
flight, each bounded like the worker's); ``MlflowClient`` is used with an explicit
tracking URI, never MLflow's process-global fluent state. Tracking servers and database
stores (SQLite, PostgreSQL ...) are supported; with MLflow's deprecated file store, a batch
cut off halfway and delivered again can duplicate the points it had already sent.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tracelet.plugins import (
    Artifact,
    BackendPlugin,
    Batch,
    PermanentBackendError,
    RejectedBatchError,
    RunInfo,
    RunStatus,
    versioned_name,
    versioned_path,
)
from tracelet_mlflow.http import bounded
from tracelet_mlflow.names import (
    MAX_TAG_VALUE,
    cut,
    legal_name,
    load_names,
    name_map,
    name_tags,
    param_text,
)
from tracelet_mlflow.stores import check_tracking_uri
from tracelet_mlflow.uris import RUN_ID_TAG, pending_artifact_uri

logger = logging.getLogger("tracelet")

SEQ_TAG = "tracelet.seq"
METRICS_PER_CALL = 1000
PARAMS_OR_TAGS_PER_CALL = 100
PERMANENT = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
"""MLflow error codes no retry fixes (bad or missing credentials)."""
STATUS = {
    RunStatus.FINISHED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.KILLED: "KILLED",
    RunStatus.CRASHED: "FAILED",
    RunStatus.RUNNING: "RUNNING",
}


F = TypeVar("F", bound=Callable[..., Any])


def _remote(method: F) -> F:
    """Run ``method`` with MLflow's HTTP calls bounded, and its permanent failures told apart."""

    @functools.wraps(method)
    def call(self: MlflowBackend, *args: Any) -> Any:
        from mlflow.exceptions import MlflowException

        with bounded(self.config["request_timeout"]):
            try:
                return method(self, *args)
            except MlflowException as error:
                if error.error_code in PERMANENT:
                    raise PermanentBackendError(
                        f"MLflow refused the credentials: {error.message}"
                    ) from error
                raise

    return call  # type: ignore[return-value]


class MlflowBackend(BackendPlugin):
    """Delivers a Tracelet run to MLflow (tracking server, SQLite or file store)."""

    def __init__(self) -> None:
        super().__init__()
        self.client: Any = None
        self.run_id: str | None = None
        self.delivered_seq = 0
        self._params: dict[str, str] = {}
        self._names = name_map()
        self._run: RunInfo | None = None
        self._warned_params: set[str] = set()

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Take the checked options; a tracking URI the installed MLflow cannot serve (a
        database without the full MLflow, say) is a ConfigurationError naming the fix."""
        super().initialize(config)
        check_tracking_uri(self.config.get("tracking_uri"))

    def start(self) -> None:
        """Create the client (imports MLflow)."""
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.config["tracking_uri"])

    @_remote
    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Find the MLflow run of this Tracelet run, or create it."""
        self._run = run
        experiment_id = self._experiment_id(run)
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{RUN_ID_TAG}` = '{run.id}'", max_results=1
        )
        if found:
            existing = found[0]
            self.run_id = existing.info.run_id
            self.delivered_seq = int(existing.data.tags.get(SEQ_TAG, 0))
            self._params = dict(existing.data.params)
            load_names(
                self._names,
                existing.data.tags,
                [*existing.data.metrics, *existing.data.params],
            )
            if existing.info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {RUN_ID_TAG: run.id, "tracelet.project": run.project, **self._option_tags()}
        created = self.client.create_run(
            experiment_id,
            start_time=int(run.created_at * 1000),
            tags=tags,
            run_name=self.config.get("run_name") or run.name,
        )
        self.run_id = created.info.run_id

    def _experiment_name(self, run: RunInfo) -> str:
        return (
            self.config.get("experiment_name")
            or os.environ.get("MLFLOW_EXPERIMENT_NAME")
            or run.project
        )

    def _experiment_id(self, run: RunInfo) -> str:
        name = self._experiment_name(run)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise PermanentBackendError(
                f"MLflow experiment {name!r} is deleted; restore it (mlflow experiments "
                "restore) or choose another experiment_name"
            )
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(
                name, artifact_location=self.config.get("artifact_location")
            )
        except MlflowException:  # created meanwhile by another process
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def _option_tags(self) -> dict[str, str]:
        tags = self.config.get("tags") or {}
        if isinstance(tags, str):
            tags = [tags]
        pairs = tags.items() if isinstance(tags, Mapping) else ((t, "") for t in tags)
        return {legal_name(str(k)): cut(str(v), MAX_TAG_VALUE) for k, v in pairs}

    @_remote
    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch`` (skipped when MLflow already has it)."""
        if batch.seq <= self.delivered_seq:
            return
        from mlflow.entities import Metric, Param, RunTag

        name = self._names
        metrics = [
            Metric(name(key), value, round(ts * 1000), step)
            for key, value, step, ts in batch.metrics
        ]
        params, tags = self._params_and_tags(batch)
        seen = {point[0] for point in batch.metrics}.union(batch.params, batch.tags)
        tags += name_tags(self._names, seen)  # again with every batch: a retry loses none
        tags.append((SEQ_TAG, str(batch.seq)))  # last: a batch counts once all of it is in
        self._log_files(batch)
        for part in _parts(params, PARAMS_OR_TAGS_PER_CALL):
            self._send([], [Param(k, v) for k, v in part], [])
        self._send_metrics(metrics)
        for part in _parts(tags, PARAMS_OR_TAGS_PER_CALL):  # the seq tag last of all
            self._send([], [], [RunTag(k, v) for k, v in part])
        self._params.update(params)
        self.delivered_seq = batch.seq

    def _params_and_tags(self, batch: Batch) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        params: list[tuple[str, str]] = []
        tags = [(self._names(k), cut(str(v), MAX_TAG_VALUE)) for k, v in batch.tags.items()]
        for key, value in batch.params.items():
            name, text = self._names(key), param_text(value)
            if self._params.get(name, text) == text:
                params.append((name, text))
                continue
            # MLflow never changes a logged param: keep the new value as a tag instead.
            tags.append((legal_name(f"tracelet.param.{name}"), cut(text, MAX_TAG_VALUE)))
            if name not in self._warned_params:
                self._warned_params.add(name)
                logger.warning(
                    "tracelet mlflow: param %r changed; MLflow keeps the first "
                    "value, the new one is in tag tracelet.param.%s",
                    key,
                    name,
                )
        return params, tags

    def _send_metrics(self, metrics: list[Any]) -> None:
        """Send ``metrics`` in calls of :data:`METRICS_PER_CALL`, ``requests_in_flight`` at
        once, in as many lanes: this thread runs one, daemon threads the others (so none
        holds up the end of the process). Returns once every call has succeeded, or raises
        the first failure once no lane is sending (a lane stops at the first failure)."""
        parts = _parts(metrics, METRICS_PER_CALL)
        width = self.config["requests_in_flight"]
        lanes = [lane for lane in (parts[i::width] for i in range(width)) if lane]
        failures: list[BaseException] = []
        timeout = self.config["request_timeout"]

        def send(lane: list[list[Any]]) -> None:
            try:
                with bounded(timeout):  # the bound is per thread
                    for part in lane:
                        if failures or self.client is None:  # another lane failed, or stopped
                            return
                        self._send(part, [], [])
            except BaseException as error:  # handed to the delivery thread below
                failures.append(error)

        others = [
            threading.Thread(target=send, args=(lane,), name=f"tracelet-mlflow-{n}", daemon=True)
            for n, lane in enumerate(lanes[1:], 1)
        ]
        for thread in others:
            thread.start()
        if lanes:
            send(lanes[0])
        for thread in others:
            thread.join()
        if failures:
            raise failures[0]

    def _send(self, metrics: list[Any], params: list[Any], tags: list[Any]) -> None:
        """One ``log_batch`` call; what MLflow refuses for good is a RejectedBatchError."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_batch(  # synchronous: MLflow's async mode would skip our bounds
                self.run_id, metrics=metrics, params=params, tags=tags, synchronous=True
            )
        except MlflowException as error:
            if error.error_code == "INVALID_PARAMETER_VALUE":
                raise RejectedBatchError(f"MLflow refused it: {error.message}") from error
            raise

    def _log_files(self, batch: Batch) -> None:
        for text in batch.texts:
            path = f"tracelet/texts/{_path_part(text.name)}/step_{text.step}.txt"
            self.client.log_text(self.run_id, text.text, path)
        for histogram in batch.histograms:
            path = f"tracelet/histograms/{_path_part(histogram.name)}/step_{histogram.step}.json"
            bins = {"counts": histogram.counts, "edges": histogram.edges}
            self.client.log_dict(self.run_id, {**bins, "nonfinite": histogram.nonfinite}, path)
        with tempfile.TemporaryDirectory() as folder:
            for image in batch.images:
                local = Path(folder, _path_part(image.name), f"step_{image.step}.png")
                local.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(image.path, local)
                self.client.log_artifact(
                    self.run_id, str(local), f"tracelet/images/{_path_part(image.name)}"
                )
            for index, artifact in enumerate(batch.artifacts):
                self._log_artifact(artifact, Path(folder, "artifacts", str(index)))

    def _log_artifact(self, artifact: Artifact, scratch: Path) -> None:
        """One artifact file at its versioned path; MLflow names the file after the local
        one, so a later version is logged from a link (else a copy) named for it in
        ``scratch``, a new folder."""
        target = Path(versioned_path(artifact))
        local = Path(artifact.path)
        if local.name != target.name:
            local = _linked(local, scratch / target.name)
        folder = str(target.parent)
        self.client.log_artifact(self.run_id, str(local), None if folder == "." else folder)

    @_remote
    def finish_run(self, status: RunStatus) -> None:
        """Set the MLflow run's status: FINISHED, FAILED or KILLED."""
        ended = self._run.ended_at if self._run and self._run.ended_at else time.time()
        self.client.set_terminated(self.run_id, status=STATUS[status], end_time=int(ended * 1000))

    def stop(self) -> None:
        """Drop the client (lanes still sending stop at their next request)."""
        self.client = None

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """``runs:/<MLflow run id>/<artifact path>`` once the MLflow run exists, else the
        placeholder :func:`~tracelet_mlflow.uris.resolve_artifact_uri` resolves later."""
        path = versioned_name(artifact_path, version)
        if self.run_id is None:
            return pending_artifact_uri(self._experiment_name(run), run.id, path)
        return f"runs:/{self.run_id}/{path}"


def _linked(source: Path, link: Path) -> Path:
    """``link``, made a symbolic link to ``source`` (a copy where links are not allowed)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(source.resolve())
    except OSError:
        shutil.copyfile(source, link)
    return link


def _parts(items: list[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive parts of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _path_part(name: str) -> str:
    """A metric or image name as a safe relative artifact path."""
    parts = [legal_name(p) for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts) or "_"
