"""Fuzz the envelope codec: decode_frame (and every body in the frame), decode and load_body.

The "codec" target runs both twins on every input and requires the same envelopes and
objects, or DecodeError with the same message; only DecodeError may come out, and a frame that
decodes re-encodes to the same bytes. The "frame" target takes a frame apart as the runtime
does, down to the gossip and Raft decoders.
"""
from __future__ import annotations

import tracemalloc
from random import Random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import mesh._core._pure.codec as pure
from mesh._core import codec
from mesh.errors import DecodeError
from tests.fuzz.budget import fuzz
from tests.fuzz.messages import envelopes
from tests.fuzz.mutations import mutate_bytes
from tests.fuzz.targets import compiled_codec, feed, seeds

SEEDS = seeds("codec")
TWINS = [pytest.param(pure, id="pure"),
         pytest.param(compiled_codec, id="compiled",
                      marks=pytest.mark.skipif(compiled_codec is None, reason="compiled codec not built"))]


def _encode(e: dict) -> bytes:
    return codec.encode(e["kind"], e["msg_id"], e["corr_id"], e["src"], e["dst"], e["subject"], e["body"],
                        flags=e["flags"], deadline_us=e["deadline_us"], trace_id=e["trace_id"])


@fuzz(400)
@given(data=st.binary(max_size=300), rnd=st.randoms(use_true_random=False))
@example(data=b"\x91" * 40 + b"\xc0", rnd=Random(0))                        # deeper than max_depth
def test_random_bytes(data, rnd):
    """The bytes as a frame, as the body of a valid envelope, after a valid envelope, and 20
    variants of each: 63 cases per example."""
    rng = Random(rnd.random())
    header_only = codec.encode_raw(1, 1, 0, "a", "b", "m", b"")
    for blob in [data] + [mutate_bytes(data, rng) for _ in range(20)]:
        feed("codec", blob)
        feed("codec", codec.encode_raw(1, 1, 0, "a", "b", "m", blob))
        feed("codec", header_only + blob)


@fuzz(150)
@given(frame=st.lists(envelopes, min_size=1, max_size=3), rnd=st.randoms(use_true_random=False))
def test_mutated_frames(frame, rnd):
    """Frames of one to three valid envelopes, broken byte by byte: 100 cases per example,
    each also taken apart as the runtime does."""
    data = b"".join(_encode(e) for e in frame)
    rng = Random(rnd.random())
    for _ in range(100):
        mutant = mutate_bytes(data, rng, SEEDS)
        feed("codec", mutant)
        feed("frame", mutant)


@fuzz(150)
@given(frame=st.lists(envelopes, min_size=1, max_size=4))
def test_round_trip(frame):
    data = b"".join(_encode(e) for e in frame)
    decoded = codec.decode_frame(data)
    assert [(e.kind, e.msg_id, e.corr_id, e.src, e.dst, e.subject, e.flags, e.deadline_us, e.trace_id)
            for e in decoded] == [(e["kind"], e["msg_id"], e["corr_id"], e["src"], e["dst"], e["subject"],
                                   e["flags"], e["deadline_us"], e["trace_id"]) for e in frame]
    for env, e in zip(decoded, frame):
        assert codec.pack_body(codec.load_body(env.body)) == codec.pack_body(e["body"])
    assert feed("codec", data) == "ok"


# -- the twins under tight limits (the targets use the defaults) --------------------------------

TOKENS = [b"\x91", b"\x92", b"\x81", b"\x90", b"\x80", b"\xdc\x00\x02", b"\xde\x00\x01", b"\xc0", b"\x01",
          b"\xa1a", b"\xc4\x01x", b"\xd4\x01\x00", b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xcb" + bytes(8)]


def _outcome(mod, data, limits):
    try:
        return "ok", mod.pack_body(mod.load_body(data, mod.Limits(**limits)))
    except DecodeError as exc:
        message = str(exc)
        return "DecodeError", message if not message.startswith("body does not unpack: ") else ""


@pytest.mark.skipif(compiled_codec is None, reason="compiled codec not built")
@fuzz(300)
@given(tokens=st.lists(st.sampled_from(TOKENS), min_size=1, max_size=40),
       limits=st.fixed_dictionaries({}, optional={
           "max_containers": st.integers(1, 6), "max_depth": st.integers(1, 6), "max_array_len": st.integers(1, 3),
           "max_map_len": st.integers(1, 3), "max_str_len": st.integers(1, 2)}))
@example(tokens=[b"\x93", b"\x90", b"\x90", b"\x90"], limits={"max_containers": 3})
def test_twins_agree_under_tight_limits(tokens, limits):
    data = b"".join(tokens)
    assert _outcome(compiled_codec, data, limits) == _outcome(pure, data, limits)


# -- max_containers: what a body may cost once decoded -----------------------------------------

@pytest.mark.parametrize("twin", TWINS)
def test_containers_are_bounded(twin):
    limits = twin.Limits(max_containers=3)
    assert twin.load_body(b"\x93\x90\x80\xc0", limits) == [[], {}, None]
    with pytest.raises(DecodeError, match="more than max_containers 3 arrays and maps .one too many at offset 3"):
        twin.load_body(b"\x93\x90\x80\x90", limits)
    assert twin.DEFAULT_LIMITS.max_containers == 262144
    def arrays(*counts):   # an array of arrays of so many empty arrays: 1 + len(counts) + sum(counts)
        return b"\x92" + b"".join(b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n for n in counts)
    assert len(twin.load_body(arrays(131071, 131070))) == 2          # 262144 arrays: taken
    with pytest.raises(DecodeError, match="max_containers 262144"):
        twin.load_body(arrays(131071, 131071))


@pytest.mark.parametrize("twin, max_containers", [
    pytest.param(pure, 4096, id="pure"),
    pytest.param(compiled_codec, 262144, id="compiled",
                 marks=pytest.mark.skipif(compiled_codec is None, reason="compiled codec not built"))])
def test_a_body_of_empty_arrays_is_refused_before_it_is_built(twin, max_containers):
    """16 MiB of nested empty arrays decoded to 1.1 GiB of lists (and took seconds) before
    max_containers; now the pre-scan refuses it and nothing is built. (The pure twin's pre-scan
    is slow under tracemalloc: it gets a lower limit.)"""
    bomb = b"\xdd\x00\x00\x00\x20" + (b"\xdd\x00\x01\x00\x00" + b"\x90" * 65536) * 32   # 2 MiB
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="max_containers"):
            twin.load_body(bomb, twin.Limits(max_containers=max_containers))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes allocated to refuse a {len(bomb)}-byte body"
