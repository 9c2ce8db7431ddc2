"""Distributed training: which rank this process is, and the channel that carries the other
ranks' system samples to rank zero.

The rank is decided when a run starts, never at import: ``torch.distributed`` when the
training script has initialised it, else the launcher's ``RANK`` / ``LOCAL_RANK`` /
``WORLD_SIZE`` (torchrun, Accelerate, DeepSpeed), else SLURM's ``SLURM_PROCID`` /
``SLURM_LOCALID`` / ``SLURM_NTASKS``, else a single process. Tracelet never imports torch
for this: it looks only at a ``torch.distributed`` the script has already imported.

:class:`RankChannel` uses the key-value store ``torch.distributed`` already shares between
the ranks (the one its rendezvous made). Only the collector threads touch it, each call a
short request to the store's server, so a slow or gone channel never reaches a training
loop: a sample that cannot be sent or read is dropped, and the next one tried.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

import attrs

logger = logging.getLogger("tracelet")
CHANNEL_PREFIX = "tracelet/system"


@attrs.frozen
class RankInfo:
    """Where this process stands in a distributed job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    source: str = "single process"
    """What told us: ``torch.distributed``, ``RANK``, ``SLURM_PROCID`` or single process."""

    @property
    def is_zero(self) -> bool:
        """Whether this is rank zero (the only rank that logs, by default)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether the job has more than one rank."""
        return self.world_size > 1


def current_rank(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's rank, decided now (see the module's docstring for the order)."""
    environ = os.environ if environ is None else environ
    dist = _initialised_torch_distributed()
    if dist is not None:
        local = _int(environ, "LOCAL_RANK", _int(environ, "SLURM_LOCALID", 0))
        return RankInfo(dist.get_rank(), local, dist.get_world_size(), "torch.distributed")
    if "RANK" in environ:
        local = _int(environ, "LOCAL_RANK", 0)
        return RankInfo(_int(environ, "RANK", 0), local, _int(environ, "WORLD_SIZE", 1), "RANK")
    if "SLURM_PROCID" in environ:
        world = _int(environ, "SLURM_NTASKS", 1)
        local = _int(environ, "SLURM_LOCALID", 0)
        return RankInfo(_int(environ, "SLURM_PROCID", 0), local, world, "SLURM_PROCID")
    return RankInfo()


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        logger.warning("tracelet: ignoring %s=%r (not an integer)", name, value)
        return default


def _initialised_torch_distributed() -> Any:
    """``torch.distributed`` if the script imported and initialised it, else None."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist
    except Exception:  # a half-imported or broken torch: no distributed view
        return None
    return None


class RankChannel:
    """Carries system samples from every other rank to rank zero.

    Each rank keeps one key, ``<r>``, under the ``tracelet/system`` prefix of
    ``torch.distributed``'s default store, and overwrites it with its latest sample and
    that sample's number; rank zero reads each key and keeps a sample it has not seen. One
    key per rank: the store never grows, and a send that fails leaves nothing behind.
    """

    def __init__(self, store: Any, rank: RankInfo) -> None:
        self.store = store
        self.rank = rank
        self._sent = 0
        self._seen: dict[int, int] = {}
        """Per other rank, the number of its latest sample read (on rank zero)."""

    @classmethod
    def connect(cls, rank: RankInfo) -> RankChannel | None:
        """The channel, once ``torch.distributed`` is initialised (None before)."""
        dist = _initialised_torch_distributed()
        if dist is None:
            return None
        try:
            from torch.distributed.distributed_c10d import _get_default_store

            store = dist.PrefixStore(CHANNEL_PREFIX, _get_default_store())
        except Exception as error:  # a backend without a store: no channel
            logger.debug("tracelet: no channel between ranks (%r)", error)
            return None
        return cls(store, rank)

    def send(self, sample: Mapping[str, float]) -> None:
        """Send this rank's latest sample to rank zero (replacing the one before)."""
        self._sent += 1
        message = {"number": self._sent, "sample": dict(sample)}
        self.store.set(str(self.rank.rank), json.dumps(message))

    def receive(self) -> dict[int, dict[str, float]]:
        """On rank zero: each other rank's latest sample, if new since the last call."""
        received = {}
        for rank in range(1, self.rank.world_size):
            key = str(rank)
            if not self.store.check([key]):
                continue
            message = json.loads(self.store.get(key))
            if message["number"] != self._seen.get(rank):
                self._seen[rank] = message["number"]
                received[rank] = message["sample"]
        return received


class SamplePublisher:
    """Stands in for the run on a rank that does not log: the system collector's samples
    (``system/<key>``) go to rank zero, whose run shows them as ``system/rank<r>/<key>``."""

    def __init__(self, rank: RankInfo) -> None:
        self.rank = rank
        self.latest_system: dict[str, float] = {}
        self._channel: RankChannel | None = None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Send one sample (dropped while ``torch.distributed`` is not initialised)."""
        self._channel = self._channel or RankChannel.connect(self.rank)
        if self._channel is None:
            return
        try:
            self._channel.send({k.removeprefix("system/"): v for k, v in metrics.items()})
        except Exception as error:  # the job is ending, or the store's server is gone
            logger.debug("tracelet: a system sample for rank zero was dropped (%r)", error)


class RankGatherer:
    """On rank zero: the other ranks' latest samples, keyed ``rank<r>/<key>``."""

    def __init__(self, rank: RankInfo) -> None:
        self.rank = rank
        self._channel: RankChannel | None = None

    def gather(self) -> dict[str, float]:
        """The latest sample of each rank that sent one since the last call."""
        self._channel = self._channel or RankChannel.connect(self.rank)
        if self._channel is None:
            return {}
        try:
            received = self._channel.receive()
        except Exception as error:  # the job is ending, or the store's server is gone
            logger.debug("tracelet: the other ranks' samples could not be read (%r)", error)
            return {}
        return {
            f"rank{rank}/{key}": value
            for rank, sample in received.items()
            for key, value in sample.items()
        }
