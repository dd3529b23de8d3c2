"""Snapshots of the applied state machine, written atomically, one file per snapshot.

Theory of operation
-------------------
A snapshot is ``{index:020d}.snap``: the state after applying every entry up to
``index`` (whose term is ``term``), plus the cluster configuration at that point::

    header = magic "MSNP" | version:u16 | flags:u16 | index:u64 | term:u64 |
             config_len:u32 | data_len:u64 | body_crc:u32 | header_crc:u32   (44 bytes)
    body   = config | data

``header_crc`` covers the header bytes before it; ``body_crc`` covers the body. The
file size must equal ``44 + config_len + data_len`` exactly, which is checked before
reading anything, so a corrupt length cannot make us allocate more than the file.

Writing is the classic atomic sequence: write ``{index}.snap.tmp``, fsync it, rename it
to ``{index}.snap``, fsync the folder. Until the rename is durable the previous
snapshot file is untouched, and only then are older snapshot files deleted and the log
compacted (by :class:`mesh.storage.RaftStorage`). A crash at any point leaves either
the old snapshot or the new one complete, plus perhaps a ``.tmp`` file that the next
open deletes.

Reading picks the newest ``.snap`` file whose checksums hold. If a newer one fails its
checksum, :class:`mesh.storage.RaftStorage` may fall back to an older good one only
when the log still holds every entry after it; otherwise it raises :class:`CorruptLog`.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass

from mesh.storage.errors import CorruptLog
from mesh.storage.files import write_all

log = logging.getLogger(__name__)

MAGIC = b"MSNP"
VERSION = 1
HEADER = struct.Struct("<4sHHQQIQI")    # ... up to body_crc; header_crc follows
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = HEADER.size + _HEADER_CRC.size
MAX_CONFIG_BYTES = 64 << 20
SUFFIX = ".snap"
TMP_SUFFIX = ".snap.tmp"
_NAME = re.compile(r"^(\d{20})\.snap$")
_CHUNK = 1 << 20                        # read/checksum granularity: bounded memory while verifying
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log: the last entry it covers, that entry's term, and
    the cluster configuration (encoded by the Raft core) in force at that entry."""

    index: int
    term: int
    config: bytes = b""


def snapshot_name(index: int) -> str:
    return f"{index:020d}{SUFFIX}"


class SnapshotStore:
    """The snapshot files of one storage folder."""

    def __init__(self, folder: str, dir_fd: int, *, fsync: bool) -> None:
        self.folder = folder
        self._dir_fd = dir_fd
        self._fsync = fsync

    def indexes(self) -> list[int]:
        """Indexes of the snapshot files present, newest first."""
        found = []
        for name in os.listdir(self.folder):
            m = _NAME.match(name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found, reverse=True)

    def path(self, index: int) -> str:
        return os.path.join(self.folder, snapshot_name(index))

    def read(self, index: int, *, with_data: bool = True) -> tuple[SnapshotMeta, bytes]:
        """Read and verify one snapshot file; raises :class:`CorruptLog` if it does not check out.

        With ``with_data=False`` the body is still checksummed (in chunks) but not kept."""
        path = self.path(index)
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER_BYTES)
            if len(head) < HEADER_BYTES:
                raise CorruptLog(f"{path}: snapshot header cut short ({len(head)} bytes)", path=path, offset=0)
            fields = HEADER.unpack_from(head, 0)
            magic, version, _flags, s_index, s_term, config_len, data_len, body_crc = fields
            if _HEADER_CRC.unpack_from(head, HEADER.size)[0] != zlib.crc32(head[:HEADER.size]):
                raise CorruptLog(f"{path}: snapshot header checksum mismatch", path=path, offset=0)
            if magic != MAGIC or version != VERSION:
                raise CorruptLog(f"{path}: not a version {VERSION} snapshot", path=path, offset=0)
            if s_index != index:
                raise CorruptLog(f"{path}: header says index {s_index}", path=path, offset=0)
            if config_len > MAX_CONFIG_BYTES or HEADER_BYTES + config_len + data_len != size:
                raise CorruptLog(f"{path}: file is {size} bytes, header promises "
                                 f"{HEADER_BYTES + config_len + data_len}", path=path, offset=0)
            config = _read_exact(f, config_len, path)
            crc = zlib.crc32(config)
            if with_data:
                data = _read_exact(f, data_len, path)
                crc = zlib.crc32(data, crc)
            else:
                data = b""
                left = data_len
                while left:
                    chunk = _read_exact(f, min(left, _CHUNK), path)
                    crc = zlib.crc32(chunk, crc)
                    left -= len(chunk)
            if crc != body_crc:
                raise CorruptLog(f"{path}: snapshot body checksum mismatch", path=path, offset=HEADER_BYTES)
        return SnapshotMeta(s_index, s_term, config), data

    def write(self, meta: SnapshotMeta, data: bytes) -> None:
        """Write a snapshot atomically; it is durable (renamed, folder synced) on return."""
        if not (0 < meta.index < _U64 and 0 <= meta.term < _U64):
            raise ValueError(f"snapshot out of range: index={meta.index} term={meta.term}")
        if type(meta.config) is not bytes or type(data) is not bytes:
            raise ValueError("snapshot config and data must be bytes")
        if len(meta.config) > MAX_CONFIG_BYTES:
            raise ValueError(f"snapshot config is {len(meta.config)} bytes; at most {MAX_CONFIG_BYTES}")
        body_crc = zlib.crc32(data, zlib.crc32(meta.config))
        head = HEADER.pack(MAGIC, VERSION, 0, meta.index, meta.term, len(meta.config), len(data), body_crc)
        head += _HEADER_CRC.pack(zlib.crc32(head))
        final = self.path(meta.index)
        tmp = final[: -len(SUFFIX)] + TMP_SUFFIX
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            for part in (head, meta.config, data):
                write_all(fd, part)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
        if self._fsync:
            os.fsync(self._dir_fd)   # the rename itself must survive a crash

    def remove_except(self, keep: int) -> None:
        """Delete every snapshot file but ``keep`` (call only once ``keep`` is durable)."""
        for index in self.indexes():
            if index != keep:
                os.unlink(self.path(index))
                log.debug("removed superseded snapshot %s", snapshot_name(index))


def _read_exact(f, n: int, path: str) -> bytes:
    data = f.read(n) if n else b""
    if len(data) != n:
        raise CorruptLog(f"{path}: snapshot cut short", path=path)
    return data

