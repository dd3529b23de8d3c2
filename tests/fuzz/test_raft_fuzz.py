"""Fuzz the Raft decoders: bytes -> codec.load_body -> mesh.raft.wire.from_body, and the
CONFIG entry decoder mesh.raft.wire.decode_conf.

Only DecodeError or ProtocolError may come out; an accepted message re-encodes to its body and
survives the round trip. decode_conf reads its bytes token by token: it must accept exactly
what msgpack followed by the configuration checks accepted (the "conf" target compares), and
must not build what a hostile entry describes.
"""
from __future__ import annotations

import tracemalloc
from random import Random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mesh._core import codec
from mesh.errors import ProtocolError
from mesh.raft import wire
from mesh.raft.messages import KIND_OF
from tests.fuzz.budget import fuzz
from tests.fuzz.messages import confs, raft_messages
from tests.fuzz.mutations import mutate_bytes, mutate_object
from tests.fuzz.targets import RAFT_KINDS, feed, seeds

SEEDS = seeds("raft")
CONF_SEEDS = seeds("conf")
KINDS = range(len(RAFT_KINDS))   # first byte of an input: the index of its kind


def _under(kind_index: int, body: bytes) -> bytes:
    return bytes([kind_index]) + body


@fuzz(500)
@given(data=st.binary(max_size=120))
@example(data=b"\x99\xa2n1\xa2n2\x03\x00\x00\x91\x94\x01\x01\x02\xc4\x03\x91\x91\x90\x00\x00\xc2")  # CONFIG entry
def test_random_bytes_under_every_kind(data):
    for kind in KINDS:
        feed("raft", _under(kind, data))


@fuzz(200)
@given(msg=raft_messages, rnd=st.randoms(use_true_random=False))
def test_mutated_encodings(msg, rnd):
    """Valid bodies from the real encoder, broken byte by byte: 100 cases per example."""
    kind = RAFT_KINDS.index(KIND_OF[type(msg)])
    body = codec.pack_body(wire.to_body(msg))
    rng = Random(rnd.random())
    for _ in range(100):
        mutant = mutate_bytes(body, rng, SEEDS)
        feed("raft", _under(kind if rng.random() < 0.8 else rng.choice(KINDS), mutant))


@fuzz(150)
@given(msg=raft_messages, rnd=st.randoms(use_true_random=False))
def test_valid_msgpack_of_the_wrong_shape(msg, rnd):
    """Valid bodies with a part replaced, dropped, doubled, wrapped... then packed: 60 cases."""
    kind = RAFT_KINDS.index(KIND_OF[type(msg)])
    body = wire.to_body(msg)
    rng = Random(rnd.random())
    for _ in range(60):
        mutant = mutate_object(body, rng, CONF_SEEDS)
        feed("raft", _under(kind if rng.random() < 0.8 else rng.choice(KINDS), codec.pack_body(mutant)))


@fuzz(100)
@given(msg=raft_messages)
def test_round_trip(msg):
    kind = KIND_OF[type(msg)]
    assert wire.from_body(kind, codec.load_body(codec.pack_body(wire.to_body(msg)))) == msg
    assert feed("raft", _under(RAFT_KINDS.index(kind), codec.pack_body(wire.to_body(msg)))) == "ok"


# -- CONFIG entries ------------------------------------------------------------------------------

@fuzz(300)
@given(data=st.binary(max_size=60))
@example(data=b"\x93\x91\xa0\x90\x90")             # an empty id
@example(data=b"\x93\x91\xa2n1\x90\x90\xc0")       # a byte after the configuration
@example(data=b"\x93\xdc\x00\x01\xd9\x02n1\x90\x90")   # wider headers than needed: still msgpack
def test_conf_random_bytes(data):
    feed("conf", data)


@fuzz(150)
@given(conf=confs(), rnd=st.randoms(use_true_random=False))
def test_conf_mutated_and_reshaped(conf, rnd):
    """A configuration's encoding broken byte by byte (100 cases) and reshaped (40 cases)."""
    data = wire.encode_conf(conf)
    assert wire.decode_conf(data) == conf
    rng = Random(rnd.random())
    for _ in range(100):
        feed("conf", mutate_bytes(data, rng, CONF_SEEDS))
    lists = [list(conf.voters), list(conf.learners), list(conf.voters_outgoing)]
    for _ in range(40):
        feed("conf", codec.pack_body(mutate_object(lists, rng)))


@pytest.mark.parametrize("bomb", [
    b"\x93\xdd\x00\x10\x00\x00" + b"\x90" * (1 << 20),           # a voter list of a million empty arrays
    b"\x93" + b"\x91" * (1 << 20) + b"\xc0",                     # nesting a million deep
    b"\x93\x91\xdb\x00\x10\x00\x00" + b"x" * (1 << 20),          # a megabyte id
], ids=["wide", "deep", "long-id"])
def test_a_hostile_config_entry_is_refused_without_being_built(bomb):
    """msgpack built these before they were refused: a gigabyte of lists for 16 MiB of data."""
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            wire.decode_conf(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"decode_conf allocated {peak} bytes for a {len(bomb)}-byte entry"
