"""SWIM messages on the wire: every kind round-trips through the codec, and anything else a
peer might send is refused with ProtocolError (never another exception)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh._core import codec
from mesh.errors import ProtocolError
from mesh.swim.messages import (KIND_OF, Ack, Gossip, Nack, Ping, PingReq, State, SwimKind, Sync,
                                SyncReply, Update)
from mesh.swim.wire import (MAX_ADDRESS_BYTES, MAX_ID_BYTES, MAX_META_BYTES, MAX_U64, MAX_UPDATES,
                            from_body, to_body)

U1 = Update(State.ALIVE, "n1", 3, "tcp://10.0.0.1:7001", b"\x00meta\xff")
U2 = Update(State.SUSPECT, "n2", 0, source="n1")
U3 = Update(State.DEAD, "n3", MAX_U64, source="n1")
U4 = Update(State.LEFT, "n4", 9, "tcp://h:1", b"", "n4")

MESSAGES = [
    Ping(0, "n2"),
    Ping(MAX_U64, "n2", (U1, U2)),
    PingReq(17, "n3", "tcp://10.0.0.3:7003", (U3,)),
    Ack(5), Ack(5, (U1, U2, U3, U4)),
    Nack(6, (U4,)),
    Gossip(), Gossip((U1, U2, U3, U4)),
    Sync(True, (U1,)), Sync(False, (U1, U2, U3, U4), (U2,)),
    SyncReply(()), SyncReply((U1, U4), (U3,)),
]


def through_codec(kind: int, body: object):
    return from_body(kind, codec.load_body(codec.pack_body(body)))


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: f"{type(m).__name__}-{len(m.updates)}")
def test_round_trip_every_kind(msg):
    kind = KIND_OF[type(msg)]
    back = through_codec(kind, to_body(msg))
    assert back == msg and type(back) is type(msg)
    assert all(type(u.state) is State for u in back.updates)


def test_every_kind_has_a_message_class():
    assert set(KIND_OF.values()) == set(SwimKind)


def test_to_body_refuses_other_objects():
    """A programming error on our side, but the message should say so: to_body reads
    ``msg.updates`` before checking the type, so it raises AttributeError (mesh/swim/wire.py,
    to_body, first line), and the TypeError at its end is reachable only for objects that
    happen to have ``updates``."""
    with pytest.raises(TypeError):
        to_body(U1)


def test_limits_at_the_edge_are_accepted():
    big = Update(State.ALIVE, "i" * MAX_ID_BYTES, MAX_U64, "a" * MAX_ADDRESS_BYTES, b"m" * MAX_META_BYTES,
                 "s" * MAX_ID_BYTES)
    assert through_codec(SwimKind.GOSSIP, to_body(Gossip((big,)))) == Gossip((big,))
    many = tuple(Update(State.ALIVE, f"n{i}", i) for i in range(MAX_UPDATES))
    assert from_body(SwimKind.SYNC_REPLY, to_body(SyncReply(many, many))) == SyncReply(many, many)
    utf8 = "é" * (MAX_ID_BYTES // 2)                  # 254 bytes
    assert from_body(SwimKind.PING, [1, utf8, [], 0]).target == utf8


GOOD_U = [0, "n1", 0, "tcp://a", b"", "", b""]


def with_update(**change):
    fields = ["state", "node", "incarnation", "address", "meta", "source", "sig"]
    u = list(GOOD_U)
    for k, v in change.items():
        u[fields.index(k)] = v
    return [u]


MALFORMED = [
    # a record signature that is not bytes, or longer than an Ed25519 signature
    (SwimKind.GOSSIP, [with_update(sig="x" * 64)]), (SwimKind.GOSSIP, [with_update(sig=b"x" * 65)]),
    # unknown kinds, with bodies that would be valid for some kind
    (31, [[]]), (39, [[]]), (0, [[]]), (-1, [[]]), (1000, [[]]), (31, [1, "a", []]), (39, [1, []]),
    (0, [True, [], []]), (2**64, [[], []]),
    # not an array
    (SwimKind.PING, {"seq": 1}), (SwimKind.PING, "x"), (SwimKind.PING, None), (SwimKind.PING, b""),
    (SwimKind.GOSSIP, 3), (SwimKind.SYNC, (True, [], [])),
    # wrong arity
    (SwimKind.PING, []), (SwimKind.PING, [1, "a"]), (SwimKind.PING, [1, "a", [], []]),
    (SwimKind.PING_REQ, [1, "a", []]), (SwimKind.PING_REQ, [1, "a", "x", [], 0]),
    (SwimKind.ACK, [1]), (SwimKind.ACK, [1, [], []]), (SwimKind.NACK, []),
    (SwimKind.GOSSIP, []), (SwimKind.GOSSIP, [[], []]),
    (SwimKind.SYNC, [True, []]), (SwimKind.SYNC, [True, [], [], []]),
    (SwimKind.SYNC_REPLY, [[]]), (SwimKind.SYNC_REPLY, [[], [], []]),
    # sequence numbers
    (SwimKind.PING, [-1, "a", []]), (SwimKind.PING, [MAX_U64 + 1, "a", []]), (SwimKind.PING, [1.0, "a", []]),
    (SwimKind.PING, [True, "a", []]), (SwimKind.PING, ["1", "a", []]), (SwimKind.PING, [None, "a", []]),
    (SwimKind.ACK, [-5, []]), (SwimKind.NACK, [2**70, []]), (SwimKind.PING_REQ, [b"\x01", "a", "b", []]),
    # strings
    (SwimKind.PING, [1, b"a", []]), (SwimKind.PING, [1, None, []]), (SwimKind.PING, [1, 7, []]),
    (SwimKind.PING, [1, "a" * (MAX_ID_BYTES + 1), []]),
    (SwimKind.PING, [1, "é" * 128, []]),                        # 128 characters, 256 bytes
    (SwimKind.PING_REQ, [1, "a", "x" * (MAX_ADDRESS_BYTES + 1), []]),
    (SwimKind.PING_REQ, [1, "a", ["x"], []]),
    # update lists
    (SwimKind.PING, [1, "a", {}]), (SwimKind.PING, [1, "a", None]), (SwimKind.GOSSIP, ["x"]),
    (SwimKind.GOSSIP, [[GOOD_U[:5]]]), (SwimKind.GOSSIP, [[GOOD_U + [0]]]), (SwimKind.GOSSIP, [[tuple(GOOD_U)]]),
    (SwimKind.GOSSIP, [[GOOD_U] * (MAX_UPDATES + 1)]),
    (SwimKind.SYNC, [True, [GOOD_U] * (MAX_UPDATES + 1), []]),
    (SwimKind.SYNC_REPLY, [[], [GOOD_U] * (MAX_UPDATES + 1)]),
    # one bad field in an update
    (SwimKind.GOSSIP, [with_update(state=4)]), (SwimKind.GOSSIP, [with_update(state=-1)]),
    (SwimKind.GOSSIP, [with_update(state=True)]), (SwimKind.GOSSIP, [with_update(state="0")]),
    (SwimKind.GOSSIP, [with_update(state=1.0)]),
    (SwimKind.GOSSIP, [with_update(node="")]), (SwimKind.GOSSIP, [with_update(node=5)]),
    (SwimKind.GOSSIP, [with_update(node="n" * (MAX_ID_BYTES + 1))]),
    (SwimKind.GOSSIP, [with_update(incarnation=-1)]), (SwimKind.GOSSIP, [with_update(incarnation=MAX_U64 + 1)]),
    (SwimKind.GOSSIP, [with_update(incarnation=False)]), (SwimKind.GOSSIP, [with_update(incarnation=None)]),
    (SwimKind.GOSSIP, [with_update(address=None)]), (SwimKind.GOSSIP, [with_update(address=b"tcp://a")]),
    (SwimKind.GOSSIP, [with_update(address="a" * (MAX_ADDRESS_BYTES + 1))]),
    (SwimKind.GOSSIP, [with_update(meta="text")]), (SwimKind.GOSSIP, [with_update(meta=None)]),
    (SwimKind.GOSSIP, [with_update(meta=bytearray(b"x"))]),
    (SwimKind.GOSSIP, [with_update(meta=b"m" * (MAX_META_BYTES + 1))]),
    (SwimKind.GOSSIP, [with_update(source=None)]), (SwimKind.GOSSIP, [with_update(source=b"n1")]),
    (SwimKind.GOSSIP, [with_update(source="s" * (MAX_ID_BYTES + 1))]),
    # the SYNC join flag
    (SwimKind.SYNC, [1, [], []]), (SwimKind.SYNC, [0, [], []]), (SwimKind.SYNC, [None, [], []]),
    (SwimKind.SYNC, ["yes", [], []]), (SwimKind.SYNC, [True, {}, []]), (SwimKind.SYNC, [True, [], None]),
    (SwimKind.SYNC_REPLY, ["x", []]),
]


@pytest.mark.parametrize("kind, body", MALFORMED)
def test_malformed_bodies_raise_protocol_error(kind, body):
    with pytest.raises(ProtocolError):
        from_body(kind, body)


def test_malformed_bad_update_deep_in_a_long_list():
    ups = [list(GOOD_U) for _ in range(100)]
    ups[97][2] = -3
    with pytest.raises(ProtocolError, match="unsigned"):
        from_body(SwimKind.SYNC, [False, ups, []])


# -- hypothesis --------------------------------------------------------------------------------

def fuzz(max_examples: int) -> settings:
    return settings(max_examples=max_examples, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))

LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64 + 5), st.floats(), st.text(max_size=8),
    st.binary(max_size=8), st.sampled_from([0, 1, 3, 4, MAX_U64, MAX_U64 + 1, -1, "", "n", b""]))
OBJECTS = st.recursive(
    LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=6),
                               st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)), children,
                                               max_size=4)),
    max_leaves=16)
UPDATE_LIKE = st.lists(LEAVES, min_size=5, max_size=7)
SHAPED = st.lists(st.one_of(LEAVES, st.lists(st.one_of(UPDATE_LIKE, OBJECTS), max_size=3)),
                  min_size=1, max_size=5)


ALL_KINDS = [int(k) for k in SwimKind] + [0, 31, 39]
HOSTILE = [None, True, False, -1, 0, 4, MAX_U64, MAX_U64 + 1, 1.5, float("nan"), "", "x" * 300, b"",
           b"m" * (MAX_META_BYTES + 1), [], [[]], {}, {"a": 1}, [0, "n", 0, "", b"", ""],
           [0, "n", 0, "", b""], [[0, "n", 0, "", b"", ""]]]


def accepted(kind: int, body: object) -> None:
    """``from_body`` raises ProtocolError or returns a message that re-encodes to ``body``."""
    try:
        msg = from_body(kind, body)
    except ProtocolError:
        return
    assert KIND_OF[type(msg)] == kind
    assert to_body(msg) == body
    assert_valid(msg)


def _u64_ok(v) -> bool:
    return type(v) is int and 0 <= v <= MAX_U64


def _str_ok(v, limit: int) -> bool:
    return type(v) is str and len(v.encode()) <= limit


def assert_valid(msg) -> None:
    """What a core may assume about a message that came out of from_body."""
    for name in ("seq",):
        if hasattr(msg, name):
            assert _u64_ok(getattr(msg, name))
    if hasattr(msg, "target"):
        assert _str_ok(msg.target, MAX_ID_BYTES)
    if hasattr(msg, "address"):
        assert _str_ok(msg.address, MAX_ADDRESS_BYTES)
    if hasattr(msg, "join"):
        assert type(msg.join) is bool
    lists = [msg.updates] + ([msg.members] if hasattr(msg, "members") else [])
    for ups in lists:
        assert type(ups) is tuple and len(ups) <= MAX_UPDATES
        for u in ups:
            assert type(u.state) is State
            assert _str_ok(u.node, MAX_ID_BYTES) and u.node
            assert _u64_ok(u.incarnation)
            assert _str_ok(u.address, MAX_ADDRESS_BYTES) and _str_ok(u.source, MAX_ID_BYTES)
            assert type(u.meta) is bytes and len(u.meta) <= MAX_META_BYTES


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


# Hypothesis is slow to draw examples on a small machine (milliseconds each), while from_body
# takes microseconds: so each drawn example is checked many ways (every kind, every nested part).

@fuzz(200)
@given(body=OBJECTS)
def test_fuzz_arbitrary_objects(body):
    for path in _paths(body):
        part = _at(body, path)
        for kind in ALL_KINDS:
            accepted(kind, part)


@fuzz(200)
@given(body=SHAPED)
def test_fuzz_message_shaped_objects(body):
    for path in _paths(body):
        part = _at(body, path)
        for kind in ALL_KINDS:
            accepted(kind, part)
            accepted(kind, [part])


# valid messages, for the round trip and for mutation

IDS = st.text(min_size=1, max_size=60)                 # at most 240 bytes in UTF-8
U64S = st.integers(0, MAX_U64)
UPDATES = st.builds(Update, st.sampled_from(list(State)), IDS, U64S, st.text(max_size=40),
                    st.binary(max_size=40), st.one_of(st.just(""), IDS))
UPS = st.lists(UPDATES, max_size=5).map(tuple)
VALID = st.one_of(
    st.builds(Ping, U64S, st.text(max_size=60), UPS),
    st.builds(PingReq, U64S, st.text(max_size=60), st.text(max_size=80), UPS),
    st.builds(Ack, U64S, UPS), st.builds(Nack, U64S, UPS), st.builds(Gossip, UPS),
    st.builds(Sync, st.booleans(), UPS, UPS), st.builds(SyncReply, UPS, UPS))


@fuzz(200)
@given(msg=VALID)
def test_round_trip_generated_messages(msg):
    kind = KIND_OF[type(msg)]
    assert through_codec(kind, to_body(msg)) == msg
    assert from_body(kind, to_body(msg)) == msg


@fuzz(150)
@given(msg=VALID, extra=OBJECTS)
def test_fuzz_valid_bodies_with_one_part_replaced(msg, extra):
    """Every part of a valid body (the body itself, each field, each update, each field of
    each update) replaced by each hostile value, under its own kind and under the others."""
    body = to_body(msg)
    kind = KIND_OF[type(msg)]
    for path in _paths(body):
        for value in HOSTILE + [extra]:
            mutant = _replace(body, path, value)
            accepted(kind, mutant)
        for other in ALL_KINDS:
            accepted(other, _replace(body, path, extra))
    for other in ALL_KINDS:
        accepted(other, body)
