"""Raft messages <-> plain msgpack-ready lists, with validation of everything that arrives.

Layout (each a msgpack array; ids are UTF-8 strings, integers unsigned 64-bit, flags booleans,
``data`` msgpack bin)::

    VOTE           [src, dst, term, last_index, last_term, pre, transfer]
    VOTE_RESP      [src, dst, term, granted, pre]
    APPEND         [src, dst, term, prev_index, prev_term, [E...], commit, ctx, heartbeat]
    APPEND_RESP    [src, dst, term, success, index, hint, ctx, heartbeat]
    SNAPSHOT       [src, dst, term, [index, term, [voters], [learners], [outgoing]], data]
    SNAPSHOT_RESP  [src, dst, term, index]
    TIMEOUT_NOW    [src, dst, term]

where ``E`` is an entry ``[index, term, kind, data]``.

``src`` travels in the body although the envelope names the sender too: the core reads it from
the message, and the runtime drops a message whose ``src`` is not the envelope's (the
transport's word on who sent it).

What :func:`from_body` checks besides the shapes and types, and why:

* ids are non-empty and at most 255 UTF-8 bytes (the envelope's name field is that wide);
* no term inside a message exceeds the message's ``term`` (a candidate's last log term, a
  leader's entries and snapshot were all written in its term or before);
* an APPEND's entries are ``prev_index + 1, prev_index + 2, ...`` with terms that never go
  down and start at ``prev_term`` or later (the log matching property holds for the entries
  themselves, so the log never stores a gap or a term going backwards); a heartbeat carries
  no entries (it does no log check, so entries in one could not be placed);
* a snapshot's configuration has at least one voter, no id twice in a list and no id both
  voter and learner. A learner may also be an outgoing voter (demoted during a joint change);
* bounds: :data:`MAX_ENTRIES` entries and :data:`MAX_ENTRY_BYTES` of entry data per APPEND,
  :data:`MAX_SNAPSHOT_BYTES` of snapshot data, :data:`MAX_CONF_IDS` ids per configuration list.

It raises :class:`~mesh.errors.ProtocolError` for anything else, so a driver drops and counts
it. The generic byte-level limits (body size, depth, bin length, containers) are the codec's
job and are usually the tighter ones. A CONFIG entry's data is decoded here, by
:func:`decode_conf`, which reads it token by token and builds nothing but the ids (at most
:data:`MAX_CONF_IDS` per list, :data:`MAX_ID_BYTES` each); an application command is not
looked into (the state machine decodes it under its own limits).

APPEND and its reply are the replication hot path: their checks are inline expressions, and
only a failure calls out to find which field to blame.
"""
from __future__ import annotations

from typing import Any

import msgpack

from mesh.errors import ProtocolError
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, InstallSnapshot, Message,
                                RaftKind, Snapshot, SnapshotMeta, SnapshotResp, TimeoutNow, Vote, VoteResp)

MAX_ID_BYTES = 255
MAX_ENTRIES = 65536                 # per APPEND
MAX_ENTRY_BYTES = 64 * 1024 * 1024  # entry data per APPEND, all entries together
MAX_SNAPSHOT_BYTES = 1 << 30        # one snapshot travels whole in one message
MAX_CONF_IDS = 4096                 # per list (voters, learners, outgoing voters)
MAX_U64 = (1 << 64) - 1
_CONFIG = int(EntryKind.CONFIG)
_ENTRY_KINDS = tuple(EntryKind)     # index by the wire value: cheaper than EntryKind(value) per entry
_MAX_ENTRY_KIND = len(_ENTRY_KINDS) - 1
if [int(k) for k in _ENTRY_KINDS] != list(range(len(_ENTRY_KINDS))):
    raise ImportError("mesh.raft.wire expects EntryKind values 0, 1, 2, ... in order")


# -- encoding ---------------------------------------------------------------------------------

def to_body(msg: Message) -> list:
    """The msgpack-ready body of ``msg``; TypeError if it is not a Raft message."""
    t = type(msg)
    if t is Append:
        return [msg.src, msg.dst, msg.term, msg.prev_index, msg.prev_term,
                [[e.index, e.term, int(e.kind), e.data] for e in msg.entries], msg.commit, msg.ctx, msg.heartbeat]
    if t is AppendResp:
        return [msg.src, msg.dst, msg.term, msg.success, msg.index, msg.hint, msg.ctx, msg.heartbeat]
    if t is Vote:
        return [msg.src, msg.dst, msg.term, msg.last_index, msg.last_term, msg.pre, msg.transfer]
    if t is VoteResp:
        return [msg.src, msg.dst, msg.term, msg.granted, msg.pre]
    if t is InstallSnapshot:
        meta = msg.snapshot.meta
        conf = meta.conf
        return [msg.src, msg.dst, msg.term,
                [meta.index, meta.term, list(conf.voters), list(conf.learners), list(conf.voters_outgoing)],
                msg.snapshot.data]
    if t is SnapshotResp:
        return [msg.src, msg.dst, msg.term, msg.index]
    if t is TimeoutNow:
        return [msg.src, msg.dst, msg.term]
    raise TypeError(f"not a Raft message: {msg!r}")


# -- decoding ---------------------------------------------------------------------------------

def from_body(kind: int, body: Any) -> Message:
    """Build the message of ``kind`` from a decoded body; ProtocolError if it is not one."""
    decode = _DECODERS.get(kind) if type(kind) is not bool and isinstance(kind, int) else None
    if decode is None:
        raise ProtocolError(f"unknown Raft kind {kind!r}")
    if type(body) is not list:
        raise ProtocolError(f"{RaftKind(kind).name} body must be an array, got {type(body).__name__}")
    return decode(body)


def _append(body: list) -> Append:
    if len(body) != 9:
        raise _arity("APPEND", body, 9)
    src, dst, term, prev_index, prev_term, raw, commit, ctx, heartbeat = body
    _ids(src, dst, "APPEND")
    if not (type(term) is int and 0 <= term <= MAX_U64 and type(prev_index) is int and 0 <= prev_index <= MAX_U64
            and type(prev_term) is int and 0 <= prev_term <= term and type(commit) is int
            and 0 <= commit <= MAX_U64 and type(ctx) is int and 0 <= ctx <= MAX_U64):
        _blame("APPEND", term, ("term", term), ("prev_index", prev_index), ("prev_term", prev_term),
               ("commit", commit), ("ctx", ctx))
    if type(heartbeat) is not bool:
        raise ProtocolError("malformed APPEND: heartbeat must be a boolean")
    if type(raw) is not list:
        raise ProtocolError("malformed APPEND: entries must be an array")
    n = len(raw)
    if n:
        if n > MAX_ENTRIES:
            raise ProtocolError(f"malformed APPEND: {n} entries (limit {MAX_ENTRIES})")
        if heartbeat:
            raise ProtocolError("malformed APPEND: a heartbeat carries no entries")
        if prev_index + n > MAX_U64:
            raise ProtocolError("malformed APPEND: entry indexes run past 2**64-1")
    entries = []
    add = entries.append
    kinds = _ENTRY_KINDS
    nxt = prev_index + 1
    low = prev_term
    size = 0
    for e in raw:
        if type(e) is not list or len(e) != 4:
            raise ProtocolError("malformed APPEND: an entry must be [index, term, kind, data]")
        i, t, k, d = e
        if (type(i) is not int or i != nxt or type(t) is not int or not low <= t <= term
                or type(k) is not int or not 0 <= k <= _MAX_ENTRY_KIND or type(d) is not bytes):
            _blame_entry(e, nxt, low, term)
        size += len(d)
        if size > MAX_ENTRY_BYTES:
            raise ProtocolError(f"malformed APPEND: more than {MAX_ENTRY_BYTES} bytes of entry data")
        if k == _CONFIG:
            decode_conf(d)   # the core applies it when committed: it must be valid now
        add(Entry(i, t, kinds[k], d))
        nxt += 1
        low = t
    return Append(src, dst, term, prev_index, prev_term, tuple(entries), commit, ctx, heartbeat)


def _append_resp(body: list) -> AppendResp:
    if len(body) != 8:
        raise _arity("APPEND_RESP", body, 8)
    src, dst, term, success, index, hint, ctx, heartbeat = body
    _ids(src, dst, "APPEND_RESP")
    if not (type(term) is int and 0 <= term <= MAX_U64 and type(index) is int and 0 <= index <= MAX_U64
            and type(hint) is int and 0 <= hint <= MAX_U64 and type(ctx) is int and 0 <= ctx <= MAX_U64):
        _blame("APPEND_RESP", None, ("term", term), ("index", index), ("hint", hint), ("ctx", ctx))
    if type(success) is not bool or type(heartbeat) is not bool:
        raise ProtocolError("malformed APPEND_RESP: success and heartbeat must be booleans")
    return AppendResp(src, dst, term, success, index, hint, ctx, heartbeat)


def _vote(body: list) -> Vote:
    if len(body) != 7:
        raise _arity("VOTE", body, 7)
    src, dst, term, last_index, last_term, pre, transfer = body
    _ids(src, dst, "VOTE")
    if not (type(term) is int and 0 <= term <= MAX_U64 and type(last_index) is int
            and 0 <= last_index <= MAX_U64 and type(last_term) is int and 0 <= last_term <= term):
        _blame("VOTE", term, ("term", term), ("last_index", last_index), ("last_term", last_term))
    if type(pre) is not bool or type(transfer) is not bool:
        raise ProtocolError("malformed VOTE: pre and transfer must be booleans")
    return Vote(src, dst, term, last_index, last_term, pre, transfer)


def _vote_resp(body: list) -> VoteResp:
    if len(body) != 5:
        raise _arity("VOTE_RESP", body, 5)
    src, dst, term, granted, pre = body
    _ids(src, dst, "VOTE_RESP")
    if not (type(term) is int and 0 <= term <= MAX_U64):
        _blame("VOTE_RESP", None, ("term", term))
    if type(granted) is not bool or type(pre) is not bool:
        raise ProtocolError("malformed VOTE_RESP: granted and pre must be booleans")
    return VoteResp(src, dst, term, granted, pre)


def _snapshot(body: list) -> InstallSnapshot:
    if len(body) != 5:
        raise _arity("SNAPSHOT", body, 5)
    src, dst, term, meta, data = body
    _ids(src, dst, "SNAPSHOT")
    if type(meta) is not list or len(meta) != 5:
        raise ProtocolError("malformed SNAPSHOT: metadata must be [index, term, voters, learners, outgoing]")
    index, snap_term, voters, learners, outgoing = meta
    if not (type(term) is int and 0 <= term <= MAX_U64 and type(index) is int and 0 <= index <= MAX_U64
            and type(snap_term) is int and 0 <= snap_term <= term):
        _blame("SNAPSHOT", term, ("term", term), ("index", index), ("snapshot term", snap_term))
    if type(data) is not bytes:
        raise ProtocolError(f"malformed SNAPSHOT: data must be bytes, got {type(data).__name__}")
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ProtocolError(f"malformed SNAPSHOT: {len(data)} bytes of data (limit {MAX_SNAPSHOT_BYTES})")
    conf = _conf(voters, learners, outgoing, "SNAPSHOT")
    return InstallSnapshot(src, dst, term, Snapshot(SnapshotMeta(index, snap_term, conf), data))


def _conf(voters: Any, learners: Any, outgoing: Any, where: str) -> ConfState:
    voters = _id_list(voters, "voters")
    learners = _id_list(learners, "learners")
    outgoing = _id_list(outgoing, "outgoing voters")
    if not voters:
        raise ProtocolError(f"malformed {where}: a configuration needs at least one voter")
    if learners and not set(voters).isdisjoint(learners):
        raise ProtocolError(f"malformed {where}: an id is both voter and learner")
    return ConfState(voters, learners, outgoing)


def encode_conf(conf: ConfState) -> bytes:
    """The data of a CONFIG entry: msgpack ``[voters, learners, outgoing voters]``."""
    return msgpack.packb([list(conf.voters), list(conf.learners), list(conf.voters_outgoing)])


def decode_conf(data: bytes) -> ConfState:
    """A CONFIG entry's configuration; ProtocolError if it is not one.

    Read token by token rather than by msgpack: the data arrives in an APPEND from any peer and
    is decoded before the core knows whether the sender leads, and msgpack would first build
    whatever the bytes describe (16 MiB of nested empty arrays is a gigabyte of lists). This
    reader builds only the ids, accepts exactly the msgpack encodings of three arrays of strings
    and nothing after them, and lets :func:`_conf` judge the ids."""
    if type(data) is not bytes:
        raise ProtocolError(f"malformed CONFIG entry: data must be bytes, got {type(data).__name__}")
    pos, count = _array_header(data, 0)
    if count != 3:
        raise ProtocolError("malformed CONFIG entry: expected [voters, learners, outgoing voters]")
    lists = []
    for what in ("voters", "learners", "outgoing voters"):
        pos, count = _array_header(data, pos)
        if count > MAX_CONF_IDS:
            raise ProtocolError(f"malformed CONFIG entry: {count} {what} (limit {MAX_CONF_IDS})")
        ids = []
        for _ in range(count):
            pos, value = _conf_id(data, pos)
            ids.append(value)
        lists.append(ids)
    if pos != len(data):
        raise ProtocolError(f"malformed CONFIG entry: {len(data) - pos} bytes after the configuration")
    return _conf(*lists, "CONFIG entry")


def _array_header(data: bytes, pos: int) -> tuple[int, int]:
    """(position after it, item count) of the msgpack array header at ``pos``."""
    if pos >= len(data):
        raise ProtocolError("malformed CONFIG entry: truncated")
    byte = data[pos]
    if 0x90 <= byte <= 0x9F:
        return pos + 1, byte & 0x0F
    width = 2 if byte == 0xDC else 4 if byte == 0xDD else 0
    if not width:
        raise ProtocolError(f"malformed CONFIG entry: expected an array at offset {pos}")
    if pos + 1 + width > len(data):
        raise ProtocolError("malformed CONFIG entry: truncated")
    return pos + 1 + width, int.from_bytes(data[pos + 1:pos + 1 + width], "big")


def _conf_id(data: bytes, pos: int) -> tuple[int, str]:
    """(position after it, value) of the msgpack value at ``pos``, which must be a str of at
    most MAX_ID_BYTES bytes: anything else is refused without being built."""
    if pos >= len(data):
        raise ProtocolError("malformed CONFIG entry: truncated")
    byte = data[pos]
    if 0xA0 <= byte <= 0xBF:
        start, length = pos + 1, byte & 0x1F
    else:
        width = {0xD9: 1, 0xDA: 2, 0xDB: 4}.get(byte)
        if width is None:
            raise ProtocolError(f"malformed CONFIG entry: expected an id (a string) at offset {pos}")
        start = pos + 1 + width
        if start > len(data):
            raise ProtocolError("malformed CONFIG entry: truncated")
        length = int.from_bytes(data[pos + 1:start], "big")
    if length > MAX_ID_BYTES:
        raise ProtocolError(f"malformed CONFIG entry: an id of {length} bytes (limit {MAX_ID_BYTES})")
    if start + length > len(data):
        raise ProtocolError("malformed CONFIG entry: truncated")
    try:
        return start + length, data[start:start + length].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"malformed CONFIG entry: an id at offset {pos} is not UTF-8") from None


def _snapshot_resp(body: list) -> SnapshotResp:
    if len(body) != 4:
        raise _arity("SNAPSHOT_RESP", body, 4)
    src, dst, term, index = body
    _ids(src, dst, "SNAPSHOT_RESP")
    if not (type(term) is int and 0 <= term <= MAX_U64 and type(index) is int and 0 <= index <= MAX_U64):
        _blame("SNAPSHOT_RESP", None, ("term", term), ("index", index))
    return SnapshotResp(src, dst, term, index)


def _timeout_now(body: list) -> TimeoutNow:
    if len(body) != 3:
        raise _arity("TIMEOUT_NOW", body, 3)
    src, dst, term = body
    _ids(src, dst, "TIMEOUT_NOW")
    if not (type(term) is int and 0 <= term <= MAX_U64):
        _blame("TIMEOUT_NOW", None, ("term", term))
    return TimeoutNow(src, dst, term)


_DECODERS = {
    RaftKind.VOTE: _vote, RaftKind.VOTE_RESP: _vote_resp, RaftKind.APPEND: _append,
    RaftKind.APPEND_RESP: _append_resp, RaftKind.SNAPSHOT: _snapshot, RaftKind.SNAPSHOT_RESP: _snapshot_resp,
    RaftKind.TIMEOUT_NOW: _timeout_now,
}
if set(_DECODERS) != set(RaftKind):
    raise ImportError("mesh.raft.wire does not decode every RaftKind")


# -- field checks -------------------------------------------------------------------------------

def _ids(src: Any, dst: Any, name: str) -> None:
    """Both ids non-empty strings of at most MAX_ID_BYTES UTF-8 bytes."""
    # a code point is at most 4 UTF-8 bytes: only strings over 63 characters need the exact count
    if (type(src) is not str or not src or type(dst) is not str or not dst
            or (len(src) > 63 and _too_long(src)) or (len(dst) > 63 and _too_long(dst))):
        raise ProtocolError(f"malformed {name}: src and dst must be ids, got {_describe(src)} and {_describe(dst)}")


def _id_list(items: Any, what: str) -> tuple[str, ...]:
    if type(items) is not list:
        raise ProtocolError(f"malformed SNAPSHOT: {what} must be an array")
    if len(items) > MAX_CONF_IDS:
        raise ProtocolError(f"malformed SNAPSHOT: {len(items)} {what} (limit {MAX_CONF_IDS})")
    for v in items:
        if type(v) is not str or not v or (len(v) > 63 and _too_long(v)):
            raise ProtocolError(f"malformed SNAPSHOT: bad id among {what}: {_describe(v)}")
    out = tuple(items)
    if len(set(out)) != len(out):
        raise ProtocolError(f"malformed SNAPSHOT: an id appears twice among {what}")
    return out


def _too_long(value: str) -> bool:
    # surrogatepass: a str that is not valid UTF-8 (the codec never makes one) is still measured
    return len(value) > MAX_ID_BYTES or len(value.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES


def _describe(value: Any) -> str:
    if type(value) is str:
        return f"a string of {len(value)} characters" if value else "an empty string"
    return f"a value of type {type(value).__name__}"


# -- the slow path: say what was wrong ----------------------------------------------------------

def _arity(name: str, body: list, want: int) -> ProtocolError:
    return ProtocolError(f"malformed {name}: {len(body)} fields, expected {want}")


def _blame(name: str, term: Any, *fields: tuple[str, Any]) -> None:
    """Raise for the first of ``fields`` that is not a u64 (or, for those named ``*term`` other
    than ``term`` itself, exceeds the message's ``term``)."""
    for field, value in fields:
        if type(value) is not int or not 0 <= value <= MAX_U64:
            raise ProtocolError(f"malformed {name}: {field} must be an unsigned 64-bit integer, got {value!r}")
        if field != "term" and field.endswith("term") and term is not None and value > term:
            raise ProtocolError(f"malformed {name}: {field} {value} is after the message's term {term}")
    raise AssertionError(f"{name}: _blame found nothing wrong")   # a check above disagrees with its caller


def _blame_entry(e: list, index: int, low: int, term: int) -> None:
    i, t, k, d = e
    if type(i) is not int or i != index:
        raise ProtocolError(f"malformed APPEND: entry index {i!r} where {index} comes next")
    if type(t) is not int or not 0 <= t <= MAX_U64:
        raise ProtocolError(f"malformed APPEND: entry term must be an unsigned 64-bit integer, got {t!r}")
    if t < low:
        raise ProtocolError(f"malformed APPEND: entry {i} has term {t}, before the term {low} preceding it")
    if t > term:
        raise ProtocolError(f"malformed APPEND: entry {i} has term {t}, after the message's term {term}")
    if type(k) is not int or not 0 <= k <= _MAX_ENTRY_KIND:
        raise ProtocolError(f"malformed APPEND: unknown entry kind {k!r}")
    raise ProtocolError(f"malformed APPEND: entry data must be bytes, got {type(d).__name__}")
