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
import logging
import os
import time
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
    bundle_name,
)
from tracelet_wandb import sessions
from tracelet_wandb.names import (
    NAMES_KEY,
    ROWS_KEY,
    SEQ_KEY,
    STEP_KEY,
    TAGS_KEY,
    legal_artifact_name,
    legal_tag,
    name_map,
)
from tracelet_wandb.plugin import OPTIONS
from tracelet_wandb.rows import Row, group_rows
from tracelet_wandb.run_file import RunFileError, ended, session_files

logger = logging.getLogger("tracelet")

EXIT_CODES = {
    RunStatus.FINISHED: 0,
    RunStatus.FAILED: 1,
    RunStatus.CRASHED: 1,
    RunStatus.KILLED: 255,
}
"""Tracelet's final status as a W&B exit code (255: W&B's own code for Ctrl-C)."""
MODES = ("online", "offline", "disabled")
MODE_ALIASES = {"dryrun": "offline", "run": "online", "shared": "online"}
"""W&B's other names for its modes (``shared``: several writers, online)."""
ENVIRONMENT = {option.name: option.env for option in OPTIONS if option.env}
"""Each option's ``WANDB_*`` variable, read when the option is not given."""


class WandbBackend(BackendPlugin):
    """Delivers a Tracelet run to Weights & Biases (online or offline)."""

    def __init__(self) -> None:
        super().__init__()
        self.wandb: Any = None
        self.run: Any = None
        self._names = name_map()
        self._recorded: dict[str, dict[str, str]] = {NAMES_KEY: {}, TAGS_KEY: {}}
        self._mapped_tags: dict[str, str] = {}
        self._delivered = 0
        """The last batch W&B has whole."""
        self._rows_whole = 0
        """History rows written when that batch was whole."""
        self._next_row = 0
        """History rows written in all (``_step`` of the next row)."""
        self._mode = "online"
        self._earlier: list[Path] = []
        self._skipped: set[str] = set()

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Check the options together: ``mode`` is one W&B knows."""
        super().initialize(config)
        mode = self.config.get("mode")
        if mode is not None and mode not in (*MODES, *MODE_ALIASES):
            raise ConfigurationError(
                f"wandb option 'mode' must be one of {', '.join(MODES)}, not {mode!r}"
            )

    def start(self) -> None:
        """Import W&B (on the delivery worker, never on the training thread)."""
        with _not_at_shutdown():
            import wandb

        self.wandb = wandb

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Start (or resume) the W&B run whose id is the Tracelet run id. Retried after a
        failure, it goes on with the W&B run already started (never a second one)."""
        if self.run is None:
            with _not_at_shutdown():
                self._init(run)
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)
        state = self._held()
        if self._mode == "offline":
            self._carry_over(state)
        self._names = name_map()
        self._names.load(state.names, state.existing)
        self._recorded = {NAMES_KEY: dict(state.names), TAGS_KEY: dict(state.tag_names)}
        self._mapped_tags = dict(state.tag_names) | self._option_tag_names()
        self._delivered, self._rows_whole, self._next_row = state.seq, state.rows, state.next_row

    def _held(self) -> sessions.Delivered:
        """What W&B already holds of this run (nothing for a new one)."""
        if self._mode == "online":
            return sessions.from_live_run(self.run)
        if self._mode != "offline":
            return sessions.Delivered()
        try:
            return sessions.from_run_files(self._earlier)
        except RunFileError as error:
            raise PermanentBackendError(
                f"an earlier session of this W&B run is damaged ({error}); move its "
                "offline-run folder away to start the W&B run afresh"
            ) from error

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
        mode = MODE_ALIASES.get(mode, mode)
        return mode, base.model_copy(update={"root_dir": str(root)}).wandb_dir

    def _given(self, name: str) -> Any:
        """Option ``name``, else its ``WANDB_*`` variable as it is now (W&B itself reads
        them once per process), else None."""
        value = self.config.get(name)
        if value is None and name in ENVIRONMENT:
            value = os.environ.get(ENVIRONMENT[name]) or None
        return value

    def _tags_given(self) -> list[str] | None:
        """The ``tags`` option (or ``WANDB_TAGS``, comma-separated), each within 64 characters."""
        tags = self._given("tags")
        if isinstance(tags, str):
            tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
        return None if tags is None else [legal_tag(str(tag)) for tag in tags]

    def _option_tag_names(self) -> dict[str, str]:
        """W&B tag to original, for the option tags that had to be cut."""
        given = self._given("tags")
        if isinstance(given, str):
            given = [tag.strip() for tag in given.split(",")]
        return {legal_tag(str(t)): str(t) for t in given or () if legal_tag(str(t)) != str(t)}

    def held_batches(self) -> int | None:
        """Offline, the last batch the earlier sessions' run files hold: the
        ``tracelet/seq`` of their summary, which W&B writes after the batch's rows (a
        service killed with its training process may not have written what it was sent).
        Online, None: the server's summary may lag its history, so the cursor decides."""
        return self._delivered if self._mode == "offline" else None

    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch``: history rows, config, tags, artifacts, then the batch's seq."""
        if batch.seq <= self._delivered:
            return
        rows = group_rows(self._entries(batch))
        held = self._next_row - self._rows_whole if batch.seq == self._delivered + 1 else 0
        for row in rows[held:]:  # a batch cut off halfway goes on from its first missing row
            self._log_row(row)
        if batch.params:
            config = {self._names(k): v for k, v in batch.params.items()}
            self.run.config.update(config, allow_val_change=True)
        if batch.tags:
            self._set_tags(batch.tags)
        self._log_artifacts(batch)
        summary: dict[str, Any] = {SEQ_KEY: batch.seq, ROWS_KEY: self._next_row}
        for key, mapped in ((NAMES_KEY, self._names.changed()), (TAGS_KEY, self._mapped_tags)):
            if mapped != self._recorded[key]:
                summary[key] = self._recorded[key] = dict(mapped)
        self.run.summary.update(summary)
        self._delivered, self._rows_whole = batch.seq, self._next_row

    def _entries(self, batch: Batch) -> Iterator[tuple[str, Any, int, float]]:
        """Every history value of ``batch``: metrics, then images, texts and histograms."""
        key, wandb = self._names, self.wandb
        for name, value, step, timestamp in batch.metrics:
            yield key(name), value, step, timestamp
        media = [
            *((i, lambda i=i: wandb.Image(i.path)) for i in batch.images),
            *((t, lambda t=t: wandb.Table(columns=["text"], data=[[t.text]])) for t in batch.texts),
            *(
                (h, lambda h=h: wandb.Histogram(np_histogram=(h.counts, h.edges)))
                for h in batch.histograms
            ),
        ]
        for record, build in media:
            try:
                value = build()
            except (OSError, ValueError) as error:  # no retry makes W&B take it
                self._skip(record, error)
                continue
            yield key(record.name), value, record.step, record.timestamp

    def _skip(self, record: Any, error: Exception) -> None:
        """Report (once per name) a record W&B cannot take; the local store keeps it."""
        if record.name not in self._skipped:
            self._skipped.add(record.name)
            logger.warning(
                "tracelet wandb: %r at step %d is kept in the local store only: %r",
                record.name,
                record.step,
                error,
            )

    def _log_row(self, row: Row) -> None:
        """One ``log`` call: the row's values, its Tracelet step, its timestamp."""
        values = {STEP_KEY: row.step, "_timestamp": row.timestamp, **row.values}
        self.run.log(values, step=self._next_row, commit=True)
        self._next_row += 1

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        """Set Tracelet tags as W&B tags (``key:value``), replacing a key's earlier value."""
        current = list(self.run.tags or ())
        for key, value in tags.items():
            text = key if value == "" else f"{key}:{value}"
            legal = legal_tag(text)
            if legal != text:
                self._mapped_tags[legal] = text
            current = [tag for tag in current if self._tag_key(tag) != key]
            current.append(legal)
        self.run.tags = tuple(current)

    def _tag_key(self, tag: str) -> str:
        """The Tracelet tag key a W&B tag holds (a cut tag: its original's)."""
        return self._mapped_tags.get(tag, tag).partition(":")[0]

    def _log_artifacts(self, batch: Batch) -> None:
        """One W&B artifact per logged file or bundle (the files of one version)."""
        for (name, version, kind), files in _artifact_groups(batch.artifacts).items():
            artifact = self.wandb.Artifact(name, type=kind)
            for local, artifact_path in files:
                artifact.add_file(local, name=artifact_path)
            self.run.log_artifact(artifact, aliases=[f"tracelet-v{version}"])

    def finish_run(self, status: RunStatus) -> None:
        """End the W&B run with the exit code of ``status`` (retried until it ends)."""
        self._finish(self.run, EXIT_CODES[status])
        self.run = None

    def stop(self) -> None:
        """End a run whose final status never came (delivery stopped): preempting, code 1."""
        run, self.run = self.run, None
        if run is not None:
            run.mark_preempting()
            self._finish(run, 1)

    def _finish(self, run: Any, exit_code: int) -> None:
        """``run.finish``; offline, also wait (up to ``finish_timeout``) until ``wandb-core``
        has written the whole run file, so a session that ends is on disk whole."""
        run.finish(exit_code=exit_code)
        if self._mode != "offline":
            return
        deadline = time.monotonic() + self.config["finish_timeout"]
        while not ended(run.settings.sync_file) and time.monotonic() < deadline:
            time.sleep(0.01)

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
        name = legal_artifact_name(bundle_name(record) or record.artifact_path)
        groups.setdefault((name, record.version, record.kind), []).append(
            (str(Path(record.path)), record.artifact_path)
        )
    return groups
