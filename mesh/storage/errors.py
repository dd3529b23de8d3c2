"""The errors of the storage layer (mesh.storage)."""
from __future__ import annotations

from mesh.errors import MeshError


class StorageError(MeshError):
    """The storage could not write or sync; it is now failed and refuses every later write."""


class CorruptLog(StorageError):
    """What is on disk is damaged in a way that recovery must not paper over.

    ``path`` and ``offset`` say where, when known."""

    def __init__(self, message: str, *, path: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset

    def __reduce__(self):  # keep pickling (multiprocessing) working with keyword-only fields
        return (_corrupt_log, (str(self), self.path, self.offset))


def _corrupt_log(message: str, path: str | None, offset: int | None) -> CorruptLog:
    return CorruptLog(message, path=path, offset=offset)


class Compacted(MeshError, LookupError):
    """The entries asked for were compacted into the snapshot; send the snapshot instead."""
