"""Fuzz the gossip decoder: bytes -> codec.load_body -> mesh.swim.wire.from_body.

Only DecodeError or ProtocolError may come out, whatever the bytes and whatever the kind they
arrive under; an accepted message re-encodes to its body and survives the round trip.
"""
from __future__ import annotations

from random import Random

from hypothesis import example, given
from hypothesis import strategies as st

from mesh._core import codec
from mesh.swim import wire
from mesh.swim.messages import KIND_OF
from tests.fuzz.budget import fuzz
from tests.fuzz.messages import swim_messages
from tests.fuzz.mutations import mutate_bytes, mutate_object
from tests.fuzz.targets import GOSSIP_KINDS, feed, seeds

SEEDS = seeds("gossip")
KINDS = range(len(GOSSIP_KINDS))   # first byte of an input: the index of its kind


def _under(kind_index: int, body: bytes) -> bytes:
    return bytes([kind_index]) + body


@fuzz(500)
@given(data=st.binary(max_size=120))
@example(data=b"\x91\x90")                          # GOSSIP with an empty update list
@example(data=b"\xdd\xff\xff\xff\xff")              # an array of 2**32-1 items, declared
def test_random_bytes_under_every_kind(data):
    for kind in KINDS:
        feed("gossip", _under(kind, data))


@fuzz(200)
@given(msg=swim_messages, rnd=st.randoms(use_true_random=False))
def test_mutated_encodings(msg, rnd):
    """Valid bodies from the real encoder, broken byte by byte: 100 cases per example."""
    kind = GOSSIP_KINDS.index(KIND_OF[type(msg)])
    body = codec.pack_body(wire.to_body(msg))
    rng = Random(rnd.random())
    for _ in range(100):
        mutant = mutate_bytes(body, rng, SEEDS)
        feed("gossip", _under(kind if rng.random() < 0.8 else rng.choice(KINDS), mutant))


@fuzz(150)
@given(msg=swim_messages, rnd=st.randoms(use_true_random=False))
def test_valid_msgpack_of_the_wrong_shape(msg, rnd):
    """Valid bodies with a part replaced, dropped, doubled, wrapped... then packed: 60 cases."""
    kind = GOSSIP_KINDS.index(KIND_OF[type(msg)])
    body = wire.to_body(msg)
    rng = Random(rnd.random())
    for _ in range(60):
        mutant = mutate_object(body, rng)
        feed("gossip", _under(kind if rng.random() < 0.8 else rng.choice(KINDS), codec.pack_body(mutant)))


@fuzz(100)
@given(msg=swim_messages)
def test_round_trip(msg):
    kind = KIND_OF[type(msg)]
    assert wire.from_body(kind, codec.load_body(codec.pack_body(wire.to_body(msg)))) == msg
    assert feed("gossip", _under(GOSSIP_KINDS.index(kind), codec.pack_body(wire.to_body(msg)))) == "ok"
