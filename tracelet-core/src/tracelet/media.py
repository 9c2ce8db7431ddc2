"""Images and files on their way into the local store.

The training thread only takes a snapshot (:class:`PendingImage`, :class:`PendingArtifact`);
the dispatcher encodes and copies them into the store's ``files/<run id>/`` folder and
journals the resulting :class:`~tracelet.records.Image` and
:class:`~tracelet.records.Artifact` records.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import attrs

from tracelet.records import Artifact, Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@attrs.frozen
class PendingImage:
    """An image as logged: PNG bytes or a private copy of the pixel array."""

    name: str
    step: int
    timestamp: float
    data: Any

    @classmethod
    def snapshot(cls, name: str, image: Any, step: int, timestamp: float) -> PendingImage:
        """Copy what the caller may change later; raise ``TypeError`` for unusable input."""
        return cls(name, step, timestamp, _snapshot(name, image))

    @property
    def nbytes(self) -> int:
        """Bytes this image holds in memory until it is journaled."""
        return len(self.data) if isinstance(self.data, bytes) else int(self.data.nbytes)

    def store(self, folder: Path, seq: int, index: int) -> Image:
        """Encode to PNG under ``folder`` and return the journal record."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{seq:06d}-{index:03d}-{_safe(self.name)}-{self.step}.png"
        path.write_bytes(self.data if isinstance(self.data, bytes) else encode_png(self.data))
        return Image(self.name, self.step, self.timestamp, str(path))


@attrs.frozen
class PendingArtifact:
    """A file to copy (or, for files Tracelet wrote itself, move) into the store."""

    name: str
    source: str
    artifact_path: str
    kind: str
    timestamp: float
    version: int = 1
    move: bool = False

    def store(self, folder: Path) -> Artifact:
        """Put the file at ``folder/v<version>/<artifact_path>``; return the journal record."""
        target = stored_artifact_path(folder, self.artifact_path, self.version)
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.move:
            os.replace(self.source, target)
        else:
            shutil.copyfile(self.source, target)
        return Artifact(
            name=self.name,
            artifact_path=self.artifact_path,
            path=str(target),
            size_bytes=target.stat().st_size,
            sha256=file_sha256(target),
            kind=self.kind,
            timestamp=self.timestamp,
            version=self.version,
        )


def stored_artifact_path(folder: Path, artifact_path: str, version: int) -> Path:
    """Where version ``version`` of ``artifact_path`` lives under a run's artifact folder."""
    return folder / f"v{version}" / artifact_path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _snapshot(name: str, image: Any) -> Any:
    if isinstance(image, bytes | bytearray):
        if not bytes(image[:8]) == PNG_SIGNATURE:
            raise TypeError(f"image {name!r}: bytes must be a PNG file's contents")
        return bytes(image)
    if isinstance(image, str | os.PathLike):
        if not Path(image).is_file():
            raise FileNotFoundError(f"image {name!r}: {str(image)!r} is not a file")
        data = Path(image).read_bytes()
        if data[:8] != PNG_SIGNATURE:
            return _snapshot(name, _read_with_pillow(name, image))
        return data
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if hasattr(image, "__array__") or isinstance(image, list):
        import numpy as np

        return _to_hwc_uint8(name, np.array(image, copy=True))
    raise TypeError(
        f"image {name!r}: cannot log a {type(image).__name__}; pass a NumPy array "
        "(HW, HWC or CHW), a tensor, a PIL image, PNG bytes or a path to an image file"
    )


def _read_with_pillow(name: str, path: str | os.PathLike[str]) -> Any:
    try:
        from PIL import Image as PILImage
    except ImportError:
        raise TypeError(
            f"image {name!r}: {path} is not a PNG; install Pillow to log other formats"
        ) from None
    with PILImage.open(path) as opened:
        return opened.copy()


def _to_hwc_uint8(name: str, array: Any) -> Any:
    import numpy as np

    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.transpose(array, (1, 2, 0))
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise TypeError(
            f"image {name!r}: shape {array.shape} is not an image; use HW, HWC or CHW "
            "with 1, 3 or 4 channels"
        )
    if 0 in array.shape:
        raise TypeError(f"image {name!r}: shape {array.shape} has no pixels")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif not (np.issubdtype(array.dtype, np.number)):
        raise TypeError(f"image {name!r}: pixels of dtype {array.dtype} are not numbers")
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and np.nanmax(array, initial=0.0) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def encode_png(array: Any) -> bytes:
    """Encode an HW (grey), HWC RGB or HWC RGBA ``uint8`` array as PNG."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = array.reshape(height, width * channels)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + (_chunk(b"IEND", b""))
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80]
