"""Messages over a pipe: each one behind its length (4 bytes, little-endian) and its codec
(1 byte). A chunk of a batch's points (``("points", chunk)``: point tuples and step records,
built of exact ``str``, ``float`` and ``int`` by the checks at the call) travels
:func:`~tracelet.core.points.packed` (marshalled, which encodes it 2.5x faster than pickle
and so holds the training process's GIL for less); the dispatcher packs it itself, since
the batch keeps it packed (one marshal refuses is pickled). Every other message is
pickled: marshal would turn an object that has the buffer protocol (a NumPy scalar among a
batch's parameters) into ``bytes`` without a word."""

from __future__ import annotations

import marshal
import pickle
import struct
from typing import Any, BinaryIO

from tracelet.core.points import packed

_HEAD = struct.Struct("<IB")
_PICKLE = 0
_POINTS = 2
"""The codec of a packed chunk of points, the body of ``("points", chunk)``."""


def encode(message: tuple[Any, ...]) -> bytes:
    """``message`` as one frame (a chunk of points packed here unless it came packed)."""
    if message[0] == "points":
        chunk = message[1]
        body = chunk if chunk.__class__ is bytes else packed(chunk)
        if body.__class__ is bytes:
            return _frame(body, _POINTS)
    return _frame(pickle.dumps(message, pickle.HIGHEST_PROTOCOL), _PICKLE)


def _frame(body: bytes, codec: int) -> bytes:
    return _HEAD.pack(len(body), codec) + body


def write_frame(stream: BinaryIO, message: tuple[Any, ...]) -> None:
    """Write ``message`` to ``stream`` as one frame and flush it."""
    stream.write(encode(message))
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next message on ``stream``; None once it has ended (a frame cut short included).
    A message that cannot be decoded raises, and the stream stays in step."""
    head = _read_exactly(stream, _HEAD.size)
    if head is None:
        return None
    size, codec = _HEAD.unpack(head)
    body = _read_exactly(stream, size)
    if body is None:
        return None
    if codec == _POINTS:
        return ("points", marshal.loads(body))
    if codec == _PICKLE:
        return pickle.loads(body)
    raise ValueError(f"unknown codec {codec} in a journal frame (a writer of another version?)")


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    """``size`` bytes, reading again after a short read (a raw pipe returns what it has);
    None at the end of the stream."""
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
