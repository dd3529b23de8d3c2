"""Raft messages on the wire: every kind round-trips through the codec, and anything else a
peer might send is refused with ProtocolError (never another exception)."""
from __future__ import annotations

import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh._core import IMPLEMENTATION, codec
from mesh.errors import ProtocolError
from mesh.raft import wire
from mesh.raft.messages import (KIND_OF, Append, AppendResp, ConfState, Entry, EntryKind, InstallSnapshot, RaftKind,
                                Snapshot, SnapshotMeta, SnapshotResp, TimeoutNow, Vote, VoteResp)
from mesh.raft.wire import (decode_conf, encode_conf, MAX_CONF_IDS, MAX_ENTRIES, MAX_ENTRY_BYTES, MAX_ID_BYTES, MAX_SNAPSHOT_BYTES, MAX_U64,
                            from_body, to_body)
from mesh.swim.messages import Ping

CONF = ConfState(("n1", "n2", "n3"), ("l1",), ())
JOINT = ConfState(("n1", "n2", "n4"), ("l1", "n3"), ("n1", "n2", "n3"))   # n3 demoted to learner
ENTRIES = (
    Entry(41, 6, EntryKind.NOOP),
    Entry(42, 7, EntryKind.NORMAL, b'{"op":"put","key":"a","value":"\x00\xff"}'),
    Entry(43, 7, EntryKind.CONFIG, encode_conf(ConfState(("n1", "n2", "n3", "n4"), ("l1",)))),
    Entry(44, 7, EntryKind.NORMAL, bytes(range(256)) * 4),
)
SNAPSHOT = Snapshot(SnapshotMeta(1200, 6, CONF), b"\x89state machine image\x00" * 100)

MESSAGES = [
    Vote("n1", "n2", 8, 44, 7),
    Vote("n1", "n2", 8, 44, 7, pre=True),
    Vote("n1", "n2", MAX_U64, MAX_U64, MAX_U64, transfer=True),
    Vote("n1", "n2", 0, 0, 0),
    VoteResp("n2", "n1", 8, True), VoteResp("n2", "n1", 9, False, pre=True),
    Append("n1", "n2", 7, 40, 6, ENTRIES, 39),
    Append("n1", "n2", 7, 40, 6, ENTRIES[:1], 41, ctx=5),
    Append("n1", "n2", 7, 0, 0, (Entry(1, 1, EntryKind.NOOP),), 0),
    Append("n1", "n2", 7, 44, 7, (), 44),                                   # a probe
    Append("n1", "n2", 7, 0, 0, (), 44, ctx=12, heartbeat=True),
    Append("n1", "n2", MAX_U64, MAX_U64 - 1, MAX_U64, (Entry(MAX_U64, MAX_U64, EntryKind.NORMAL, b"x"),), MAX_U64),
    AppendResp("n2", "n1", 7, True, 44), AppendResp("n2", "n1", 7, False, 40, 38),
    AppendResp("n2", "n1", 7, True, 44, ctx=12, heartbeat=True),
    InstallSnapshot("n1", "n2", 7, SNAPSHOT),
    InstallSnapshot("n1", "n2", 9, Snapshot(SnapshotMeta(5000, 9, JOINT), b"")),
    SnapshotResp("n2", "n1", 7, 1200), SnapshotResp("n2", "n1", 7, 0),
    TimeoutNow("n1", "n3", 7),
    Vote("ノード-1", "node/β", 1, 0, 0),
]


def through_codec(kind: int, body: object):
    return from_body(kind, codec.load_body(codec.pack_body(body)))


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_every_kind(msg):
    kind = KIND_OF[type(msg)]
    back = through_codec(kind, to_body(msg))
    assert back == msg and type(back) is type(msg)
    if isinstance(back, Append):
        assert all(type(e.kind) is EntryKind for e in back.entries)
        assert type(back.entries) is tuple
    if isinstance(back, InstallSnapshot):
        conf = back.snapshot.meta.conf
        assert all(type(x) is tuple for x in (conf.voters, conf.learners, conf.voters_outgoing))


def test_every_kind_has_a_message_class():
    assert set(KIND_OF.values()) == set(RaftKind)
    assert {KIND_OF[type(m)] for m in MESSAGES} == set(RaftKind)


def _plain(obj) -> bool:
    if type(obj) is list:
        return all(_plain(x) for x in obj)
    return type(obj) in (int, bool, str, bytes)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_bodies_are_plain_lists_of_plain_values(msg):
    """No enums, tuples or dataclasses leak onto the wire (both codec twins see the same thing)."""
    assert _plain(to_body(msg))


@pytest.mark.parametrize("obj", [ENTRIES[0], SNAPSHOT, CONF, None, 66, [1, 2], {"src": "n1"}, Ping(1, "n2")],
                         ids=lambda o: type(o).__name__)
def test_to_body_refuses_other_objects(obj):
    with pytest.raises(TypeError, match="not a Raft message"):
        to_body(obj)


def test_limits_at_the_edge_are_accepted():
    longest = "i" * MAX_ID_BYTES
    utf8 = "é" * (MAX_ID_BYTES // 2)                  # 254 bytes
    four = "\U0001f600" * (MAX_ID_BYTES // 4)         # 252 bytes in 63 characters
    for name in (longest, utf8, four):
        assert through_codec(RaftKind.TIMEOUT_NOW, [name, name, 1]) == TimeoutNow(name, name, 1)
    many = tuple(Entry(i, 1) for i in range(1, MAX_ENTRIES + 1))
    msg = Append("n1", "n2", 1, 0, 0, many, 0)
    assert through_codec(RaftKind.APPEND, to_body(msg)) == msg
    half = MAX_ENTRY_BYTES // 2
    big = Append("n1", "n2", 1, 0, 0, (Entry(1, 1, data=bytes(half)), Entry(2, 1, data=bytes(half))), 0)
    assert from_body(RaftKind.APPEND, to_body(big)) == big
    ids = tuple(f"n{i}" for i in range(MAX_CONF_IDS))
    conf = ConfState(ids, tuple(f"l{i}" for i in range(MAX_CONF_IDS)), ids)
    snap = InstallSnapshot("n1", "n2", 1, Snapshot(SnapshotMeta(1, 1, conf), b""))
    assert through_codec(RaftKind.SNAPSHOT, to_body(snap)) == snap


def test_limits_one_past_the_edge_are_refused():
    raw = [[i, 1, 0, b""] for i in range(1, MAX_ENTRIES + 2)]
    with pytest.raises(ProtocolError, match="entries"):
        from_body(RaftKind.APPEND, ["n1", "n2", 1, 0, 0, raw, 0, 0, False])
    half = MAX_ENTRY_BYTES // 2
    raw = [[1, 1, 0, bytes(half)], [2, 1, 0, bytes(half + 1)]]
    with pytest.raises(ProtocolError, match="bytes of entry data"):
        from_body(RaftKind.APPEND, ["n1", "n2", 1, 0, 0, raw, 0, 0, False])
    too_many = [f"n{i}" for i in range(MAX_CONF_IDS + 1)]
    for where in (2, 3, 4):
        meta = [1, 1, ["v"], [], []]
        meta[where] = too_many
        with pytest.raises(ProtocolError, match="limit"):
            from_body(RaftKind.SNAPSHOT, ["n1", "n2", 1, meta, b""])


def test_snapshot_data_bound(monkeypatch):
    """The real bound is 1 GiB: shrink it rather than allocate that much."""
    monkeypatch.setattr(wire, "MAX_SNAPSHOT_BYTES", 16)
    assert from_body(RaftKind.SNAPSHOT, ["n1", "n2", 1, [1, 1, ["v"], [], []], bytes(16)]).snapshot.data == bytes(16)
    with pytest.raises(ProtocolError, match="limit 16"):
        from_body(RaftKind.SNAPSHOT, ["n1", "n2", 1, [1, 1, ["v"], [], []], bytes(17)])
    assert MAX_SNAPSHOT_BYTES == 1 << 30


# -- malformed bodies ----------------------------------------------------------------------------

FIELDS = {
    RaftKind.VOTE: ["src", "dst", "term", "last_index", "last_term", "pre", "transfer"],
    RaftKind.VOTE_RESP: ["src", "dst", "term", "granted", "pre"],
    RaftKind.APPEND: ["src", "dst", "term", "prev_index", "prev_term", "entries", "commit", "ctx", "heartbeat"],
    RaftKind.APPEND_RESP: ["src", "dst", "term", "success", "index", "hint", "ctx", "heartbeat"],
    RaftKind.SNAPSHOT: ["src", "dst", "term", "meta", "data"],
    RaftKind.SNAPSHOT_RESP: ["src", "dst", "term", "index"],
    RaftKind.TIMEOUT_NOW: ["src", "dst", "term"],
}
GOOD_ENTRIES = [[11, 3, 0, b"a"], [12, 4, 2, encode_conf(ConfState(("n1",), ("l1",)))], [13, 5, 1, b""]]
GOOD_META = [10, 3, ["n1", "n2", "n3"], ["l1"], []]
GOOD = {
    RaftKind.VOTE: ["n1", "n2", 5, 10, 3, False, False],
    RaftKind.VOTE_RESP: ["n2", "n1", 5, True, False],
    RaftKind.APPEND: ["n1", "n2", 5, 10, 2, GOOD_ENTRIES, 9, 0, False],
    RaftKind.APPEND_RESP: ["n2", "n1", 5, True, 13, 0, 0, False],
    RaftKind.SNAPSHOT: ["n1", "n2", 5, GOOD_META, b"image"],
    RaftKind.SNAPSHOT_RESP: ["n2", "n1", 5, 10],
    RaftKind.TIMEOUT_NOW: ["n1", "n3", 5],
}
V, VR, A, AR, S, SR, T = RaftKind


def bad(kind: RaftKind, **change) -> tuple[RaftKind, list]:
    body = list(GOOD[kind])
    for name, value in change.items():
        body[FIELDS[kind].index(name)] = value
    return kind, body


def entries(*changes: tuple[int, int, object]) -> list:
    """GOOD_ENTRIES with (entry, field, value) replaced."""
    out = [list(e) for e in GOOD_ENTRIES]
    for i, f, v in changes:
        out[i][f] = v
    return out


def meta(**change) -> list:
    names = ["index", "term", "voters", "learners", "outgoing"]
    out = list(GOOD_META)
    for k, v in change.items():
        out[names.index(k)] = v
    return out


def test_good_bodies_are_good():
    for kind, body in GOOD.items():
        assert to_body(from_body(kind, body)) == body


MALFORMED = [
    # unknown kinds, with bodies that would be valid for some kind
    (63, GOOD[A]), (71, GOOD[A]), (0, GOOD[T]), (32, GOOD[T]), (-1, GOOD[T]), (95, GOOD[V]), (2**64, GOOD[T]),
    (64.0, GOOD[V]), (True, GOOD[T]), ("66", GOOD[A]), (None, GOOD[T]), ([66], GOOD[A]),
    # not an array
    (A, {"src": "n1"}), (A, tuple(GOOD[A])), (V, None), (T, "n1"), (T, b"n1"), (SR, 5),
    # wrong arity, every kind
    *[(k, GOOD[k][:-1]) for k in RaftKind], *[(k, GOOD[k] + [0]) for k in RaftKind], (T, []),
    # ids
    bad(V, src=""), bad(V, dst=""), bad(A, src=None), bad(A, dst=b"n2"), bad(AR, src=7), bad(T, dst=["n3"]),
    bad(T, src="s" * (MAX_ID_BYTES + 1)), bad(SR, dst="é" * 128),            # 128 characters, 256 bytes
    bad(VR, src="\U0001f600" * 64),                                           # 64 characters, 256 bytes
    # integers: negative, over u64, bool, float, other types
    bad(V, term=-1), bad(V, term=MAX_U64 + 1), bad(V, term=True), bad(V, term=5.0), bad(V, term="5"),
    bad(V, last_index=-1), bad(V, last_index=False), bad(V, last_term=None),
    bad(VR, term=None), bad(VR, term=-5), bad(T, term=2**70), bad(T, term=False),
    bad(A, term=b"\x05"), bad(A, prev_index=-1), bad(A, prev_index=MAX_U64 + 1), bad(A, prev_term=-1),
    bad(A, commit=True), bad(A, commit=-1), bad(A, ctx=-1), bad(A, ctx=MAX_U64 + 1), bad(A, ctx=1.0),
    bad(AR, term=-1), bad(AR, index=True), bad(AR, index=-1), bad(AR, hint=MAX_U64 + 1), bad(AR, hint=None),
    bad(AR, ctx=False), bad(SR, index=-1), bad(SR, index=True), bad(SR, term="x"),
    # terms inside a message after the message's term
    bad(V, last_term=6), bad(A, prev_term=6), bad(A, term=4),               # prev_term 2 fine, entries are not
    # booleans
    bad(V, pre=0), bad(V, pre=1), bad(V, transfer=None), bad(V, transfer="yes"), bad(VR, granted=1),
    bad(VR, granted=0), bad(VR, pre=None), bad(A, heartbeat=0), bad(A, heartbeat=1), bad(AR, success=1),
    bad(AR, success=None), bad(AR, heartbeat=0),
    # entry lists
    bad(A, entries=None), bad(A, entries={}), bad(A, entries=tuple(GOOD_ENTRIES)), bad(A, entries=[None]),
    bad(A, entries=[[11, 3, 0]]), bad(A, entries=[[11, 3, 0, b"", 0]]), bad(A, entries=[(11, 3, 0, b"")]),
    bad(A, entries=[{"index": 11}]), bad(A, entries=["entry"]),
    bad(A, prev_index=0, prev_term=0, entries=[[1, 1, 0, b""]] * 2),       # same index twice
    bad(A, heartbeat=True),                                                  # a heartbeat with entries
    bad(A, prev_index=MAX_U64, entries=[[MAX_U64 + 1, 3, 0, b""]]),          # index past u64
    bad(A, prev_index=MAX_U64 - 1, entries=[[MAX_U64, 3, 0, b""], [MAX_U64 + 1, 3, 0, b""]]),
    # contiguity and order
    bad(A, prev_index=9), bad(A, prev_index=11), bad(A, entries=entries((1, 0, 11))),
    bad(A, entries=entries((2, 0, 12))), bad(A, entries=entries((2, 0, 15))),
    bad(A, entries=[GOOD_ENTRIES[1], GOOD_ENTRIES[0], GOOD_ENTRIES[2]]),
    bad(A, entries=GOOD_ENTRIES[1:]), bad(A, entries=entries((0, 0, True))), bad(A, entries=entries((0, 0, 11.0))),
    bad(A, entries=entries((0, 0, -11))), bad(A, entries=entries((0, 0, "11"))),
    # entry terms: going down, before prev_term, after the message's term, not u64
    bad(A, entries=entries((2, 1, 3))), bad(A, entries=entries((0, 1, 1))), bad(A, entries=entries((2, 1, 6))),
    bad(A, entries=entries((0, 1, -1))), bad(A, entries=entries((0, 1, True))), bad(A, entries=entries((0, 1, None))),
    bad(A, prev_term=4),                                                     # first entry has term 3
    # entry kinds and data
    bad(A, entries=entries((0, 2, 3))), bad(A, entries=entries((0, 2, -1))), bad(A, entries=entries((0, 2, True))),
    bad(A, entries=entries((0, 2, 2**64))), bad(A, entries=entries((1, 2, "CONFIG"))),
    bad(A, entries=entries((0, 2, None))), bad(A, entries=entries((0, 3, "text"))),
    bad(A, entries=entries((2, 3, None))), bad(A, entries=entries((1, 3, bytearray(b"x")))),
    bad(A, entries=entries((0, 3, [1, 2]))), bad(A, entries=entries((0, 3, memoryview(b"x")))),
    # snapshots
    bad(S, meta=None), bad(S, meta=[]), bad(S, meta=GOOD_META[:4]), bad(S, meta=GOOD_META + [[]]),
    bad(S, meta=tuple(GOOD_META)), bad(S, meta={"index": 10}),
    bad(S, meta=meta(index=-1)), bad(S, meta=meta(index=True)), bad(S, meta=meta(index=MAX_U64 + 1)),
    bad(S, meta=meta(term=6)), bad(S, meta=meta(term=-1)), bad(S, meta=meta(term=None)),
    bad(S, data=None), bad(S, data="image"), bad(S, data=bytearray(b"image")), bad(S, data=[b"image"]),
    # configurations
    bad(S, meta=meta(voters=[])), bad(S, meta=meta(voters=None)), bad(S, meta=meta(voters=("n1",))),
    bad(S, meta=meta(voters="n1")), bad(S, meta=meta(voters=["n1", "n1"])), bad(S, meta=meta(voters=["n1", ""])),
    bad(S, meta=meta(voters=["n1", 2])), bad(S, meta=meta(voters=["n1", b"n2"])),
    bad(S, meta=meta(voters=["n1", "x" * (MAX_ID_BYTES + 1)])), bad(S, meta=meta(voters=[["n1"]])),
    bad(S, meta=meta(learners=None)), bad(S, meta=meta(learners=["l1", "l1"])), bad(S, meta=meta(learners=["n2"])),
    bad(S, meta=meta(learners=[None])), bad(S, meta=meta(learners={})),
    bad(S, meta=meta(outgoing=None)), bad(S, meta=meta(outgoing=["n1", "n1"])), bad(S, meta=meta(outgoing=[""])),
    bad(S, meta=meta(outgoing=[1])),
]


@pytest.mark.parametrize("kind, body", MALFORMED)
def test_malformed_bodies_raise_protocol_error(kind, body):
    with pytest.raises(ProtocolError):
        from_body(kind, body)


def test_malformed_table_is_large():
    assert len(MALFORMED) >= 150


def test_learner_may_be_an_outgoing_voter():
    """Demoting a voter during a joint change: it votes in the old config, learns in the new."""
    snap = from_body(S, bad(S, meta=meta(voters=["n1", "n2"], learners=["n3"], outgoing=["n1", "n2", "n3"]))[1])
    assert snap.snapshot.meta.conf == ConfState(("n1", "n2"), ("n3",), ("n1", "n2", "n3"))


@pytest.mark.parametrize("field, value, match", [
    (0, 12, "index 12 where 11 comes next"), (1, -2, "unsigned"), (1, 2, "before the term"),
    (1, 6, "after the message's term"), (2, 9, "entry kind"), (3, "x", "bytes"),
])
def test_bad_entry_deep_in_a_long_append_is_named(field, value, match):
    raw = [[10 + i, 3, 0, b"d" * 10] for i in range(1, 201)]
    raw[150][field] = value + 150 if field == 0 else value
    if field == 0:
        match = "index 162 where 161 comes next"
    with pytest.raises(ProtocolError, match=match):
        from_body(A, ["n1", "n2", 5, 10, 2, raw, 0, 0, False])


@pytest.mark.parametrize("kind, body, match", [
    bad(V, last_term=6) + ("last_term 6 is after the message's term 5",),
    bad(A, commit=-1) + ("commit must be an unsigned",),
    bad(AR, hint=True) + ("hint must be an unsigned",),
    bad(S, meta=meta(term=9)) + ("snapshot term 9 is after",),
    bad(A, heartbeat=True) + ("heartbeat carries no entries",),
    bad(SR, dst="") + ("empty string",),
    (A, GOOD[A][:8], "8 fields, expected 9"),
    (70, None, "TIMEOUT_NOW body must be an array"),
])
def test_errors_say_what_was_wrong(kind, body, match):
    with pytest.raises(ProtocolError, match=match):
        from_body(kind, body)


# -- hypothesis --------------------------------------------------------------------------------

def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64 + 5), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.sampled_from([0, 1, 2, 3, 4, 64, 66, MAX_U64, MAX_U64 + 1, -1, "", "n", b""]))
OBJECTS = st.recursive(
    LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=9),
                               st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)), children,
                                               max_size=4)),
    max_leaves=20)
ENTRY_LIKE = st.lists(st.one_of(st.integers(0, 6), st.sampled_from([b"", b"x", True, None, -1])),
                      min_size=3, max_size=5)
SHAPED = st.lists(st.one_of(LEAVES, st.lists(st.one_of(ENTRY_LIKE, OBJECTS), max_size=3)),
                  min_size=1, max_size=9)

ALL_KINDS = [int(k) for k in RaftKind] + [0, 32, 63, 71, 95]
HOSTILE = [None, True, False, -1, 0, 1, 2, 3, 10, 11, MAX_U64, MAX_U64 + 1, 1.5, float("nan"), "", "n9",
           "x" * 300, "é" * 128, b"", b"x", [], [[]], {}, {"a": 1}, ["n1", "n1"], [11, 3, 0, b""],
           [[11, 3, 0, b""]], [[11, 3, 0, b""], [11, 3, 0, b""]], [10, 3, ["n1"], [], []]]


def accepted(kind: object, body: object) -> None:
    """``from_body`` raises ProtocolError or returns a valid message that re-encodes to ``body``."""
    try:
        msg = from_body(kind, body)
    except ProtocolError:
        return
    assert KIND_OF[type(msg)] == kind
    assert to_body(msg) == body
    assert_valid(msg)


def _u64_ok(v) -> bool:
    return type(v) is int and 0 <= v <= MAX_U64


def _id_ok(v) -> bool:
    return type(v) is str and 0 < len(v.encode()) <= MAX_ID_BYTES


def assert_valid(msg) -> None:
    """What a core may assume about a message that came out of from_body (an independent
    statement of the rules in mesh/raft/wire.py's docstring)."""
    assert _id_ok(msg.src) and _id_ok(msg.dst) and _u64_ok(msg.term)
    for name in ("last_index", "last_term", "prev_index", "prev_term", "commit", "ctx", "index", "hint"):
        if hasattr(msg, name):
            assert _u64_ok(getattr(msg, name)), name
    for name in ("pre", "transfer", "granted", "success", "heartbeat"):
        if hasattr(msg, name):
            assert type(getattr(msg, name)) is bool, name
    if isinstance(msg, Vote):
        assert msg.last_term <= msg.term
    if isinstance(msg, Append):
        assert type(msg.entries) is tuple and len(msg.entries) <= MAX_ENTRIES
        assert msg.prev_term <= msg.term
        assert not (msg.heartbeat and msg.entries)
        assert [e.index for e in msg.entries] == list(range(msg.prev_index + 1, msg.prev_index + 1 + len(msg.entries)))
        terms = [msg.prev_term] + [e.term for e in msg.entries] + [msg.term]
        assert terms == sorted(terms)
        assert all(type(e.kind) is EntryKind and type(e.data) is bytes and _u64_ok(e.index) for e in msg.entries)
        assert sum(len(e.data) for e in msg.entries) <= MAX_ENTRY_BYTES
    if isinstance(msg, InstallSnapshot):
        m = msg.snapshot.meta
        assert _u64_ok(m.index) and _u64_ok(m.term) and m.term <= msg.term
        assert type(msg.snapshot.data) is bytes and len(msg.snapshot.data) <= MAX_SNAPSHOT_BYTES
        c = m.conf
        assert c.voters and not set(c.voters) & set(c.learners)
        for ids in (c.voters, c.learners, c.voters_outgoing):
            assert type(ids) is tuple and len(ids) <= MAX_CONF_IDS and len(set(ids)) == len(ids)
            assert all(_id_ok(x) for x in ids)


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, list):
        for i, x in enumerate(obj):
            yield from _paths(x, prefix + (i,))


def _at(obj, path):
    for i in path:
        obj = obj[i]
    return obj


def _replace(obj, path, value):
    if not path:
        return value
    out = list(obj)
    out[path[0]] = _replace(obj[path[0]], path[1:], value)
    return out


# Hypothesis takes milliseconds to draw an example, from_body microseconds: so each drawn example
# is checked many ways (every kind, every nested part, every hostile value in every place).
CHECKED = {"inputs": 0}


def accepted_counted(kind, body) -> None:
    CHECKED["inputs"] += 1
    accepted(kind, body)


@fuzz(200)
@given(body=OBJECTS)
def test_fuzz_arbitrary_objects(body):
    for path in _paths(body):
        part = _at(body, path)
        for kind in ALL_KINDS:
            accepted_counted(kind, part)


@fuzz(200)
@given(body=SHAPED)
def test_fuzz_message_shaped_objects(body):
    for path in _paths(body):
        part = _at(body, path)
        for kind in ALL_KINDS:
            accepted_counted(kind, part)
            accepted_counted(kind, [part])


# valid messages, for the round trip and for mutation

IDS = st.text(min_size=1, max_size=60)                 # at most 240 bytes in UTF-8
U64S = st.one_of(st.integers(0, 20), st.integers(0, MAX_U64))


CONF_DATA = encode_conf(ConfState(("n1", "n2"), ("l1",)))


@st.composite
def appends(draw) -> Append:
    term = draw(U64S)
    heartbeat = draw(st.booleans())
    n = 0 if heartbeat else draw(st.integers(0, 6))
    prev_term = draw(st.integers(0, term))
    prev_index = draw(st.one_of(st.integers(0, 50), st.integers(0, MAX_U64 - n)))
    terms = sorted(draw(st.lists(st.integers(prev_term, term), min_size=n, max_size=n)))
    kinds = [draw(st.sampled_from(list(EntryKind))) for _ in terms]
    ents = tuple(Entry(prev_index + 1 + i, t, k, CONF_DATA if k == EntryKind.CONFIG else draw(st.binary(max_size=40)))
                 for i, (t, k) in enumerate(zip(terms, kinds)))
    return Append(draw(IDS), draw(IDS), term, prev_index, prev_term, ents, draw(U64S), draw(U64S), heartbeat)


@st.composite
def snapshots(draw) -> InstallSnapshot:
    term = draw(U64S)
    voters = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    learners = draw(st.lists(IDS.filter(lambda x: x not in voters), max_size=3, unique=True))
    outgoing = draw(st.lists(IDS, max_size=5, unique=True))
    meta = SnapshotMeta(draw(U64S), draw(st.integers(0, term)), ConfState(tuple(voters), tuple(learners),
                                                                             tuple(outgoing)))
    return InstallSnapshot(draw(IDS), draw(IDS), term, Snapshot(meta, draw(st.binary(max_size=60))))


@st.composite
def votes(draw) -> Vote:
    term = draw(U64S)
    return Vote(draw(IDS), draw(IDS), term, draw(U64S), draw(st.integers(0, term)), draw(st.booleans()),
                draw(st.booleans()))


VALID = st.one_of(
    votes(), st.builds(VoteResp, IDS, IDS, U64S, st.booleans(), st.booleans()), appends(),
    st.builds(AppendResp, IDS, IDS, U64S, st.booleans(), U64S, U64S, U64S, st.booleans()), snapshots(),
    st.builds(SnapshotResp, IDS, IDS, U64S, U64S), st.builds(TimeoutNow, IDS, IDS, U64S))


@fuzz(300)
@given(msg=VALID)
def test_round_trip_generated_messages(msg):
    kind = KIND_OF[type(msg)]
    assert through_codec(kind, to_body(msg)) == msg
    assert from_body(kind, to_body(msg)) == msg
    assert_valid(msg)


@fuzz(150)
@given(msg=VALID, extra=OBJECTS)
def test_fuzz_valid_bodies_with_one_part_replaced(msg, extra):
    """Every part of a valid body (the body itself, each field, each entry, each field of each
    entry or of the snapshot metadata) replaced by each hostile value, under its own kind and
    under the others."""
    body = to_body(msg)
    kind = KIND_OF[type(msg)]
    for path in _paths(body):
        for value in HOSTILE + [extra]:
            accepted_counted(kind, _replace(body, path, value))
        for other in ALL_KINDS:
            accepted_counted(other, _replace(body, path, extra))
    for other in ALL_KINDS:
        accepted_counted(other, body)


ENTRY_FIELD = st.one_of(st.integers(0, 8), st.sampled_from([True, False, -1, None, b"", b"d", "d", 2**64]))


@fuzz(300)
@given(term=st.integers(0, 6), prev_index=st.integers(0, 4), prev_term=st.integers(0, 6), heartbeat=st.booleans(),
       raw=st.lists(st.one_of(st.tuples(st.integers(0, 9), st.integers(0, 7), st.integers(0, 3),
                                         st.sampled_from([b"", b"d", "d"])).map(list),
                              st.lists(ENTRY_FIELD, min_size=3, max_size=5)), max_size=6))
def test_fuzz_append_entry_sequences(term, prev_index, prev_term, heartbeat, raw):
    """Small numbers, so that valid runs (contiguous, terms in order) turn up often: accepted
    exactly when the rules say so."""
    body = ["n1", "n2", term, prev_index, prev_term, raw, 0, 0, heartbeat]
    want = (prev_term <= term and not (heartbeat and raw)
            and all(type(e) is list and len(e) == 4 for e in raw)
            and all(type(i) is int and i == prev_index + 1 + n for n, (i, _, _, _) in enumerate(raw))
            and all(type(t) is int and type(k) is int and 0 <= k <= 2 and type(d) is bytes for _, t, k, d in raw)
            and [prev_term] + [t for _, t, _, _ in raw] + [term] == sorted([prev_term] + [t for _, t, _, _ in raw]
                                                                           + [term])
            and all(k != 2 for _, _, k, _ in raw))    # (no data drawn here is a valid CONFIG)
    try:
        msg = from_body(A, body)
    except ProtocolError:
        assert not want, body
        return
    assert want, body
    assert to_body(msg) == body
    assert_valid(msg)
    for cut in range(len(raw) + 1):        # every prefix of a valid run is valid too, the empty one included
        from_body(A, ["n1", "n2", term, prev_index, prev_term, raw[:cut], 0, 0, heartbeat])


def test_fuzz_report_inputs_checked():
    """Runs after the fuzz tests above (file order): say, with -s, how many inputs they checked."""
    print(f"\nraft wire fuzz: {CHECKED['inputs']} inputs checked by the fuzz tests above")


# -- a measurement, printed with -s, never asserted --------------------------------------------

def test_measure_append_encode_decode():
    ents = tuple(Entry(1001 + i, 9, EntryKind.NORMAL, bytes([i]) * 100) for i in range(100))
    msg = Append("node-a", "node-b", 9, 1000, 9, ents, 990, 0, False)
    body = to_body(msg)
    raw = codec.pack_body(body)
    assert from_body(A, codec.load_body(raw)) == msg

    def per_message_us(fn, n: int = 300) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, time.perf_counter() - t0)
        return best / n * 1e6

    full = per_message_us(lambda: from_body(A, codec.load_body(codec.pack_body(to_body(msg)))))
    enc = per_message_us(lambda: to_body(msg))
    dec = per_message_us(lambda: from_body(A, body))
    print(f"\nAPPEND, 100 entries of 100 bytes ({len(raw)} bytes packed), codec {IMPLEMENTATION}: "
          f"{full:.1f} us per message encode+decode with the codec; wire only: "
          f"to_body {enc:.1f} us, from_body {dec:.1f} us")


@pytest.mark.parametrize("data", [b"", b"n1,n2|l1|", b"\xc1", encode_conf(ConfState((), ("l1",))),
                                  msgpack.packb([["n1"], ["n1"], []]), msgpack.packb([["n1"], []])])
def test_a_config_entry_must_hold_a_valid_configuration(data):
    """The core applies a CONFIG entry when it commits: a bad one is refused at the door."""
    with pytest.raises(ProtocolError, match="CONFIG"):
        from_body(A, ["n1", "n2", 3, 0, 0, [[1, 3, int(EntryKind.CONFIG), data]], 0, 0, False])
    conf = ConfState(("a", "b", "c"), ("d",), ("a", "x"))
    assert decode_conf(encode_conf(conf)) == conf
