"""The Aim backend: one Tracelet run is one Aim run, in a local repository or on a server.

- Repository: ``remote_uri`` (``aim://host:port``; ``http://`` is read as ``aim://``),
  else ``repo_path``, else Aim's own default (the nearest ``.aim`` above the working
  directory, else the working directory). Experiment: ``experiment_name``, else the
  Tracelet project; run name: ``run_name``, else the Tracelet run name.
- Every point is tracked with its own step and the timestamp it was logged at (Aim's
  ``track`` would stamp the moment of delivery); contexts and repeated steps as in
  :mod:`tracelet_aim.names` and :mod:`tracelet_aim.slots`. Parameters go to
  ``run["hparams"]`` under their Tracelet names (``optimizer/lr``), texts to ``Text``
  sequences, images (their files' own bytes) to ``Image`` sequences, histograms to
  ``Distribution`` sequences, artifacts to ``artifacts_uri`` with one entry each.
- Tracelet's own record, ``run["tracelet"]``: the run id, the last batch delivered whole
  (``seq``; a batch delivered again is skipped) and the status. A new run is indexed at
  once and again when it closes, so Aim's queries, ``aim up`` and a resumed Tracelet run
  find it even when the program crashed.
- A remote server gets each batch as one message; a batch counts as delivered once the
  server has acknowledged it, and Tracelet retries it otherwise. Aim's system tracking,
  system parameters and terminal capture stay off unless asked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracelet.plugins import (
    Artifact,
    BackendError,
    BackendPlugin,
    Batch,
    ConfigurationError,
    Image,
    PermanentBackendError,
    RunInfo,
    RunStatus,
    versioned_name,
    versioned_path,
)
from tracelet_aim import remote
from tracelet_aim.names import REPEAT, SUBSET, has_equal_width, sequence_of, tag_name, tag_of
from tracelet_aim.slots import Slots, context_id

logger = logging.getLogger("tracelet")

RECORD = "tracelet"
"""The run attribute holding Tracelet's record of the run: ``run_id``, ``seq``, ``status``."""
PARAMS = "hparams"
ACK_TIMEOUT = 10.0
"""Seconds a remote server may acknowledge nothing before Tracelet calls it unreachable."""


class AimBackend(BackendPlugin):
    """Delivers a Tracelet run to an Aim run."""

    def __init__(self) -> None:
        super().__init__()
        self.aim: Any = None
        self.repo: Any = None
        self.run: Any = None
        self._run_id = ""
        self._tags: list[str] = []
        """The run's Aim tags, kept here: a read from a server waits for its queue."""
        self._refused: set[str] = set()
        self._fits: set[tuple[str, Any, str]] = set()
        """(sequence, subset, kind) known to fit: checked once per run."""
        self._transient: tuple[type[BaseException], ...] = (OSError,)
        self._delivered = 0
        self._sent = 0
        """The batch whose writes are all queued for the server (remote), not yet acknowledged."""
        self._warned_bins = False
        self._local_artifacts = False
        """A remote server, and artifacts copied to this machine (no ``artifacts_uri``)."""

    def initialize(self, config: Mapping[str, Any]) -> None:
        """Check the options together and fix where the repository and artifacts are."""
        super().initialize(config)
        uri = self.config.get("remote_uri")
        if uri is not None:
            self.config["remote_uri"] = server_uri(uri)
        self._local_artifacts = bool(uri) and not self.config.get("artifacts_uri")
        self.config["artifacts_uri"] = self._artifacts_base()

    def _artifacts_base(self) -> str:
        given = self.config.get("artifacts_uri")
        if given:
            if "://" not in given:
                return Path(given).resolve().as_uri()
            return str(given).rstrip("/")
        if self.config.get("remote_uri"):
            return Path("aim-artifacts").resolve().as_uri()
        return (Path(self._repo_root()) / ".aim" / "artifacts").resolve().as_uri()

    def _repo_root(self) -> str:
        """The local repository's root: ``repo_path``, else Aim's default."""
        given = self.config.get("repo_path")
        return str(Path(given).resolve()) if given else default_repo_root()

    def start(self) -> None:
        """Import Aim (on the delivery worker, never on the training thread)."""
        import aim
        from aimrocks.errors import RocksIOError

        remote.exit_never_hangs()
        self.aim = aim
        self._transient = (OSError, RocksIOError)

    def start_run(self, run: RunInfo, resumed: bool) -> None:
        """Open the repository, then continue the run's Aim run (resumed) or create one.
        Safe to retry: a run created by a failed attempt is the one the next one fills."""
        self._run_id = run.id
        if self.repo is None:
            self.repo = self._open_repo()
        if self.run is None:
            self.run = self._create(run, self._find(run.id) if resumed else None)
        self._acknowledged("the run's start")  # a server holds all before reading
        record = self.run.get(RECORD)
        if record is None:
            self.run.name = self.config.get("run_name") or run.name
            self.run[RECORD] = {"run_id": run.id, "seq": 0, "status": "running"}
        else:
            self.run[RECORD, "status"] = "running"
        self._tags = list(self.run.props.tags)
        for tag in self._option_tags():
            if tag not in self._tags:
                self.run.add_tag(tag)
                self._tags.append(tag)
        self._delivered = int((record or {}).get("seq") or 0)
        self._index(self.run.hash)  # a resumed run must find it, even after a crash

    def _open_repo(self) -> Any:
        uri = self.config.get("remote_uri")
        root = self._repo_root()
        try:
            if uri:
                return self.aim.Repo(uri)  # its own connection: never another run's queue
            # Aim writes .aim/VERSION last when it makes a repository: without it, the
            # making was cut short (a training process killed then), so it is done again
            unmade = not (Path(root) / ".aim" / "VERSION").is_file()
            return self.aim.Repo.from_path(root, init=unmade)
        except (*self._transient, RuntimeError) as error:
            where = uri or root
            raise BackendError(f"could not open the Aim repository {where}: {error}") from error

    def _find(self, run_id: str) -> str | None:
        """The hash of the Aim run holding Tracelet run ``run_id``, if any."""
        query = f'run.{RECORD}.run_id == "{run_id}"'
        for found in self.repo.query_runs(query, report_mode=0).iter_runs():
            return str(found.run.hash)
        return None

    def _create(self, run: RunInfo, found: str | None) -> Any:
        """The Aim run (reopened when ``found``); an error other than I/O is permanent, as
        a retry would leave one more empty run behind."""
        try:
            return self.aim.Run(
                run_hash=found,
                repo=self.repo,
                experiment=None if found else self.config.get("experiment_name") or run.project,
                system_tracking_interval=self.config.get("system_tracking_interval"),
                log_system_params=self.config["log_system_params"],
                capture_terminal_logs=self.config["capture_terminal_logs"],
            )
        except self._transient as error:
            raise BackendError(f"Aim could not open the run: {error}") from error
        except Exception as error:
            raise PermanentBackendError(f"Aim could not create the run: {error!r}") from error

    def _option_tags(self) -> list[str]:
        tags = self.config.get("tags") or ()
        if isinstance(tags, str):
            return [tags]
        if isinstance(tags, Mapping):
            return [tag_name(str(k), str(v)) for k, v in tags.items()]
        return [str(tag) for tag in tags]

    def log_batch(self, batch: Batch) -> None:
        """Deliver ``batch`` unless the run already holds it; on a server, wait until the
        server acknowledges it."""
        if batch.seq <= self._delivered:
            return
        if batch.seq != self._sent:  # else queued already: wait for it, never send twice
            self._acknowledged("the batches before it")
            self._write(batch)
            self._sent = batch.seq
        self._acknowledged(f"batch {batch.seq}")
        self._delivered = batch.seq

    def _write(self, batch: Batch) -> None:
        slots = Slots(self.run, lambda: self._acknowledged(f"batch {batch.seq}'s first points"))
        self._track_metrics(batch, slots)
        self._track_objects(batch, slots)
        for name, value in batch.params.items():
            self.run[PARAMS, name] = value
        if batch.tags:
            self._set_tags(batch.tags)
        for artifact in batch.artifacts:
            self._upload(artifact)
        self.run[RECORD, "seq"] = batch.seq

    def _acknowledged(self, what: str) -> None:
        """Wait (bounded) until a server holds everything sent; else raise to retry."""
        if not remote.sender_alive(self.run):  # the server refused a write: Aim gave up
            raise PermanentBackendError(
                f"Aim stopped sending to the server at {self.config['remote_uri']} after an "
                "error (see Aim's log above); `tracelet sync` delivers the rest later"
            )
        if not remote.drained(self.run, ACK_TIMEOUT):
            raise BackendError(
                f"the Aim server at {self.config['remote_uri']} acknowledged nothing of "
                f"{what} for {ACK_TIMEOUT:g} s ({remote.pending(self.run)} messages "
                "waiting); retrying"
            )

    def _track_metrics(self, batch: Batch, slots: Slots) -> None:
        for name, value, step, timestamp in batch.metrics:
            sequence, context = sequence_of(name)
            chosen = slots.place(sequence, context, step, (timestamp, value))
            self._track(name, value, timestamp, sequence, step, chosen)

    def _track(self, name: str, value: Any, timestamp: float, *where: Any) -> None:
        """Track one value (the public ``track`` would stamp the time of delivery). Aim
        refuses a value of another type than its sequence holds (a text named like a
        metric): that value is skipped, with one warning per name."""
        sequence, step, context = where
        tracker = self.run._tracker
        try:
            self._check_type(tracker, sequence, context, value)
            tracker._track(value, timestamp, sequence, step, None, context=context)
        except ValueError as error:
            if name not in self._refused:
                self._refused.add(name)
                logger.warning(
                    "tracelet aim: Aim refuses %r (%s); such values stay in the local store",
                    name,
                    error,
                )

    def _check_type(self, tracker: Any, sequence: str, context: dict, value: Any) -> None:
        """Raise ValueError for a value of another kind than its sequence holds, repeats
        included (Aim's own check lets the first text into a metric's sequence). Once a
        sequence holds a kind, that kind is known to fit it for the rest of the run."""
        from aim.sdk.utils import get_object_typename

        given = get_object_typename(value)
        given = "number" if given in ("float", "int") else given
        first = {key: value for key, value in context.items() if key != REPEAT}
        known = (sequence, first.get(SUBSET), given)
        if known in self._fits:
            return
        info = tracker.sequence_infos.get((context_id(tuple(first.items())), sequence))
        held = info.dtype if info is not None and info.initialized else None
        held = "number" if held in ("float", "int") else held
        if held and held != given:
            raise ValueError(f"sequence {sequence!r} holds {held}, not {given}")
        if held:
            self._fits.add(known)

    def _track_objects(self, batch: Batch, slots: Slots) -> None:
        aim = self.aim
        objects = [(t.name, t.step, t.timestamp, lambda t=t: aim.Text(t.text)) for t in batch.texts]
        objects += [(i.name, i.step, i.timestamp, lambda i=i: self._image(i)) for i in batch.images]
        objects += [
            (h.name, h.step, h.timestamp, lambda h=h: self._distribution(h))
            for h in batch.histograms
        ]
        for name, step, timestamp, make in objects:
            sequence, context = sequence_of(name)
            chosen = slots.place(sequence, context, step, (timestamp,))
            self._track(name, make(), timestamp, sequence, step, chosen)

    def _image(self, image: Image) -> Any:
        """An Aim image holding the file's own bytes (Aim would encode it again)."""
        from aim.storage.types import BLOB

        made = self.aim.Image(image.path)  # reads size, mode and format
        made.storage["data"] = BLOB(data=Path(image.path).read_bytes())
        return made

    def _distribution(self, histogram: Any) -> Any:
        import numpy

        edges = histogram.edges
        if not self._warned_bins and not has_equal_width(edges):
            self._warned_bins = True
            logger.warning(
                "tracelet aim: histogram %r has bins of unequal width; Aim keeps its counts "
                "and range and shows equal-width bins (the local store keeps the edges)",
                histogram.name,
            )
        counts = numpy.asarray(histogram.counts, dtype=float)
        return self.aim.Distribution(hist=counts, bin_range=(edges[0], edges[-1]))

    def _set_tags(self, tags: Mapping[str, str]) -> None:
        """Tracelet tags as Aim tags, a key's new value replacing its old one."""
        for key, value in tags.items():
            wanted = tag_name(key, value)
            for old in [t for t in self._tags if tag_of(t)[0] == key and t != wanted]:
                self.run.remove_tag(old)
                self._tags.remove(old)
            if wanted not in self._tags:
                self.run.add_tag(wanted)
                self._tags.append(wanted)

    def _upload(self, artifact: Artifact) -> None:
        """Copy the file to ``artifacts_uri``/<run id>/<name> and record it on the run."""
        from aim.sdk.objects.artifact import Artifact as AimArtifact

        name = versioned_path(artifact)
        base = f"{self.config['artifacts_uri']}/{self._run_id}"
        if self._local_artifacts:
            self._local_artifacts = False
            logger.warning(
                "tracelet aim: artifacts of run %s are copied to %s on this machine, where "
                "the Aim server cannot read them: set the aim option artifacts_uri to "
                "storage your team shares (s3://bucket/aim)",
                self._run_id,
                base,
            )
        made = AimArtifact(artifact.path, uri=base, name=name)
        try:
            made.upload(block=True)
        except OSError as error:
            raise BackendError(f"could not copy artifact {name!r} to {base}: {error}") from error
        self.run.meta_run_tree.subtree("artifacts")[name] = made

    def finish_run(self, status: RunStatus) -> None:
        """Record the final status, close the run and index it."""
        self._close(status.value)

    def stop(self) -> None:
        """Close a run whose final status never came (delivery stopped; its record keeps
        ``running``). What a server has not acknowledged within a second is dropped from
        Aim's queue, so that the program can exit: the journal keeps it for a resume or
        ``tracelet sync``."""
        if self.run is None:
            return
        try:
            if remote.drained(self.run, 1.0):
                self._close(None)
                return
        except Exception as error:
            logger.debug("tracelet aim: closing the run failed: %r", error)
        dropped = remote.drop_pending(self.run)
        self.run = None
        logger.warning(
            "tracelet aim: the Aim server never acknowledged %d writes; they were dropped "
            "and stay in the local store (tracelet sync delivers them)",
            dropped,
        )

    def _close(self, status: str | None) -> None:
        self._acknowledged("the run's last batches")
        if status is not None:
            self.run[RECORD, "status"] = status
            self._acknowledged("the run's status")
        aim_hash = self.run.hash
        self.run.close()
        self.run = None
        self._index(aim_hash)
        self.repo = None  # a server's resources are released now, not at exit

    def _index(self, aim_hash: str) -> None:
        """Index the run, so that queries and ``aim up`` see it at once (Aim 3.29 leaves
        that to a running ``aim up``). Another process indexing at the same moment can
        make it fail: then ``aim up`` (or ``aim storage reindex``) indexes it later."""
        try:
            if self.repo.is_remote_repo:
                index = self.repo._get_index_tree("meta", 0).view(())
                meta = self.repo.request_tree("meta", aim_hash, read_only=True)
                meta.subtree("meta").subtree("chunks").subtree(aim_hash).finalize(index=index)
            else:
                from aim.sdk.index_manager import RepoIndexManager

                RepoIndexManager.get_index_manager(self.repo).index(aim_hash)
        except Exception as error:
            logger.warning("tracelet aim: could not index Aim run %s now: %s", aim_hash, error)

    def artifact_uri(self, run: RunInfo, artifact_path: str, version: int) -> str:
        """``<artifacts_uri>/<run id>/<artifact name>``: where the file is copied."""
        name = versioned_name(artifact_path, version)
        return f"{self.config['artifacts_uri']}/{run.id}/{name}"


def server_uri(uri: str) -> str:
    """``remote_uri`` as Aim's ``aim://host:port`` (``http://`` and ``https://`` accepted:
    Aim finds out itself whether the server speaks TLS)."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "aim", uri
    host = rest.strip("/")
    if scheme not in ("aim", "http", "https") or not host or "/" in host:
        raise ConfigurationError(
            f"aim option 'remote_uri' must be a server address like aim://host:53800, not {uri!r}"
        )
    return f"aim://{host}"


def default_repo_root() -> str:
    """Aim's default repository root: the nearest folder above the working directory that
    holds an Aim repository, else the working directory."""
    name = os.environ.get("__AIM_REPO_NAME__") or ".aim"
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / name).is_dir():
            return str(folder)
    return str(here)
