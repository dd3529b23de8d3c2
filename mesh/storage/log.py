"""The segmented append-only Raft log: segment files, recovery, rotation, truncation.

Theory of operation
-------------------
The log is a run of segment files ``{first_index:020d}.log`` in one folder. Each starts
with a 20-byte header (magic ``MLOG``, version:u16, flags:u16, first_index:u64, crc32 of
those 16 bytes) followed by records framed by :mod:`mesh.storage.records`. Segment N+1
starts at the index after segment N's last record; only the last segment is written.

*Appending* encodes a batch, then writes it with one ``os.write`` on the last segment's
descriptor (opened ``O_APPEND``), and only then updates the in-memory index. Nothing is
durable until :meth:`SegmentedLog.sync` (``fdatasync`` of the last segment, and an fsync
of the folder if a segment file was created since the last sync).

*Rotation*: a batch that would push the last segment past ``segment_bytes`` continues in
a new segment. Before the new file is created, the old one is fsynced. That gives the
invariant recovery leans on: **every segment but the last is complete and durable**, so
damage anywhere in a non-last segment is corruption, never a torn write.

*Truncation* (Raft dropping a conflicting suffix) removes whole segments newest first,
``ftruncate``s the one holding the cut, and makes that durable before returning, so a
crash can only ever leave a *prefix* of the old log: never old records behind new
ones, never a hole between segments. It is rare (leader changes), so the extra fsync
is cheap insurance. *Compaction* after a snapshot deletes whole segments oldest first;
a crash half way leaves a suffix that recovery finishes trimming.

*The in-memory index*: per segment, an ``array('Q')`` of record offsets and one of
terms, so ``term(i)`` is a lookup and ``entries(lo, hi)`` is one ``pread`` per segment
touched. A byte-bounded cache of the newest entries serves the common case (the leader
sending what it just appended) without any system call.

Torn tail or mid-log corruption?
--------------------------------
On open every segment is read and every record checked (length bounds, checksum, index
continuity, non-decreasing term). When a record in the **last** segment fails, the
question is whether it is the tail of a write that never completed -- a crash may leave a
prefix of the write, zeros where pages never landed, or a half-written header -- or
damage to records that were durable (and so may have been acknowledged).

A torn write only ever affects bytes *after* the last record that was synced; whatever
follows the first bad byte was written in the same unfinished write, so it cannot contain
a complete, checksummed record that *continues the log*. Recovery therefore searches
every byte offset from the bad record to the end of the file for a frame with a valid
checksum and an index greater than the last good one (:func:`records.find_frame`):

* none found: a torn tail. The file is truncated at the last good record (fsynced), a
  warning is logged, and ``recovered_truncated_bytes`` says how much was cut;
* one found: a good record lies *behind* a bad one -- mid-log corruption. Open raises
  :class:`CorruptLog` naming the file and the offset of the bad record. Nothing is dropped.

A bad record in a non-last segment, a bad header on a non-last segment, or a hole
between segments is always :class:`CorruptLog`. A last segment whose header is torn and
which holds no valid record (a crash right after creating it) is removed.

What this cannot tell apart: a bit flip in the very last record (or in records after
which nothing valid follows) looks exactly like a torn write. :class:`RaftStorage`
adds a second line of defence -- the durable commit index must still be inside the log
after recovery, or open raises -- so committed entries cannot vanish this way either.
Conversely, if a file system persisted the pages of one unsynced write out of order
(a later page landed, an earlier one did not), recovery refuses to start rather than
guess; the same happens if entry *data* embeds a byte-exact valid record of a future
index just behind a torn write. Both err on the side of an operator looking.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

from mesh.storage.errors import CorruptLog
from mesh.storage.files import write_all
from mesh.storage.records import (MAX_PAYLOAD_BYTES, Entry, decode_frames, encode_frames,
                                  find_frame, frame_size, scan_frames)

log = logging.getLogger(__name__)

MAGIC = b"MLOG"
VERSION = 1
_HEADER = struct.Struct("<4sHHQ")      # magic, version, flags, first index
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER.size + _HEADER_CRC.size   # 20
SUFFIX = ".log"
_NAME = re.compile(r"^(\d{20})\.log$")
MAX_READ_FDS = 8                        # read descriptors kept open for sealed segments


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}{SUFFIX}"


def segment_header(first_index: int) -> bytes:
    head = _HEADER.pack(MAGIC, VERSION, 0, first_index)
    return head + _HEADER_CRC.pack(zlib.crc32(head))


def check_segment_header(buf: bytes, first_index: int) -> str | None:
    """Why ``buf`` does not start with the header of segment ``first_index``; None if it does."""
    if len(buf) < HEADER_BYTES:
        return f"segment header cut short ({len(buf)} of {HEADER_BYTES} bytes)"
    if _HEADER_CRC.unpack_from(buf, _HEADER.size)[0] != zlib.crc32(buf[:_HEADER.size]):
        return "segment header checksum mismatch"
    magic, version, _flags, first = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC or version != VERSION:
        return f"not a version {VERSION} log segment"
    if first != first_index:
        return f"segment header says first index {first}, file name says {first_index}"
    return None


def is_segment_file(name: str) -> bool:
    return _NAME.match(name) is not None


@dataclass(slots=True, eq=False)
class Segment:
    """One segment file and its in-memory index."""

    first_index: int
    path: str
    offsets: array      # 'Q': file offset of each record's frame
    terms: array        # 'Q': term of each record
    end: int            # offset just past the last record (the file size once recovered)

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


class SegmentedLog:
    """Entries ``[first_index, next_index)`` on disk. Callers (``RaftStorage``) validate
    arguments against the snapshot and commit index; OSError propagates to them."""

    def __init__(self, folder: str, dir_fd: int, *, segment_bytes: int, fsync: bool,
                 cache_bytes: int, max_payload: int = MAX_PAYLOAD_BYTES) -> None:
        self.folder = folder
        self._dir_fd = dir_fd
        self._segment_bytes = segment_bytes
        self._fsync = fsync
        self._max_payload = max_payload
        self.segments: list[Segment] = []
        self.first_index = 1            # logical start (after a snapshot: snapshot.index + 1)
        self.next_index = 1
        self.recovered_truncated_bytes = 0
        self._wfd = -1                  # O_APPEND descriptor of segments[-1], opened lazily
        self._wseg: Segment | None = None   # the segment _wfd writes to
        self._read_fds: OrderedDict[str, int] = OrderedDict()
        self._log_dirty = False         # the last segment has bytes not yet fdatasync'ed
        self._dir_dirty = False         # a segment file was created since the folder was synced
        # newest entries, contiguous: [_cache_first, next_index)
        self._cache: list[Entry] = []
        self._cache_first = 1
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    # ----------------------------------------------------------------------------- open

    @classmethod
    def open(cls, folder: str, dir_fd: int, *, segment_bytes: int, fsync: bool, cache_bytes: int,
             max_payload: int = MAX_PAYLOAD_BYTES, must_keep: int = 0) -> SegmentedLog:
        """Recover the log in ``folder``: verify every record, cut a torn tail, raise
        :class:`CorruptLog` for anything else (see the module docstring). A tail whose cut
        would lose entries up to ``must_keep`` (known committed) is not a torn write but
        damage: CorruptLog, and the file is left as it is for an operator to look at."""
        self = cls(folder, dir_fd, segment_bytes=segment_bytes, fsync=fsync,
                   cache_bytes=cache_bytes, max_payload=max_payload)
        names = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := _NAME.match(name)))
        prev_last: int | None = None
        prev_term = 0
        for i, (first, name) in enumerate(names):
            path = os.path.join(folder, name)
            is_last = i == len(names) - 1
            with open(path, "rb", buffering=0) as f:
                buf = f.read()
            problem = check_segment_header(buf, first)
            if problem is not None:
                if not is_last:
                    raise CorruptLog(f"{path}: offset 0: {problem} (not the last segment)", path=path, offset=0)
                hit = find_frame(buf, 0, max(first, 1), max_payload)
                if hit is not None:
                    raise CorruptLog(f"{path}: offset 0: {problem}, but a valid record (index {hit[1]}) "
                                     f"follows at offset {hit[0]}", path=path, offset=0)
                # created by a rotation whose header never landed: it held nothing durable
                _refuse_cut(path, 0, problem, first - 1, must_keep)
                log.warning("%s: %s and no valid record; removing it (%d bytes)", path, problem, len(buf))
                os.unlink(path)
                self._dir_dirty = True
                self.recovered_truncated_bytes += len(buf)
                continue
            if prev_last is not None and first != prev_last + 1:
                raise CorruptLog(f"{path}: starts at index {first} but the previous segment ends at "
                                 f"{prev_last}: a segment is missing or overlaps", path=path, offset=0)
            res = scan_frames(buf, HEADER_BYTES, first, prev_term, max_payload)
            if res.problem is not None:
                where = f"{path}: offset {res.end}: {res.problem}"
                if not is_last:
                    raise CorruptLog(f"{where} in a segment that is not the last", path=path, offset=res.end)
                hit = find_frame(buf, res.end, first + len(res.offsets), max_payload)
                if hit is not None:
                    raise CorruptLog(f"{where}, but a valid record (index {hit[1]}) follows at offset "
                                     f"{hit[0]}: mid-log corruption, not a torn tail", path=path, offset=res.end)
                cut = len(buf) - res.end
                _refuse_cut(path, res.end, res.problem, first + len(res.offsets) - 1, must_keep)
                log.warning("%s: torn tail: %s; cutting %d bytes at offset %d", path, res.problem, cut, res.end)
                self._truncate_file(path, res.end)
                self.recovered_truncated_bytes += cut
            seg = Segment(first, path, array("Q", res.offsets), array("Q", res.terms), res.end)
            self.segments.append(seg)
            prev_last = seg.last_index
            if res.terms:
                prev_term = res.terms[-1]
        if self._dir_dirty and fsync:
            os.fsync(dir_fd)
        self._dir_dirty = False
        if self.segments:
            self.first_index = self.segments[0].first_index
            self.next_index = self.segments[-1].last_index + 1
        self._cache_first = self.next_index
        return self

    def _truncate_file(self, path: str, size: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            if self._fsync:
                os.fsync(fd)   # a size change: fsync, not fdatasync, to be sure the inode goes too
        finally:
            os.close(fd)

    # ----------------------------------------------------------------------------- reads

    @property
    def last_index(self) -> int:
        return self.next_index - 1

    def _segment_for(self, index: int) -> Segment:
        i = bisect_right(self.segments, index, key=lambda s: s.first_index) - 1
        return self.segments[i]

    def term(self, index: int) -> int:
        """Term of entry ``index`` (``first_index <= index <= last_index``)."""
        if index >= self._cache_first:
            return self._cache[index - self._cache_first].term
        seg = self._segment_for(index)
        return seg.terms[index - seg.first_index]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)`` (bounds already checked). With ``max_bytes``, stop before the
        total of :func:`frame_size` would exceed it, but return at least one entry."""
        out: list[Entry] = []
        total = 0
        idx = lo
        while idx < hi:
            if idx >= self._cache_first:
                base = self._cache_first
                for e in self._cache[idx - base:hi - base]:
                    size = frame_size(e)
                    if max_bytes is not None and out and total + size > max_bytes:
                        break
                    out.append(e)
                    total += size
                return out
            seg = self._segment_for(idx)
            stop = min(hi, seg.last_index + 1, self._cache_first)
            offsets = seg.offsets
            k0, k1 = idx - seg.first_index, stop - seg.first_index
            start = offsets[k0]
            kend = k1
            if max_bytes is not None:
                limit = start + (max_bytes - total)
                end_all = offsets[k1] if k1 < len(offsets) else seg.end
                if end_all > limit:
                    # entry m fits iff its end, offsets[m + 1], is within the budget
                    kend = bisect_right(offsets, limit, k0 + 1, k1) - 1
                    if kend == k0:
                        if out:
                            return out
                        kend = k0 + 1   # always make progress: one entry even if it is too big
            end = offsets[kend] if kend < len(offsets) else seg.end
            buf = os.pread(self._read_fd(seg), end - start, start)
            if len(buf) != end - start:
                raise CorruptLog(f"{seg.path}: file ends before offset {end} (read {len(buf)} bytes "
                                 f"at {start})", path=seg.path, offset=start + len(buf))
            out.extend(decode_frames(buf, idx, kend - k0, path=seg.path, base_offset=start,
                                     max_payload=self._max_payload))
            total += end - start
            if kend < k1:
                return out
            idx = seg.first_index + kend
        return out

    def _read_fd(self, seg: Segment) -> int:
        fd = self._read_fds.get(seg.path)
        if fd is not None:
            self._read_fds.move_to_end(seg.path)
            return fd
        fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        self._read_fds[seg.path] = fd
        if len(self._read_fds) > MAX_READ_FDS:
            os.close(self._read_fds.popitem(last=False)[1])
        return fd

    # ----------------------------------------------------------------------------- writes

    def append(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` (contiguous from ``next_index``; checked by the caller).
        Not durable until :meth:`sync`. On OSError nothing is added to the index."""
        if not entries:
            return
        frames = encode_frames(entries, self._max_payload)   # ValueError before any I/O
        i, n = 0, len(frames)
        while i < n:
            seg = self._writable_segment(entries[i].index)
            room = self._segment_bytes - seg.end
            j, size = i, 0
            # fill up to segment_bytes; an empty segment takes at least one record
            while j < n and (size + len(frames[j]) <= room or (j == i and not seg.offsets)):
                size += len(frames[j])
                j += 1
            if j == i:
                self._rotate(entries[i].index)
                continue
            self._log_dirty = True
            write_all(self._wfd, frames[i] if j == i + 1 else b"".join(frames[i:j]))
            # the index learns about the records only once their bytes are in the file
            off = seg.end
            for k in range(i, j):
                seg.offsets.append(off)
                seg.terms.append(entries[k].term)
                off += len(frames[k])
            seg.end = off
            i = j
        self.next_index = entries[-1].index + 1
        self._cache_extend(entries, frames)

    def _writable_segment(self, index: int) -> Segment:
        if not self.segments:
            self._create_segment(index)
        elif self._wseg is not self.segments[-1]:
            self._close_wfd()
            self._wfd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._wseg = self.segments[-1]
        return self.segments[-1]

    def _rotate(self, index: int) -> None:
        # the sealed segment must be complete on disk before a later one can exist
        if self._log_dirty and self._fsync:
            _fdatasync(self._wfd)
        self._log_dirty = False
        self._close_wfd()
        self._create_segment(index)

    def _create_segment(self, index: int) -> None:
        path = os.path.join(self.folder, segment_name(index))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._dir_dirty = True
        try:
            write_all(fd, segment_header(index))
        except BaseException:
            os.close(fd)
            raise
        seg = Segment(index, path, array("Q"), array("Q"), HEADER_BYTES)
        self.segments.append(seg)
        self._wfd, self._wseg = fd, seg
        self._log_dirty = True
        log.debug("new log segment %s", path)

    def sync(self) -> None:
        """Make every appended record (and segment file) durable."""
        if self._log_dirty:
            if self._fsync and self._wfd >= 0:
                _fdatasync(self._wfd)
            self._log_dirty = False
        if self._dir_dirty:
            if self._fsync:
                os.fsync(self._dir_fd)   # new segment files must survive as names, not just inodes
            self._dir_dirty = False

    def truncate_suffix(self, index: int) -> None:
        """Drop entries ``>= index`` (``first_index <= index <= last_index``); durable on return."""
        removed = False
        while self.segments and self.segments[-1].first_index >= index:
            seg = self.segments.pop()    # newest first: a crash leaves a prefix of the old log
            self._forget(seg)
            os.unlink(seg.path)
            removed = True
        if self.segments and self.segments[-1].last_index >= index:
            seg = self.segments[-1]
            k = index - seg.first_index
            cut = seg.offsets[k]
            self._truncate_file(seg.path, cut)
            del seg.offsets[k:]
            del seg.terms[k:]
            seg.end = cut
        if removed and self._fsync:
            os.fsync(self._dir_fd)
            self._dir_dirty = False
        # what is left is durable: sealed segments were synced at rotation, the cut one just now
        self._log_dirty = False
        self.next_index = index
        if index <= self._cache_first:
            self._cache_clear()
        else:
            dropped = self._cache[index - self._cache_first:]
            del self._cache[index - self._cache_first:]
            self._cache_bytes -= sum(frame_size(e) for e in dropped)

    def compact(self, upto: int) -> None:
        """Forget entries ``<= upto`` (now covered by a durable snapshot); whole segments at
        or below it are deleted, oldest first, so a crash leaves a suffix."""
        removed = False
        while self.segments and self.segments[0].last_index <= upto:
            seg = self.segments.pop(0)
            if not self.segments:
                self._log_dirty = False   # its unsynced records are inside the snapshot now
            self._forget(seg)
            os.unlink(seg.path)
            removed = True
        if removed and self._fsync:
            os.fsync(self._dir_fd)
            self._dir_dirty = False
        self.first_index = upto + 1
        if not self.segments:
            self.next_index = max(self.next_index, upto + 1)
        if self.first_index > self._cache_first:
            drop = min(self.first_index - self._cache_first, len(self._cache))
            self._cache_bytes -= sum(frame_size(e) for e in self._cache[:drop])
            del self._cache[:drop]
            self._cache_first += drop

    def reset(self, next_index: int) -> None:
        """Delete the whole log (newest segment first); the next append starts at ``next_index``."""
        removed = False
        while self.segments:
            seg = self.segments.pop()
            self._forget(seg)
            os.unlink(seg.path)
            removed = True
        if removed and self._fsync:
            os.fsync(self._dir_fd)
            self._dir_dirty = False
        self._log_dirty = False
        self.first_index = self.next_index = next_index
        self._cache_clear()

    # ----------------------------------------------------------------------------- plumbing

    def _cache_extend(self, entries: Sequence[Entry], frames: list[bytes]) -> None:
        if self._cache_limit <= 0:
            self._cache_first = self.next_index
            return
        self._cache.extend(entries)
        self._cache_bytes += sum(len(f) for f in frames)
        if self._cache_bytes > self._cache_limit:
            drop, size = 0, self._cache_bytes
            while size > self._cache_limit and drop < len(self._cache):
                size -= frame_size(self._cache[drop])
                drop += 1
            del self._cache[:drop]
            self._cache_first += drop
            self._cache_bytes = size

    def _cache_clear(self) -> None:
        self._cache.clear()
        self._cache_bytes = 0
        self._cache_first = self.next_index

    def _forget(self, seg: Segment) -> None:
        """Close the descriptors of a segment about to be deleted."""
        if seg is self._wseg:
            self._close_wfd()
        fd = self._read_fds.pop(seg.path, None)
        if fd is not None:
            os.close(fd)

    def _close_wfd(self) -> None:
        self._wseg = None
        if self._wfd >= 0:
            fd, self._wfd = self._wfd, -1
            os.close(fd)

    def close(self) -> None:
        self._close_wfd()
        while self._read_fds:
            os.close(self._read_fds.popitem()[1])



def _fdatasync(fd: int) -> None:
    # fdatasync: the data and the size, without the timestamps -- one journal commit less
    (getattr(os, "fdatasync", None) or os.fsync)(fd)


def _refuse_cut(path: str, offset: int, problem: str, last_kept: int, must_keep: int) -> None:
    if last_kept < must_keep:
        raise CorruptLog(f"{path}: offset {offset}: {problem}; cutting there would lose entries "
                         f"{last_kept + 1}..{must_keep}, which were committed: committed entries are missing "
                         "(damage, not a torn write; the file is left untouched)", path=path, offset=offset)
