"""The artifact model: typed, versioned bundles of files, objects and references.

Build a :class:`TraceletArtifact`, add files, Python objects, models and external
references, and log it with ``experiment.log_artifact(artifact)``. Objects are serialised
at that moment (later changes to them are not captured); files are copied into the local
store off the training thread; every backend then receives them under ``<name>/...``.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from tracelet.media import file_sha256
from tracelet.values import check_relative_path, check_text

if TYPE_CHECKING:
    from tracelet.records import Artifact
    from tracelet.storage import LocalStore

ARTIFACT_KINDS = {
    ".pt": "checkpoint",
    ".pth": "checkpoint",
    ".ckpt": "checkpoint",
    ".safetensors": "weights",
    ".bin": "weights",
    ".h5": "model",
    ".onnx": "model",
    ".pkl": "model",
    ".joblib": "model",
    ".png": "image",
    ".jpg": "image",
    ".jpeg": "image",
    ".svg": "viz",
    ".html": "report",
    ".json": "config",
    ".yaml": "config",
    ".yml": "config",
    ".toml": "config",
    ".csv": "dataset",
    ".parquet": "dataset",
    ".npz": "dataset",
}
"""File suffixes ``automagic_artifacts`` picks up, and the artifact type each becomes."""


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """The artifact type a file's suffix suggests (``custom`` when unknown)."""
    return ARTIFACT_KINDS.get(Path(path).suffix.lower(), "custom")


MANIFEST_NAME = "tracelet-artifact.json"
SERIALIZERS = ("json", "pickle", "yaml", "torch")


class ArtifactType(enum.Enum):
    """What an artifact is, so backends can file it sensibly."""

    MODEL = "model"
    CHECKPOINT = "checkpoint"
    WEIGHTS = "weights"
    DATASET = "dataset"
    SAMPLE = "sample"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
    VISUALIZATION = "viz"
    REPORT = "report"
    CONFIG = "config"
    CODE = "code"
    CUSTOM = "custom"


@attrs.define
class ArtifactFile:
    """A local file inside an artifact."""

    local_path: str
    artifact_path: str
    description: str | None = None
    size_bytes: int = 0
    checksum: str | None = None


@attrs.define
class ArtifactObject:
    """A Python object inside an artifact, serialised with ``serializer`` when logged."""

    obj: Any
    name: str
    serializer: str = "json"
    description: str | None = None


@attrs.define
class ArtifactReference:
    """An external location (S3, GCS, HTTP ...) recorded in the artifact's manifest."""

    uri: str
    size_bytes: int | None = None
    description: str | None = None


@attrs.frozen
class ArtifactResult:
    """Where one backend files a logged artifact."""

    backend: str
    uri: str
    version: str
    metadata: dict[str, Any] = attrs.field(factory=dict)


class TraceletArtifact:
    """A named, typed artifact built step by step (each ``add_*`` returns ``self``)."""

    def __init__(
        self,
        name: str,
        artifact_type: ArtifactType | str = ArtifactType.CUSTOM,
        description: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise ValueError(f"artifact name must be a non-empty string without '/', got {name!r}")
        self.name = check_text(name, "artifact name")  # (a str enum member: its value)
        self.type = ArtifactType(artifact_type)
        self.description = description or ""
        self.created_at = dt.datetime.now(dt.UTC)
        self.files: list[ArtifactFile] = []
        self.objects: list[ArtifactObject] = []
        self.references: list[ArtifactReference] = []
        self.metadata: dict[str, Any] = {}

    def add_file(
        self, local_path: str, artifact_path: str | None = None, description: str | None = None
    ) -> TraceletArtifact:
        """Add a local file (stored as ``artifact_path``, default its file name)."""
        path = Path(local_path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact {self.name!r}: {local_path!r} is not a file")
        target = check_relative_path(artifact_path or path.name)
        size, checksum = path.stat().st_size, file_sha256(path)
        self.files.append(ArtifactFile(str(path.resolve()), target, description, size, checksum))
        return self

    def add_object(
        self, obj: Any, name: str, serializer: str = "json", description: str | None = None
    ) -> TraceletArtifact:
        """Add a Python object, serialised as ``json``, ``pickle`` or ``yaml`` when logged."""
        if serializer not in SERIALIZERS:
            raise ValueError(f"unknown serializer {serializer!r}; use one of {SERIALIZERS}")
        name = check_relative_path(name)
        self.objects.append(ArtifactObject(obj, name, serializer, description))
        return self

    def add_reference(
        self, uri: str, size_bytes: int | None = None, description: str | None = None
    ) -> TraceletArtifact:
        """Record an external location (nothing is downloaded)."""
        if not isinstance(uri, str) or "://" not in uri:
            raise ValueError(f"reference must be a URI such as s3://bucket/key, got {uri!r}")
        self.references.append(ArtifactReference(uri, size_bytes, description))
        return self

    def add_model(
        self,
        model: Any,
        framework: str | None = None,
        input_example: Any = None,
        description: str | None = None,
    ) -> TraceletArtifact:
        """Add a model object; its framework is detected from its class unless given."""
        framework = framework or type(model).__module__.split(".")[0]
        serializer = "torch" if framework == "torch" else "pickle"
        file_name = "model.pt" if serializer == "torch" else "model.pkl"
        self.objects.append(ArtifactObject(model, file_name, serializer, description))
        self.metadata.update(framework=framework, model_class=type(model).__qualname__)
        if input_example is not None:
            self.metadata["input_example"] = repr(input_example)[:1000]
        return self

    def serialize_object(self, obj: ArtifactObject, temp_dir: str) -> str:
        """Write ``obj`` into ``temp_dir`` with its serializer; return the file's path."""
        path = Path(temp_dir) / obj.name
        path.parent.mkdir(parents=True, exist_ok=True)
        if obj.serializer == "json":
            path.write_text(json.dumps(obj.obj, indent=2, default=str), encoding="utf-8")
        elif obj.serializer == "yaml":
            import yaml

            path.write_text(yaml.safe_dump(obj.obj), encoding="utf-8")
        elif obj.serializer == "torch":
            import torch

            torch.save(obj.obj, path)
        else:
            path.write_bytes(pickle.dumps(obj.obj))
        return str(path)

    @property
    def size_bytes(self) -> int:
        """Total size of the artifact's local files."""
        return sum(f.size_bytes for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description (objects by name and serializer, not their content)."""
        return {
            "name": self.name,
            "type": self.type.value,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "size_bytes": self.size_bytes,
            "files": [attrs.asdict(f) for f in self.files],
            "objects": [
                {"name": o.name, "serializer": o.serializer, "description": o.description}
                for o in self.objects
            ],
            "references": [attrs.asdict(r) for r in self.references],
            "metadata": self.metadata,
        }

    def materialize(self, staging_dir: str | os.PathLike[str]) -> list[tuple[str, str]]:
        """Serialise objects and the manifest into ``staging_dir``; return every file as
        ``(local path, artifact path)`` with artifact paths under ``<name>/``."""
        staging = Path(staging_dir)
        staging.mkdir(parents=True, exist_ok=True)
        manifest = staging / MANIFEST_NAME
        manifest.write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")
        files = [(f.local_path, f.artifact_path) for f in self.files]
        files += [(self.serialize_object(o, str(staging)), o.name) for o in self.objects]
        files.append((str(manifest), MANIFEST_NAME))
        return [(path, f"{self.name}/{target}") for path, target in files]

    def __repr__(self) -> str:
        return (
            f"<TraceletArtifact {self.name!r} {self.type.value} files={len(self.files)} "
            f"objects={len(self.objects)} references={len(self.references)}>"
        )


def list_stored(
    store: LocalStore, run_id: str, type_filter: ArtifactType | str | None = None
) -> list[TraceletArtifact]:
    """The latest version of each artifact a run logged, rebuilt from the local store."""
    wanted = None if type_filter is None else ArtifactType(type_filter)
    latest: dict[str, TraceletArtifact] = {}
    for artifact in _stored_versions(store, run_id):
        if wanted is None or artifact.type is wanted:
            latest[artifact.name] = artifact
    return list(latest.values())


def find_stored(
    store: LocalStore, run_id: str, name: str, version: str | int = "latest"
) -> TraceletArtifact | None:
    """One stored artifact by name or artifact path, and version (``"latest"`` or a number)."""
    found = [
        a
        for a in _stored_versions(store, run_id)
        if name in (a.name, *(f.artifact_path for f in a.files))
    ]
    if version != "latest":
        found = [a for a in found if a.metadata["version"] == int(version)]
    return found[-1] if found else None


def _stored_versions(store: LocalStore, run_id: str) -> list[TraceletArtifact]:
    """Every logged (name, version), oldest first, as a TraceletArtifact of stored files."""
    grouped: dict[tuple[str, int], list[Artifact]] = {}
    for record in store.artifacts(run_id):
        grouped.setdefault((record.name, record.version), []).append(record)
    return [_rebuild(name, version, records) for (name, version), records in grouped.items()]


def _rebuild(name: str, version: int, records: list[Artifact]) -> TraceletArtifact:
    artifact = TraceletArtifact(name, records[0].kind)
    prefix = f"{name}/"
    for record in records:
        relative = record.artifact_path.removeprefix(prefix)
        if relative == MANIFEST_NAME:
            manifest = json.loads(Path(record.path).read_text(encoding="utf-8"))
            artifact.description = manifest.get("description", "")
            artifact.metadata.update(manifest.get("metadata", {}))
            artifact.references = [ArtifactReference(**r) for r in manifest.get("references", [])]
            continue
        artifact.files.append(
            ArtifactFile(record.path, relative, None, record.size_bytes, record.sha256)
        )
    artifact.created_at = dt.datetime.fromtimestamp(records[0].timestamp, tz=dt.UTC)
    artifact.metadata["version"] = version
    return artifact
