"""Record framing for the Raft log: how one entry becomes bytes on disk, and back.

Theory of operation
-------------------
A record ("frame") is a fixed 8-byte header and a payload::

    frame   = length:u32 | crc:u32 | payload            (little-endian)
    payload = index:u64 | term:u64 | kind:u32 | data    (20 bytes + data)

``length`` counts the payload only; ``crc`` is ``zlib.crc32`` (CRC-32/ISO-HDLC, the
zip/PNG polynomial) of the payload. The stdlib has no CRC-32C; zlib's CRC runs in C
and detects every burst error up to 32 bits, which is what torn writes and flipped
bits look like. The index and term live *inside* the checksummed payload, so a record
that checks out also proves where it belongs in the log.

Rules a reader applies to each frame, in order (the first that fails ends the good
prefix; :func:`scan_frames` reports which and where):

1. the 8 header bytes are all there;
2. ``MIN_PAYLOAD <= length <= max_payload`` -- a corrupt length is rejected *before*
   anything is allocated or read, so garbage never makes us allocate gigabytes;
3. the payload is all there;
4. the checksum matches;
5. the index is the one expected next, and the term does not go below the previous
   record's (Raft terms never decrease along a log).

An all-zero region (what a file system may leave where an unsynced write never
landed) fails rule 2 (length 0), so zeros are never mistaken for a record.

:func:`find_frame` answers the question recovery needs to tell a torn tail from
mid-log corruption: *does any well-formed record of this log start at or after this
offset?* See :mod:`mesh.storage.log` for how the answer is used.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterable

from mesh.storage.errors import CorruptLog

FRAME = struct.Struct("<II")             # payload length, crc32(payload)
PAYLOAD_HEADER = struct.Struct("<QQI")   # index, term, kind
FRAME_BYTES = FRAME.size                 # 8
MIN_PAYLOAD = PAYLOAD_HEADER.size        # 20: a payload always carries index, term and kind
MIN_FRAME = FRAME_BYTES + MIN_PAYLOAD    # 28: the smallest record on disk
MAX_PAYLOAD_BYTES = 64 << 20             # bound on one record, checked on append and on read
MAX_DATA_BYTES = MAX_PAYLOAD_BYTES - MIN_PAYLOAD
_U32 = 1 << 32
_U64 = 1 << 64
_INDEX = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class Entry:
    """One Raft log entry. ``kind`` is the Raft core's entry type (normal, config, no-op...)."""

    index: int
    term: int
    kind: int
    data: bytes


def frame_size(entry: Entry) -> int:
    """Bytes ``entry`` takes on disk; ``entries(max_bytes=...)`` counts in these units."""
    return MIN_FRAME + len(entry.data)


def encode_frame(entry: Entry, max_payload: int = MAX_PAYLOAD_BYTES) -> bytes:
    """The record for ``entry``. Raises ValueError for anything that could not be read back."""
    index, term, kind, data = entry.index, entry.term, entry.kind, entry.data
    if type(data) is not bytes:
        raise ValueError(f"entry {index}: data must be bytes, not {type(data).__name__}")
    if not (0 < index < _U64 and 0 <= term < _U64 and 0 <= kind < _U32):
        raise ValueError(f"entry out of range: index={index} term={term} kind={kind}")
    length = MIN_PAYLOAD + len(data)
    if length > max_payload:
        raise ValueError(f"entry {index}: {length} bytes exceeds the record limit of {max_payload}")
    head = PAYLOAD_HEADER.pack(index, term, kind)
    # crc over the two pieces without building the payload twice
    return b"".join((FRAME.pack(length, zlib.crc32(data, zlib.crc32(head))), head, data))


def encode_frames(entries: Iterable[Entry], max_payload: int = MAX_PAYLOAD_BYTES) -> list[bytes]:
    return [encode_frame(e, max_payload) for e in entries]


@dataclass(slots=True)
class ScanResult:
    """The good prefix of a run of frames: where each starts, its term, and where it stopped."""

    offsets: list[int] = field(default_factory=list)
    terms: list[int] = field(default_factory=list)
    end: int = 0                   # offset just past the last good frame
    problem: str | None = None     # why the frame at ``end`` is not good; None: clean end of buffer


def scan_frames(buf: bytes | memoryview, start: int, first_index: int, prev_term: int,
                max_payload: int = MAX_PAYLOAD_BYTES) -> ScanResult:
    """Walk frames from ``start`` while they are well formed and continue the log.

    The first frame must carry ``first_index``; each next one the index after. Stops at
    the end of ``buf`` (``problem`` None) or at the first frame that breaks a rule.
    """
    res = ScanResult(end=start)
    offsets, terms = res.offsets, res.terms
    size = len(buf)
    p, expected, last_term = start, first_index, prev_term
    unpack_frame, unpack_head, crc32 = FRAME.unpack_from, PAYLOAD_HEADER.unpack_from, zlib.crc32
    mv = memoryview(buf)
    while p < size:
        if size - p < FRAME_BYTES:
            res.problem = f"incomplete record header ({size - p} of {FRAME_BYTES} bytes)"
            break
        length, crc = unpack_frame(mv, p)
        if not MIN_PAYLOAD <= length <= max_payload:
            res.problem = f"implausible record length {length}"
            break
        body = p + FRAME_BYTES
        if body + length > size:
            res.problem = f"incomplete record ({size - body} of {length} payload bytes)"
            break
        if crc32(mv[body:body + length]) != crc:
            res.problem = "checksum mismatch"
            break
        index, term, _kind = unpack_head(mv, body)
        if index != expected:
            res.problem = f"record has index {index}, expected {expected}"
            break
        if term < last_term:
            res.problem = f"record {index} has term {term}, below the previous term {last_term}"
            break
        offsets.append(p)
        terms.append(term)
        expected += 1
        last_term = term
        p = body + length
    res.end = p
    return res


def _length_class(max_payload: int) -> bytes:
    # regex for a little-endian u32 in [MIN_PAYLOAD, max_payload]'s top byte range and not tiny:
    # byte0 >= MIN_PAYLOAD or any of bytes 1..3 non-zero; byte3 <= max_payload >> 24.
    top = min(max_payload >> 24, 0xFF)
    b3 = b"[\\x00-" + b"\\x%02x" % top + b"]"
    return (b"(?:[\\x%02x-\\xff][\\x00-\\xff]{2}" % MIN_PAYLOAD
            + b"|[\\x00-\\xff][\\x01-\\xff][\\x00-\\xff]"
            + b"|[\\x00-\\xff]{2}[\\x01-\\xff])" + b3)


def max_findable_index(size: int, start: int, min_index: int) -> int:
    """The highest index a record of this log could carry at or after ``start``: records are
    contiguous, so at most one per MIN_FRAME bytes follows ``min_index``."""
    return min_index + max(0, size - start) // MIN_FRAME + 1


def _candidates(buf: memoryview, start: int, min_index: int, max_payload: int) -> Iterable[int]:
    """Offsets at or after ``start`` where a frame of index >= ``min_index`` *might* start.

    A C-speed regex prefilter (plausible length, and the index's top five bytes) so that
    scanning megabytes of garbage or zeros takes about 0.1 s per MiB, not seconds; every
    candidate is then checked in full by :func:`find_frame`. Over the range of indexes
    that could occur (:func:`max_findable_index`) the index's top five bytes take at most
    a couple of values, which make a good literal.
    """
    max_index = max_findable_index(len(buf), start, min_index)
    tops = range(min_index >> 24, (max_index >> 24) + 1)
    pattern = _length_class(max_payload) + b"[\\x00-\\xff]{4}[\\x00-\\xff]{3}"
    if len(tops) <= 4 and max_index < _U64:
        pattern += b"(?:" + b"|".join(re.escape(_INDEX.pack(t << 24)[3:]) for t in tops) + b")"
    regex = re.compile(b"(?=" + pattern + b")", re.DOTALL)
    for m in regex.finditer(buf, start):
        yield m.start()


def find_frame(buf: bytes | memoryview, start: int, min_index: int,
               max_payload: int = MAX_PAYLOAD_BYTES) -> tuple[int, int] | None:
    """The first (offset, index) at or after ``start`` where a complete frame with a valid
    checksum starts whose index could continue the log (``min_index <= index <=``
    :func:`max_findable_index`), trying every byte offset; None if there is none."""
    mv = memoryview(buf)
    size = len(mv)
    max_index = max_findable_index(size, start, min_index)
    for p in _candidates(mv, start, min_index, max_payload):
        length, crc = FRAME.unpack_from(mv, p)
        body = p + FRAME_BYTES
        if not MIN_PAYLOAD <= length <= max_payload or body + length > size:
            continue
        index = _INDEX.unpack_from(mv, body)[0]
        if min_index <= index <= max_index and zlib.crc32(mv[body:body + length]) == crc:
            return p, index
    return None


def decode_frames(buf: bytes | memoryview, first_index: int, count: int, *, path: str,
                  base_offset: int, max_payload: int = MAX_PAYLOAD_BYTES) -> list[Entry]:
    """Decode ``count`` consecutive frames that recovery already vouched for, checking each
    checksum again (the disk may have rotted since): raises :class:`CorruptLog` if not."""
    out: list[Entry] = []
    mv = memoryview(buf)
    p = 0
    size = len(mv)
    unpack_frame, unpack_head, crc32 = FRAME.unpack_from, PAYLOAD_HEADER.unpack_from, zlib.crc32
    for expected in range(first_index, first_index + count):
        problem = None
        if size - p < FRAME_BYTES:
            problem = "record header cut short"
        else:
            length, crc = unpack_frame(mv, p)
            body = p + FRAME_BYTES
            if not MIN_PAYLOAD <= length <= max_payload or body + length > size:
                problem = f"implausible record length {length}"
            elif crc32(mv[body:body + length]) != crc:
                problem = "checksum mismatch"
            else:
                index, term, kind = unpack_head(mv, body)
                if index != expected:
                    problem = f"record has index {index}, expected {expected}"
        if problem is not None:
            raise CorruptLog(f"{path}: offset {base_offset + p}: {problem} (on read)",
                             path=path, offset=base_offset + p)
        out.append(Entry(index, term, kind, bytes(mv[body + MIN_PAYLOAD:body + length])))
        p = body + length
    return out
