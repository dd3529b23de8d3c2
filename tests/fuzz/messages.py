"""Hypothesis strategies for valid messages of every decoder under fuzz, built from the real types.

The fuzz tests encode these with the real encoders and mutate the result; the round-trip tests
decode them back. Sizes are small on purpose: a case's cost grows with its size, and the
decoders' size checks are reached by the mutations (long runs, extreme lengths) instead.
"""
from __future__ import annotations

import dataclasses

from hypothesis import strategies as st

from mesh._core.wire import Kind
from mesh.kv.machine import CAS, DELETE, EXPIRE, GRANT, KEEPALIVE, PUT, REVOKE, encode_command
from mesh.node.membership import NodeMeta
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, InstallSnapshot, Snapshot,
                                SnapshotMeta, SnapshotResp, TimeoutNow, Vote, VoteResp)
from mesh.raft.wire import encode_conf
from mesh.swim.messages import Ack, Gossip, Nack, Ping, PingReq, State, Sync, SyncReply, Update

U64 = 2**64 - 1
u64s = st.one_of(st.integers(0, 20), st.integers(0, U64))
ids = st.one_of(st.sampled_from(["n1", "n2", "n3", "ключ", "n" * 63]), st.text(min_size=1, max_size=12))
names = st.text(min_size=1, max_size=10)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), U64) | st.floats() | st.text(max_size=12)
           | st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                                            max_size=4),
                      max_leaves=12)

# ------------------------------------------------------------------------------------ envelopes

envelopes = st.fixed_dictionaries({
    "kind": st.one_of(st.sampled_from([int(k) for k in Kind]), st.integers(0, 255)),
    "msg_id": u64s, "corr_id": u64s, "src": st.text(max_size=8), "dst": st.text(max_size=8),
    "subject": st.text(max_size=12), "body": values, "flags": st.integers(0, 0xFFFF),
    "deadline_us": u64s, "trace_id": u64s,
})

# ----------------------------------------------------------------------------- member metadata

metas = st.builds(
    NodeMeta,
    agents=st.dictionaries(names, st.lists(names, max_size=3).map(tuple), max_size=4),
    topics=st.lists(st.sampled_from(["a.*", "signals.#", "x", "a.b.c"]), max_size=3).map(tuple),
    blocking=st.lists(st.sampled_from(["a.*", "q.#"]), max_size=2).map(tuple),
    capacity=st.dictionaries(names, st.floats(0.01, 1e6), max_size=2),
    load=st.dictionaries(st.sampled_from(["handlers", "calls_per_s", "health"]), st.floats(0, 1e6), max_size=3),
)

# -------------------------------------------------------------------------------------- gossip

# drawing a NodeMeta per update would double what a gossip example costs to draw
_META_SAMPLES = [NodeMeta().to_bytes(), NodeMeta(agents={"w": ("work",)}, topics=("a.*",)).to_bytes(),
                 NodeMeta(agents={"a": (), "b": ("x", "y")}, capacity={"a": 2.0}, load={"health": 80.0}).to_bytes()]

_UPDATE_FIELDS = {f.name for f in dataclasses.fields(Update)}
updates = st.builds(
    Update, state=st.sampled_from(list(State)), node=ids, incarnation=u64s,
    address=st.one_of(st.just(""), st.just("tcp://127.0.0.1:7001"), st.text(max_size=20)),
    meta=st.one_of(st.just(b""), st.sampled_from(_META_SAMPLES), st.binary(max_size=20)),
    source=st.one_of(st.just(""), ids),
    # the signature of a member's record, where this build has it
    **({"sig": st.one_of(st.just(b""), st.binary(min_size=64, max_size=64))} if "sig" in _UPDATE_FIELDS else {}),
)
ups = st.lists(updates, max_size=4).map(tuple)
swim_messages = st.one_of(
    st.builds(Ping, u64s, ids, ups, u64s), st.builds(PingReq, u64s, ids, st.text(max_size=30), ups),
    st.builds(Ack, u64s, ups, u64s), st.builds(Nack, u64s, ups), st.builds(Gossip, ups),
    st.builds(Sync, st.booleans(), ups, ups), st.builds(SyncReply, ups, ups))

# ---------------------------------------------------------------------------------------- raft


@st.composite
def confs(draw) -> ConfState:
    voters = draw(st.lists(ids, min_size=1, max_size=4, unique=True))
    learners = draw(st.lists(ids.filter(lambda x: x not in voters), max_size=2, unique=True))
    outgoing = draw(st.lists(ids, max_size=3, unique=True))
    return ConfState(tuple(voters), tuple(learners), tuple(outgoing))


@st.composite
def appends(draw) -> Append:
    term = draw(u64s)
    heartbeat = draw(st.booleans())
    n = 0 if heartbeat else draw(st.integers(0, 4))
    prev_term = draw(st.integers(0, term))
    prev_index = draw(st.one_of(st.integers(0, 50), st.integers(0, U64 - n)))
    terms = sorted(draw(st.lists(st.integers(prev_term, term), min_size=n, max_size=n)))
    entries = []
    for i, t in enumerate(terms):
        kind = draw(st.sampled_from(list(EntryKind)))
        data = encode_conf(draw(confs())) if kind == EntryKind.CONFIG else draw(st.one_of(kv_commands, st.binary(
            max_size=20)))
        entries.append(Entry(prev_index + 1 + i, t, kind, data))
    return Append(draw(ids), draw(ids), term, prev_index, prev_term, tuple(entries), draw(u64s), draw(u64s), heartbeat)


@st.composite
def snapshots(draw) -> InstallSnapshot:
    term = draw(u64s)
    meta = SnapshotMeta(draw(u64s), draw(st.integers(0, term)), draw(confs()))
    return InstallSnapshot(draw(ids), draw(ids), term, Snapshot(meta, draw(st.binary(max_size=30))))


@st.composite
def votes(draw) -> Vote:
    term = draw(u64s)
    return Vote(draw(ids), draw(ids), term, draw(u64s), draw(st.integers(0, term)), draw(st.booleans()),
                draw(st.booleans()))


# ---------------------------------------------------------------------------------- KV commands

keys = st.one_of(st.sampled_from(["a", "b", "c", "k"]), st.text(max_size=6))
clients = st.sampled_from(["", "c1", "c2", "c3"])
seqs = st.integers(0, 5)
kv_commands = st.one_of(
    st.builds(lambda c, s, k, v, lease, ack: encode_command(c, s, PUT, k, v, lease, ack=ack),
              clients, seqs, keys, values, st.integers(0, 3), seqs),
    st.builds(lambda c, s, k: encode_command(c, s, DELETE, k), clients, seqs, keys),
    st.builds(lambda c, s, k, old, new: encode_command(c, s, CAS, k, old, new, 0), clients, seqs, keys, values,
              values),
    st.builds(lambda c, s, ttl, now: encode_command(c, s, GRANT, ttl, now), clients, seqs, st.integers(-1, 10_000),
              st.integers(0, 10**13)),
    st.builds(lambda c, s, lease, now: encode_command(c, s, KEEPALIVE, lease, now), clients, seqs,
              st.integers(0, 3), st.integers(0, 10**13)),
    st.builds(lambda c, s, lease: encode_command(c, s, REVOKE, lease), clients, seqs, st.integers(0, 3)),
    st.builds(lambda due: encode_command("", 0, EXPIRE, due),
              st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**13)).map(list), max_size=3)),
)

raft_messages = st.one_of(
    votes(), st.builds(VoteResp, ids, ids, u64s, st.booleans(), st.booleans()), appends(),
    st.builds(AppendResp, ids, ids, u64s, st.booleans(), u64s, u64s, u64s, st.booleans()), snapshots(),
    st.builds(SnapshotResp, ids, ids, u64s, u64s), st.builds(TimeoutNow, ids, ids, u64s))
