"""Messages over a pipe: each one pickled, behind its length (4 bytes, little-endian)."""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

_LENGTH = struct.Struct("<I")


def encode(message: Any) -> bytes:
    """``message`` as one frame."""
    body = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(body)) + body


def write_frame(stream: BinaryIO, message: Any) -> None:
    """Write ``message`` to ``stream`` as one frame and flush it."""
    stream.write(encode(message))
    stream.flush()


def read_frame(stream: BinaryIO) -> Any:
    """The next message on ``stream`` (a buffered reader); None once it has ended, a frame
    cut short included."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    return pickle.loads(body) if len(body) == size else None
