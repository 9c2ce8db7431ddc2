"""Reads W&B's run files (``run-<id>.wandb``): the records a run wrote, in order.

A run file is a LevelDB-style log: a 7-byte file header (``:W&B``, a magic number and a
version), then 32 KiB blocks. Each block holds chunks, each with a 7-byte header (CRC32
of type and data, data length, type: 1 full, 2 first, 3 middle, 4 last); a chunk never
straddles blocks, and a block's last few bytes are padding when a header no longer fits.
A record is one full chunk or a first, middles and a last; its data is a protobuf
``wandb_internal_pb2.Record``. W&B 0.31 no longer ships a reader, so this is ours: the
backend reads an offline run's earlier sessions with it, and the tests read everything back.
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7
FILE_IDENT = b":W&B"
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {kind: zlib.crc32(bytes([kind])) for kind in (FULL, FIRST, MIDDLE, LAST)}


class RunFileError(ValueError):
    """A run file that is not one, or is damaged before its end."""


def chunks(data: bytes) -> Iterator[bytes]:
    """The record payloads of a whole run file's bytes, in order.

    A file cut off mid-record (its writer killed) ends at its last whole record.
    """
    if data[:4] != FILE_IDENT:
        raise RunFileError("not a W&B run file (no ':W&B' header)")
    offset, pending = HEADER, bytearray()
    while offset + HEADER <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < HEADER:
            offset += left_in_block
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, offset)
        start = offset + HEADER
        payload = data[start : start + length]
        if kind == 0 and length == 0:  # zero padding before the end of a block
            offset += left_in_block
            continue
        if len(payload) < length:
            return  # cut off while being written
        if kind not in _TYPE_CRC or zlib.crc32(payload, _TYPE_CRC[kind]) != crc:
            raise RunFileError(f"damaged chunk at byte {offset}")
        offset = start + length
        if kind == FULL:
            yield bytes(payload)
        elif kind == FIRST:
            pending = bytearray(payload)
        elif kind == MIDDLE:
            pending += payload
        else:
            pending += payload
            yield bytes(pending)


def records(path: str | Path) -> Iterator[Any]:
    """Every ``Record`` of the run file at ``path``, in the order W&B wrote them."""
    from wandb.proto import wandb_internal_pb2

    for payload in chunks(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def ended(path: str | Path) -> bool:
    """Whether the run file at ``path`` ends with the run's exit record: ``run.finish()``
    returns before ``wandb-core`` has written everything (a large run: tenths of a second)."""
    from wandb.proto import wandb_internal_pb2

    last = None
    with contextlib.suppress(OSError, RunFileError):
        for last in chunks(Path(path).read_bytes()):  # noqa: B007 - only the last one counts
            pass
    if last is None:
        return False
    record = wandb_internal_pb2.Record()
    record.ParseFromString(last)
    return record.WhichOneof("record_type") == "exit"


def session_files(wandb_dir: str | Path, run_id: str) -> list[Path]:
    """The run files of every offline session of run ``run_id`` under ``wandb_dir``
    (W&B's ``wandb`` folder), oldest first.

    Each session (a resumed run's every start) has its own folder,
    ``offline-run-<YYYYmmdd_HHMMSS>-<run id>[-<n>]`` (``n`` tells apart sessions started
    within one second). They are ordered by the start time in their run record (UTC), or
    by the folder's local time while a session has not written its record yet.
    """
    found = []
    for folder in Path(wandb_dir).glob(f"offline-run-*-{run_id}*"):
        _, _, rest = folder.name.partition("offline-run-")
        timespec, _, tail = rest.partition(f"-{run_id}")
        if tail and not tail.lstrip("-").isdigit():
            continue  # another run whose id starts with this one
        path = folder / f"run-{run_id}.wandb"
        if path.is_file():
            found.append(((_started(path, timespec), int(tail.lstrip("-") or 0)), path))
    return [path for _, path in sorted(found)]


def _started(path: Path, timespec: str) -> float:
    """When the session of run file ``path`` started, in seconds since the epoch."""
    try:
        for record in records(path):
            if record.WhichOneof("record_type") == "run" and record.run.HasField("start_time"):
                return record.run.start_time.ToNanoseconds() / 1e9
    except RunFileError:
        pass
    try:
        return time.mktime(time.strptime(timespec, "%Y%m%d_%H%M%S"))
    except ValueError:
        return 0.0


def item_path(item: Any) -> tuple[str, ...]:
    """The key path of a history, summary or config item (``key`` or ``nested_key``)."""
    return tuple(item.nested_key) if item.nested_key else (item.key,)


def item_value(item: Any) -> Any:
    """The decoded value of an item: W&B writes JSON (``value_json``) by default, and typed
    values (history items only) with ``x_history_value_encoding="typed"``."""
    kind = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if kind is None or kind == "value_json":
        return json.loads(item.value_json)
    if kind == "json":
        return json.loads(item.json)
    return None if kind == "none" else getattr(item, kind)


def items_dict(items: Any) -> dict[str, Any]:
    """History, summary or config items as a (nested) dict of decoded values."""
    result: dict[str, Any] = {}
    for item in items:
        *parents, last = item_path(item)
        target = result
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = item_value(item)
    return result
