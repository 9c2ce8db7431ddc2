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
    """The next message on ``stream``; None once it has ended (a frame cut short included).
    A message that cannot be unpickled raises, and the stream stays in step."""
    head = _read_exactly(stream, _LENGTH.size)
    if head is None:
        return None
    body = _read_exactly(stream, _LENGTH.unpack(head)[0])
    return None if body is None else pickle.loads(body)


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
