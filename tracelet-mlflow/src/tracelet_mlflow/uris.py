"""Where an artifact logged through the MLflow backend is found.

``experiment.log_artifact(...)["mlflow"].uri`` is MLflow's own address of the artifact,
``runs:/<MLflow run id>/<artifact path>``, which ``mlflow.artifacts.download_artifacts
(artifact_uri=...)`` and every MLflow tool take, as soon as the MLflow run exists.

The MLflow run is created on the backend's delivery thread, not on the training thread, so
an artifact logged before it exists (right after the start, or while MLflow is unreachable)
has no MLflow address yet. Its URI is then a placeholder, never an address MLflow would
misread: ``tracelet-mlflow:/<experiment>/<Tracelet run id>/<artifact path>`` (the
experiment name URL-quoted). :func:`resolve_artifact_uri` turns it into the ``runs:/``
address once MLflow has the run, and returns any other URI as it is::

    uri = resolve_artifact_uri(result.uri, tracking_uri)
    mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

PENDING_SCHEME = "tracelet-mlflow"
"""The scheme of an artifact URI logged before its MLflow run existed."""
RUN_ID_TAG = "tracelet.run_id"
"""The MLflow run tag holding the Tracelet run id."""
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
"""A Tracelet run id (as ``tracelet.values.check_run_id`` takes it)."""


def pending_artifact_uri(experiment: str, run_id: str, artifact_path: str) -> str:
    """The placeholder URI of ``artifact_path`` of Tracelet run ``run_id``, logged to
    MLflow experiment ``experiment`` before the MLflow run existed."""
    return f"{PENDING_SCHEME}:/{quote(experiment, safe='')}/{run_id}/{artifact_path}"


def resolve_artifact_uri(uri: str, tracking_uri: str | None = None) -> str:
    """``runs:/<MLflow run id>/<artifact path>`` for a placeholder URI (see the module);
    any other URI as it is. A :class:`LookupError` while MLflow has no run for it yet.

    ``tracking_uri`` defaults to MLflow's (``MLFLOW_TRACKING_URI``).
    """
    if not uri.startswith(f"{PENDING_SCHEME}:/"):
        return uri
    experiment, run_id, artifact_path = _placeholder_parts(uri)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = (
        []
        if found is None
        else client.search_runs(
            [found.experiment_id],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'",
            max_results=1,
        )
    )
    if not runs:
        raise LookupError(
            f"MLflow has no run for Tracelet run {run_id} in experiment {experiment!r} yet "
            f"(`tracelet show {run_id[:12]}` says where its delivery stands)"
        )
    return f"runs:/{runs[0].info.run_id}/{artifact_path}"


def _placeholder_parts(uri: str) -> tuple[str, str, str]:
    """``(experiment, Tracelet run id, artifact path)`` of a placeholder URI."""
    parts = uri[len(PENDING_SCHEME) + 2 :].split("/", 2)
    if len(parts) != 3 or not parts[0] or not parts[2] or not _RUN_ID.fullmatch(parts[1]):
        raise ValueError(f"not an artifact URI of Tracelet's MLflow backend: {uri!r}")
    experiment, run_id, artifact_path = parts
    return unquote(experiment), run_id, artifact_path
