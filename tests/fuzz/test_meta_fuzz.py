"""Fuzz the member metadata decoder: NodeMeta.from_bytes, then what the runtime does with it.

Only ProtocolError may come out, and whatever it accepts the router, the scoreboard and the
topic table take without raising: the runtime routes a member's agents on a gossip event, where
an exception would escape the gossip handler.
"""
from __future__ import annotations

from random import Random

from hypothesis import example, given
from hypothesis import strategies as st

from mesh._core import codec
from mesh.node.membership import NodeMeta
from tests.fuzz.budget import fuzz
from tests.fuzz.messages import metas
from tests.fuzz.mutations import mutate_bytes, mutate_object
from tests.fuzz.targets import feed, seeds

SEEDS = seeds("meta")


def _meta(**fields) -> bytes:
    return codec.pack_body({"v": 1, "agents": {}, "topics": [], **fields})


@fuzz(500)
@given(data=st.binary(max_size=100))
@example(data=_meta(agents={"": ["x"]}))            # the router refused the empty name: ValueError escaped
@example(data=_meta(agents={"a": [""]}))            # an empty capability, the same
@example(data=_meta(agents={"a": "risk"}))          # a str taken as the capabilities r, i, s, k
@example(data=_meta(topics={"a.*": 1}))             # a map taken as its keys
@example(data=_meta(capacity={"a": "2.5"}))         # float() took a str
@example(data=_meta(load={"health": True}))         # ... and a bool
def test_random_bytes(data):
    feed("meta", data)


@fuzz(150)
@given(meta=metas, rnd=st.randoms(use_true_random=False))
def test_mutated_encodings(meta, rnd):
    """Valid metadata from the real encoder, broken byte by byte: 100 cases per example."""
    data = meta.to_bytes()
    rng = Random(rnd.random())
    for _ in range(100):
        feed("meta", mutate_bytes(data, rng, SEEDS))


@fuzz(150)
@given(meta=metas, rnd=st.randoms(use_true_random=False))
def test_valid_msgpack_of_the_wrong_shape(meta, rnd):
    """Valid metadata with a part replaced, dropped, doubled, wrapped...: 60 cases per example."""
    obj = codec.load_body(meta.to_bytes())
    rng = Random(rnd.random())
    for _ in range(60):
        feed("meta", codec.pack_body(mutate_object(obj, rng)))


@fuzz(100)
@given(meta=metas)
def test_round_trip(meta):
    assert NodeMeta.from_bytes(meta.to_bytes()) == meta
    assert feed("meta", meta.to_bytes()) == "ok"
