"""Messages over a pipe: each one behind its length (4 bytes, little-endian) and its codec
(1 byte). A chunk of a batch's points (``("points", chunk)``: point tuples and step records,
built of exact ``str``, ``float`` and ``int`` by the checks at the call) is marshalled,
which encodes it 2.5x faster than pickle and so holds the training process's GIL for less.
A step record may name a metric with a ``str`` subclass (a ``str`` enum member equal to a
checked name): marshal refuses it, and the chunk is sent with its names made plain. Every
other message is pickled: marshal would turn an object that has the buffer protocol (a
NumPy scalar among a batch's parameters) into ``bytes`` without a word."""

from __future__ import annotations

import contextlib
import marshal
import pickle
import struct
from typing import Any, BinaryIO

from tracelet.core.points import with_plain_names

_HEAD = struct.Struct("<IB")
_PICKLE = 0
_MARSHAL = 1


def encode(message: tuple[Any, ...]) -> bytes:
    """``message`` as one frame."""
    if message[0] == "points":
        try:
            return _frame(marshal.dumps(message, marshal.version), _MARSHAL)
        except ValueError:  # a name of a str subclass (else pickle keeps what it is): rare,
            # so the common chunk is never checked, and this one is encoded twice
            message = ("points", with_plain_names(message[1]))
            with contextlib.suppress(ValueError):
                return _frame(marshal.dumps(message, marshal.version), _MARSHAL)
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
    if codec == _MARSHAL:
        return marshal.loads(body)
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
