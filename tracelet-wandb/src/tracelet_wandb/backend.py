"""The W&B backend: one Tracelet run is one W&B run, with the same run id.

- Project: ``project``, else ``WANDB_PROJECT``, else the Tracelet project; run name:
  ``name``, else ``WANDB_NAME``, else the Tracelet run name. Every other ``WANDB_*``
  variable works as W&B documents it. The run is W&B's own ``wandb.init(id=<Tracelet
  run id>, reinit="create_new")``: the user's own ``wandb.run``, if any, is left alone.
- Metrics: grouped into history rows (:mod:`tracelet_wandb.rows`), one ``log`` call per
  row, with each point's step under ``tracelet/step`` (every metric's x-axis) and its
  timestamp as the row's ``_timestamp``. ``_step`` counts rows, so out-of-order and
  repeated steps are all kept.
- Params: ``config.update`` (a changed value updates it); tags: W&B tags, ``key:value``
  for a tag with a value; texts: a one-cell ``wandb.Table``; images: ``wandb.Image``;
  histograms: ``wandb.Histogram`` (from their counts and edges);
  artifacts: one ``wandb.Artifact`` per logged file or bundle, aliased
  ``tracelet-v<version>``.
- Exactly once: after each batch the summary records ``tracelet/seq`` and
  ``tracelet/rows``; a replayed batch is skipped, and one cut off halfway resumes at its
  first missing row (:mod:`tracelet_wandb.sessions` reads what W&B holds on resume).
- Status: finished, failed or killed become exit codes 0, 1 and 255 (W&B's own code for
  Ctrl-C). A run whose delivery stops before its final status is marked preempting and
  ended with exit code 1, until ``tracelet sync`` resumes and finishes it.

Everything runs on the backend's delivery worker; W&B's stdout capture and its own
system-metrics sampler are off (Tracelet's collectors sample the system already).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from tracelet.plugins import (
    BackendPlugin,
    Batch,
    ConfigurationError,
    PermanentBackendError,
    RunInfo,
    RunStatus,
)
from tracelet_wandb import sessions
from tracelet_wandb.names import (
    NAMES_KEY,
    ROWS_KEY,
    SEQ_KEY,
    STEP_KEY,
    legal_artifact_name,
    legal_tag,
    name_map,
)
from tracelet_wandb.plugin import OPTIONS
from tracelet_wandb.rows import Row, group_rows
from tracelet_wandb.run_file import session_files

EXIT_CODES = {
    RunStatus.FINISHED: 0,
    RunStatus.FAILED: 1,
    RunStatus.CRASHED: 1,
    RunStatus.KILLED: 255,
}
"""Tracelet's final status as a W&B exit code (255: W&B's own code for Ctrl-C)."""
MODES = ("online", "offline", "disabled")
ENVIRONMENT = {option.name: option.env for option in OPTIONS if option.env}
"""Each option's ``WANDB_*`` variable, read when the option is not given."""


class WandbBackend(BackendPlugin):
    """Delivers a Tracelet run to Weights & Biases (online or offline)."""

    def __init__(self) -> None:
        super().__init__()
        self.wandb: Any = None
        self.run: Any = None
        self._state = sessions.Delivered()
        self._names = name_map()
        self._recorded_names: dict[str, str] = {}
        self._next_row = 0
        self._mode = "online"
        self._earlier: list[Path] = []

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Check the options together: ``mode`` is one W&B knows."""
        super().initialize(config)
        mode = self.config.get("mode")
        if mode is not None and mode not in MODES:
            raise ConfigurationError(
                f"wandb option 'mode' must be one of {', '.join(MODES)}, not {mode!r}"
            )

    def start(self) -> None:
        """Import W&B (on the delivery worker, never on the training thread)."""
        with _not_at_shutdown():
            import wandb

        self.wandb = wandb

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Start (or resume) the W&B run whose id is the Tracelet run id."""
        with _not_at_shutdown():
            self._init(run)
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        if self._mode == "offline":
            self._state = sessions.from_run_files(self._earlier)
            self._carry_over(self._state)
        elif self._mode == "online":
            self._state = sessions.from_live_run(self.run)
        self._names = name_map()
        self._names.load(self._state.names, self._state.existing)
        self._recorded_names = dict(self._state.names)
        self._next_row = self._state.next_row

    def _init(self, run: RunInfo) -> None:
        """``wandb.init`` with the options, every ``WANDB_*`` variable read now."""
        wandb = self.wandb
        mode, wandb_dir = self._where()
        self._mode = mode
        self._earlier = session_files(wandb_dir, run.id) if mode == "offline" else []
        given = {
            "console": "off",
            "x_disable_stats": not self.config["system_metrics"],
            "init_timeout": self.config["init_timeout"],
            "finish_timeout": self.config["finish_timeout"],
            "api_key": self._given("api_key"),
            "base_url": self._given("base_url"),
        }
        settings = wandb.Settings(**{k: v for k, v in given.items() if v is not None})
        self.run = wandb.init(
            id=run.id,
            project=self._given("project") or run.project,
            entity=self._given("entity"),
            name=self._given("name") or run.name,
            notes=self._given("notes"),
            group=self._given("group"),
            job_type=self._given("job_type"),
            tags=self._tags_given(),
            dir=self._given("dir"),
            mode=mode,
            resume="allow" if mode == "online" else None,
            reinit="create_new",
            settings=settings,
        )

    def _carry_over(self, earlier: sessions.Delivered) -> None:
        """Give a new offline session the config and tags of the earlier ones (online,
        W&B's server does): each session's run file then describes the whole run."""
        if earlier.config:
            self.run.config.update(dict(earlier.config), allow_val_change=True)
        own = list(self.run.tags or ())
        if earlier.tags:
            self.run.tags = tuple(dict.fromkeys([*earlier.tags, *own]))

    def _where(self) -> tuple[str, str]:
        """The mode and the ``wandb`` folder this run uses, as W&B will resolve them."""
        base = self.wandb.setup().settings
        mode = self._given("mode") or base.mode
        root = self._given("dir") or base.root_dir
        mode = "offline" if mode in ("offline", "dryrun") else mode
        return mode, base.model_copy(update={"root_dir": str(root)}).wandb_dir

    def _given(self, name: str) -> Any:
        """Option ``name``, else its ``WANDB_*`` variable as it is now (W&B itself reads
        them once per process), else None."""
        value = self.config.get(name)
        if value is None and name in ENVIRONMENT:
            value = os.environ.get(ENVIRONMENT[name]) or None
        return value

    def _tags_given(self) -> list[str] | None:
        tags = self._given("tags")
        if isinstance(tags, str):
            tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
        return None if tags is None else [legal_tag(str(tag)) for tag in tags]

    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``: history rows, config, tags, artifacts, then the batch's seq."""
        if batch.seq <= self._state.seq:
            return
        rows = group_rows(self._entries(batch))
        for row in rows[self._state.rows_of(batch.seq, self._next_row) :]:
            self._log_row(row)
        if batch.params:
            config = {self._names(k): v for k, v in batch.params.items()}
            self.run.config.update(config, allow_val_change=True)
        if batch.tags:
            self._set_tags(batch.tags)
        self._log_artifacts(batch)
        summary: dict[str, Any] = {SEQ_KEY: batch.seq, ROWS_KEY: self._next_row}
        names = self._names.changed()
        if names != self._recorded_names:
            summary[NAMES_KEY] = self._recorded_names = names
        self.run.summary.update(summary)
        self._state = sessions.Delivered(batch.seq, self._next_row, self._next_row)

    def _entries(self, batch: Batch) -> Iterator[tuple[str, Any, int, float]]:
        """Every history value of ``batch``: metrics, then images, texts and histograms."""
        key = self._names
        for name, value, step, timestamp in batch.metrics:
            yield key(name), value, step, timestamp
        for image in batch.images:
            yield key(image.name), self.wandb.Image(image.path), image.step, image.timestamp
        for text in batch.texts:
            table = self.wandb.Table(columns=["text"], data=[[text.text]])
            yield key(text.name), table, text.step, text.timestamp
        for histogram in batch.histograms:
            bins = (list(histogram.counts), list(histogram.edges))
            value = self.wandb.Histogram(np_histogram=bins)
            yield key(histogram.name), value, histogram.step, histogram.timestamp

    def _log_row(self, row: Row) -> None:
        values = {STEP_KEY: row.step, "_timestamp": row.timestamp, **row.values}
        self.run.log(values, step=self._next_row, commit=True)
        self._next_row += 1

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        """Set Tracelet tags as W&B tags, replacing an earlier value of the same key."""
        current = list(self.run.tags or ())
        for key, value in tags.items():
            text = key if value == "" else f"{key}:{value}"
            legal = legal_tag(text)
            if legal != text:
                self._names.claim(text, legal)
            current = [tag for tag in current if tag.partition(":")[0] != key]
            current.append(legal)
        self.run.tags = tuple(current)

    def _log_artifacts(self, batch: Batch) -> None:
        """One W&B artifact per logged file or bundle (the files of one version)."""
        for (name, version, kind), files in _artifact_groups(batch.artifacts).items():
            artifact = self.wandb.Artifact(name, type=kind)
            for local, artifact_path in files:
                artifact.add_file(local, name=artifact_path)
            self.run.log_artifact(artifact, aliases=[f"tracelet-v{version}"])

    def finish_run(self, status: RunStatus) -> None:
        """End the W&B run with the exit code of ``status``."""
        run, self.run = self.run, None
        run.finish(exit_code=EXIT_CODES[status])

    def stop(self) -> None:
        """End a run whose final status never came (delivery stopped): preempting, code 1."""
        run, self.run = self.run, None
        if run is not None:
            run.mark_preempting()
            run.finish(exit_code=1)

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """``[entity/]project/name:tracelet-v<version>``, as ``run.use_artifact`` takes it."""
        project = self._given("project") or run.project
        entity = self._given("entity")
        prefix = f"{entity}/{project}" if entity else project
        return f"{prefix}/{legal_artifact_name(artifact_path)}:tracelet-v{version}"


@contextlib.contextmanager
def _not_at_shutdown() -> Iterator[None]:
    """W&B cannot start while Python exits (its imports and service register exit hooks,
    which CPython refuses then): that is a permanent failure for this run, not a retry."""
    try:
        yield
    except RuntimeError as error:
        if "shutdown" not in str(error):
            raise
        raise PermanentBackendError(
            "Python is exiting before the W&B run could start; `tracelet sync` delivers "
            "this run to W&B"
        ) from error


def _artifact_groups(
    artifacts: Iterable[Any],
) -> dict[tuple[str, int, str], list[tuple[str, str]]]:
    """Artifact records by W&B artifact (name, version, type): each file's local copy and
    path. A bundle's files (paths under ``<bundle name>/``) form one artifact named after
    the bundle; a single file's artifact is named after its artifact path."""
    groups: dict[tuple[str, int, str], list[tuple[str, str]]] = {}
    for record in artifacts:
        bundle = record.artifact_path.startswith(f"{record.name}/")
        name = legal_artifact_name(record.name if bundle else record.artifact_path)
        groups.setdefault((name, record.version, record.kind), []).append(
            (str(Path(record.path)), record.artifact_path)
        )
    return groups
