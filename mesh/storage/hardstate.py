"""Raft's hard state (current term, vote, commit index) in a small double-buffered file.

Theory of operation
-------------------
Raft must persist its term and vote before it answers a vote request, and the commit
index travels with them; with etcd-style batching that is one write per ``Ready`` --
as often as the log is synced. So the write must be cheap *and* atomic.

Why double-buffered slots rather than temp file + rename: a rename-based update costs
two fsyncs (the temp file and the folder), allocates a new inode each time and churns
the directory. Here the file is created once with a fixed size (8 KiB, two 4 KiB
slots) and every update is one ``pwrite`` of one slot plus one ``fdatasync``; the
size never changes, so ``fdatasync`` has no metadata to flush. Slots are 4 KiB apart
so a torn write (any subset of its sectors landing) can only damage the slot being
written, never the other one.

Each slot::

    magic "MHST" | version:u16 | flags:u16 | seq:u64 | term:u64 | commit:u64 |
    vote_len:u16 | vote (utf-8) | crc32 of everything before it

Writes alternate between the slots with an increasing ``seq``. On load, the valid slot
(magic, version, checksum) with the highest ``seq`` wins. A slot torn by a crash fails
its checksum and the other slot still holds the previous state -- which is exactly
"the write never happened", correct because a write is not acknowledged until its
fsync returned. Both slots invalid is corruption (:class:`CorruptLog`): forgetting a
vote could let this node vote twice in one term.

The file is first created as ``hardstate.tmp`` (one valid slot, the zero state),
fsynced, renamed into place, and the folder fsynced, so a ``hardstate`` file that
exists always holds a valid slot.
"""
from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass

from mesh.storage.errors import CorruptLog

log = logging.getLogger(__name__)

FILE_NAME = "hardstate"
SLOT_BYTES = 4096
FILE_BYTES = 2 * SLOT_BYTES
MAGIC = b"MHST"
VERSION = 1
MAX_VOTE_BYTES = 1024
_FLAG_VOTE = 1                          # distinguishes vote None from vote ""
_SLOT = struct.Struct("<4sHHQQQH")      # magic, version, flags, seq, term, commit, vote_len
_CRC = struct.Struct("<I")
_U64 = 1 << 64


@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft must not forget across a restart: the term, who it voted for in it, and
    the highest index it knows to be committed."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


def encode_slot(seq: int, hs: HardState) -> bytes:
    vote = b"" if hs.vote is None else hs.vote.encode("utf-8")
    if len(vote) > MAX_VOTE_BYTES:
        raise ValueError(f"vote is {len(vote)} bytes; at most {MAX_VOTE_BYTES}")
    if not (0 <= hs.term < _U64 and 0 <= hs.commit < _U64):
        raise ValueError(f"hard state out of range: {hs}")
    flags = 0 if hs.vote is None else _FLAG_VOTE
    body = _SLOT.pack(MAGIC, VERSION, flags, seq, hs.term, hs.commit, len(vote)) + vote
    return body + _CRC.pack(zlib.crc32(body))


def decode_slot(buf: bytes) -> tuple[int, HardState] | None:
    """(seq, state) from one slot's bytes, or None if the slot is not a valid one."""
    if len(buf) < _SLOT.size + _CRC.size:
        return None
    magic, version, flags, seq, term, commit, vote_len = _SLOT.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION or vote_len > MAX_VOTE_BYTES:
        return None
    end = _SLOT.size + vote_len
    if len(buf) < end + _CRC.size or _CRC.unpack_from(buf, end)[0] != zlib.crc32(buf[:end]):
        return None
    try:
        vote = buf[_SLOT.size:end].decode("utf-8") if flags & _FLAG_VOTE else None
    except UnicodeDecodeError:
        return None
    return seq, HardState(term, vote, commit)


class HardStateFile:
    """The ``hardstate`` file of one storage folder. Not thread-safe; one writer."""

    def __init__(self, path: str, fd: int, seq: int, slot: int, state: HardState, fsync: bool) -> None:
        self.path = path
        self._fd = fd
        self._seq = seq          # seq of the slot that holds ``state``
        self._slot = slot        # which slot that is; the next write goes to the other
        self.state = state       # the last state written (durable once write() returned)
        self._fsync = fsync

    @classmethod
    def open(cls, folder: str, dir_fd: int, *, fsync: bool, create: bool) -> HardStateFile:
        """Open (or, with ``create``, make) the hard state file and load the newest valid slot.

        ``create`` is False once the folder holds log or snapshot files: a missing hard
        state file then means a forgotten vote, which is reported, not papered over."""
        path = os.path.join(folder, FILE_NAME)
        if not os.path.exists(path):
            if not create:
                raise CorruptLog(f"{path} is missing but the folder holds a log or snapshot: "
                                 "the term and vote it recorded are lost", path=path)
            cls._create(folder, dir_fd, fsync=fsync)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            buf = os.pread(fd, FILE_BYTES, 0)
            found = [(decoded, slot) for slot in (0, 1)
                     if (decoded := decode_slot(buf[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES]))]
            if not found:
                raise CorruptLog(f"{path}: neither hard state slot is valid", path=path, offset=0)
            (seq, state), slot = max(found, key=lambda f: f[0][0])
            if len(found) == 1 and seq > 0:
                # normal after a crash in the middle of a write; worth a line in the log
                log.warning("%s: slot %d is invalid; using slot %d (seq %d)", path, 1 - slot, slot, seq)
            return cls(path, fd, seq, slot, state, fsync)
        except BaseException:
            os.close(fd)
            raise

    @staticmethod
    def _create(folder: str, dir_fd: int, *, fsync: bool) -> None:
        tmp = os.path.join(folder, FILE_NAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            image = encode_slot(0, HardState()).ljust(FILE_BYTES, b"\0")
            _pwrite_all(fd, image, 0)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(folder, FILE_NAME))
        if fsync:
            os.fsync(dir_fd)

    def write(self, state: HardState, durable: bool = True) -> None:
        """Write ``state`` to the slot not holding the current one; durable on return unless
        ``durable`` is False (then a crash may bring back the previous state: the other
        slot, or this one if it was written whole — each slot carries its own checksum)."""
        slot = 1 - self._slot
        image = encode_slot(self._seq + 1, state)
        _pwrite_all(self._fd, image, slot * SLOT_BYTES)
        if self._fsync and durable:
            _fdatasync(self._fd)
        self._seq += 1
        self._slot = slot
        self.state = state

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    mv = memoryview(data)
    while mv:
        n = os.pwrite(fd, mv, offset)
        if n <= 0:  # a regular file never does this; do not spin if one does
            raise OSError(5, "short write made no progress")
        mv = mv[n:]
        offset += n


def _fdatasync(fd: int) -> None:
    # fdatasync skips the inode timestamps; the file size never changes here
    (getattr(os, "fdatasync", None) or os.fsync)(fd)
