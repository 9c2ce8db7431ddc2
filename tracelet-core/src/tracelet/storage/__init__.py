"""The embedded local store: the journal, the default backend, and what analysis reads."""

from tracelet.storage.lowlevel import StorageBackend
from tracelet.storage.store import LocalStore, StoredRun

__all__ = ["LocalStore", "StorageBackend", "StoredRun"]
