"""The envelope codec: both twins, byte for byte, on valid and hostile input.

Every test that takes ``codec`` runs against the compiled module and the pure twin; the
``test_parity_*`` and ``test_fuzz_*`` tests feed both the same input in one process and require
the same bytes, the same objects, or the same exception type and message.
"""
from __future__ import annotations

import array
import struct
import threading

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import mesh._core._pure.codec as pure
from mesh._core import compiled_twin
from mesh._core.wire import HEADER_SIZE, VERSION, Kind
from mesh.errors import DecodeError, EncodeError

try:
    compiled = compiled_twin("codec")
except ImportError:  # not built: the pure twin is still tested, parity is skipped
    compiled = None

needs_compiled = pytest.mark.skipif(compiled is None, reason="compiled codec not built")
TWINS = [pytest.param(compiled, id="compiled", marks=needs_compiled),
         pytest.param(pure, id="pure")]
FUZZ = settings(max_examples=1000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PARITY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

U64 = 2**64 - 1


def frame(codec=pure, body=None, *, src="a", dst="b", subject="m", kind=Kind.REQUEST,
          msg_id=7, corr_id=0, **kw):
    return codec.encode(kind, msg_id, corr_id, src, dst, subject, body, **kw)


def header(*, version=VERSION, kind=1, flags=0, body_len=0, msg_id=0, corr_id=0,
           deadline_us=0, trace_id=0, src_len=0, dst_len=0, subject_len=0):
    return struct.pack("<BBHIQQQQBBH", version, kind, flags, body_len, msg_id, corr_id,
                       deadline_us, trace_id, src_len, dst_len, subject_len)


def canon(value):
    """A comparable form of a decoded result: nan-safe, tuple/list-blind."""
    if isinstance(value, list) and value and hasattr(value[0], "as_tuple"):
        return [e.as_tuple() for e in value]
    if isinstance(value, tuple) and len(value) == 2 and hasattr(value[0], "as_tuple"):
        return value[0].as_tuple(), msgpack.packb(value[1], use_bin_type=True)
    if isinstance(value, bytes):
        return value
    return msgpack.packb(value, use_bin_type=True)


def outcome(fn, *args, **kwargs):
    """("ok", result) or (error class, message); any other exception fails the test.

    Errors raised inside msgpack keep msgpack's text, which differs between its C and Python
    code (even in which of two faults it reports first), so only the part of the message the
    codec writes is compared.
    """
    try:
        return "ok", canon(fn(*args, **kwargs))
    except (DecodeError, EncodeError) as exc:
        message = str(exc)
        for prefix in ("body does not unpack: ", "body cannot be packed: "):
            if message.startswith(prefix):
                message = prefix
        return type(exc).__name__, message


def twins_agree(name, *args, **kwargs):
    """Run ``name`` on both twins; return the common outcome."""
    got = outcome(getattr(pure, name), *args, **kwargs)
    if compiled is not None:
        assert outcome(getattr(compiled, name), *args, **kwargs) == got
    return got


def twins_agree_limited(name, data, **limits):
    """As twins_agree, with each twin given its own Limits(**limits)."""
    got = outcome(getattr(pure, name), data, pure.Limits(**limits))
    if compiled is not None:
        assert outcome(getattr(compiled, name), data, compiled.Limits(**limits)) == got
    return got


def decoders_agree(data):
    """decode_frame, decode and load_body of ``data``: the twins agree, only DecodeError."""
    results = [twins_agree(name, data) for name in ("decode_frame", "decode", "load_body")]
    for result in results:
        assert result[0] in ("ok", "DecodeError")
    return results


# ------------------------------------------------------------------------------ strategies

names = st.text(max_size=40).filter(lambda s: len(s.encode("utf-8")) <= 255)
subjects = st.text(max_size=80)
u64s = st.integers(0, U64)
scalars = (st.none() | st.booleans() | st.integers(-(2**63), U64)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
           | st.binary(max_size=20))
bodies = st.recursive(
    scalars,
    lambda inner: (st.lists(inner, max_size=5) | st.tuples(inner, inner)
                   | st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=25,
)
envelopes = st.fixed_dictionaries({
    "kind": st.integers(0, 255), "msg_id": u64s, "corr_id": u64s, "src": names, "dst": names,
    "subject": subjects, "body": bodies, "flags": st.integers(0, 0xFFFF),
    "deadline_us": u64s, "trace_id": u64s,
})
anything = (st.integers(-(2**70), 2**70) | st.none() | st.floats() | st.text(max_size=300)
            | st.binary(max_size=4) | st.booleans())


def encode_args(e):
    return (e["kind"], e["msg_id"], e["corr_id"], e["src"], e["dst"], e["subject"], e["body"])


def encode_kwargs(e):
    return {"flags": e["flags"], "deadline_us": e["deadline_us"], "trace_id": e["trace_id"]}


# ----------------------------------------------------------------------------------- parity


@needs_compiled
def test_parity_public_surface():
    assert compiled.PUBLIC_API == pure.PUBLIC_API
    for name in pure.PUBLIC_API:
        assert hasattr(compiled, name) and hasattr(pure, name), name
    assert compiled.__doc__ == pure.__doc__
    assert (compiled.VERSION, compiled.HEADER_SIZE) == (pure.VERSION, pure.HEADER_SIZE)
    assert (pure.VERSION, pure.HEADER_SIZE) == (VERSION, HEADER_SIZE)
    for name in ("Limits", "Envelope", "pack_body", "load_body", "encode", "encode_raw",
                 "decode_frame", "decode"):
        assert getattr(compiled, name).__doc__ == getattr(pure, name).__doc__, name
    assert repr(compiled.DEFAULT_LIMITS) == repr(pure.DEFAULT_LIMITS)


@needs_compiled
@PARITY
@given(envelopes)
def test_parity_encode_decode(e):
    wire = pure.encode(*encode_args(e), **encode_kwargs(e))
    assert compiled.encode(*encode_args(e), **encode_kwargs(e)) == wire
    packed = pure.pack_body(e["body"])
    assert compiled.pack_body(e["body"]) == packed
    assert compiled.encode_raw(*encode_args(e)[:6], packed, **encode_kwargs(e)) == wire
    expected = (VERSION, e["kind"], e["flags"], e["msg_id"], e["corr_id"], e["deadline_us"],
                e["trace_id"], e["src"], e["dst"], e["subject"], packed)
    for codec in (compiled, pure):
        (env,) = codec.decode_frame(wire)
        assert env.as_tuple() == expected
        assert repr(env) == repr(pure.decode_frame(wire)[0])
        env, body = codec.decode(wire)
        assert env.as_tuple() == expected
        assert msgpack.packb(body, use_bin_type=True) == packed  # nan-safe, tuples as lists
        assert msgpack.packb(codec.load_body(packed), use_bin_type=True) == packed


@needs_compiled
@PARITY
@given(anything, anything, anything, anything | names, anything | names, anything | names,
       anything, anything)
def test_parity_encode_errors(kind, msg_id, corr_id, src, dst, subject, flags, trace_id):
    got = twins_agree("encode", kind, msg_id, corr_id, src, dst, subject, [1],
                      flags=flags, trace_id=trace_id)
    assert got[0] in ("ok", "EncodeError")


@needs_compiled
@PARITY
@given(st.recursive(scalars | st.sampled_from([object(), {1, 2}, 2**64, -(2**63) - 1, 1j]),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=4), inner, max_size=4), max_leaves=12))
def test_parity_pack_body(obj):
    assert twins_agree("pack_body", obj)[0] in ("ok", "EncodeError")


# ------------------------------------------------------------------------------------- fuzz


@FUZZ
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x91" * 100 + b"\xc0")
@example(b"\xc1")
@example(b"\xdd\xff\xff\xff\xff")
@example(b"\xdf\xff\xff\xff\xff")
@example(b"\xdb\xff\xff\xff\xff")
@example(b"\xc6\xff\xff\xff\xff")
@example(b"\xd4\x01\x00")
@example(b"\x81\x01\x02")  # int map key: refused by strict_map_key
@example(b"\xa2\xff\xfe")  # invalid UTF-8 str
def test_fuzz_random_bytes(data):
    decoders_agree(data)


@FUZZ
@given(st.lists(st.sampled_from([
    b"\x91", b"\x92", b"\x81", b"\xdc\x00\x02", b"\xde\x00\x01", b"\xdd\x00\x00\x00\x01",
    b"\xc0", b"\x01", b"\xa1a", b"\xd9\x01a", b"\xc4\x01x", b"\xcb" + bytes(8), b"\xca",
    b"\xc7\x01\x01x", b"\xd5\x00\x00\x00", b"\xc1", b"\xa0", b"\x90", b"\x80", b"\xff",
    b"\xdb\x00\x10\x00\x00", b"\xc6\x7f\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
]), min_size=1, max_size=60), st.fixed_dictionaries({}, optional={
    "max_depth": st.integers(1, 40), "max_str_len": st.integers(1, 4),
    "max_bin_len": st.integers(1, 4), "max_array_len": st.integers(1, 4),
    "max_map_len": st.integers(1, 4), "max_body_bytes": st.integers(1, 200),
}))
def test_fuzz_token_streams(tokens, limits):
    """Streams of plausible tokens reach far deeper into the pre-scan than random bytes."""
    got = twins_agree_limited("load_body", b"".join(tokens), **limits)
    assert got[0] in ("ok", "DecodeError")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.integers(1, 3))
def test_fuzz_truncations(e, copies):
    one = frame(pure, e["body"], src=e["src"], dst=e["dst"], subject=e["subject"])
    wire = one * copies
    for cut in range(len(wire) + 1):
        got = twins_agree("decode_frame", wire[:cut])
        assert got[0] == ("ok" if cut and cut % len(one) == 0 else "DecodeError"), cut
        got = twins_agree("decode", wire[:cut])
        assert got[0] == ("ok" if cut == len(one) else "DecodeError"), cut
    body = one[len(one) - len(pure.pack_body(e["body"])):]
    for cut in range(len(body)):
        assert twins_agree("load_body", body[:cut])[0] == "DecodeError"


@settings(FUZZ, max_examples=400)
@given(envelopes, st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 7)),
                           min_size=1, max_size=3))
def test_fuzz_bit_flips(e, flips):
    wire = bytearray(pure.encode(*encode_args(e), **encode_kwargs(e)))
    for index, bit in flips:
        wire[index % len(wire)] ^= 1 << bit
    decoders_agree(bytes(wire))
    body_start = HEADER_SIZE + sum(len(e[k].encode()) for k in ("src", "dst", "subject"))
    twins_agree("load_body", bytes(wire[body_start:]))


@FUZZ
@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 0xFFFF), st.integers(0, 3), st.binary(max_size=64))
def test_fuzz_declared_lengths(body_len, src_len, dst_len, subject_len, version, tail):
    data = header(version=version, body_len=body_len, src_len=src_len, dst_len=dst_len,
                  subject_len=subject_len) + tail
    assert all(r[0] == "DecodeError" for r in decoders_agree(data)[:2]) or (
        version == VERSION and src_len + dst_len + subject_len + body_len == len(tail))


# ------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize("name", ["", "a", "risk-1", "é", "日本語", "🦊" * 63, "x" * 255,
                                  "\x00nul", "tab\tnew\nline"])
def test_names_round_trip(codec, name):
    wire = codec.encode(Kind.PUBLISH, 1, 2, name, name, name, None)
    env, body = codec.decode(wire)
    assert (env.src, env.dst, env.subject, body) == (name, name, name, None)


@pytest.mark.parametrize("codec", TWINS)
def test_golden_bytes(codec):
    wire = codec.encode(Kind.REPLY, 0x0102030405060708, 9, "src", "dst", "subj",
                        {"ok": True}, flags=1, deadline_us=2**64 - 1, trace_id=3)
    body = b"\x81\xa2ok\xc3"
    assert wire == (struct.pack("<BBHIQQQQBBH", 1, 2, 1, len(body), 0x0102030405060708, 9,
                                2**64 - 1, 3, 3, 3, 4) + b"srcdstsubj" + body)
    env, obj = codec.decode(wire)
    assert env.as_tuple() == (1, 2, 1, 0x0102030405060708, 9, 2**64 - 1, 3, "src", "dst",
                              "subj", body)
    assert obj == {"ok": True}
    assert repr(env) == ("Envelope(version=1, kind=2, flags=1, msg_id=72623859790382856, "
                         "corr_id=9, deadline_us=18446744073709551615, trace_id=3, "
                         "src='src', dst='dst', subject='subj', body=<5 bytes>)")


@pytest.mark.parametrize("codec", TWINS)
def test_body_types(codec):
    body = {"n": None, "t": True, "f": False, "i": [0, -1, -33, 127, 128, 2**63, -(2**63)],
            "x": 1.5, "nan": float("inf"), "s": "ünï", "b": b"\x00\xff", "tuple": (1, 2),
            "nested": {"k": [[], {}]}}
    env, out = codec.decode(frame(codec, body))
    assert out == {**body, "tuple": [1, 2]}
    assert type(out["b"]) is bytes
    assert codec.pack_body(1.0) == b"\xcb" + struct.pack(">d", 1.0)  # float64, never float32


@pytest.mark.parametrize("codec", TWINS)
def test_encode_raw_sends_a_packed_body_as_is(codec):
    packed = codec.pack_body({"px": 187.25})
    want = frame(codec, {"px": 187.25})
    for raw in (packed, bytearray(packed), memoryview(packed), zmq.Frame(packed)):
        assert codec.encode_raw(Kind.REQUEST, 7, 0, "a", "b", "m", raw) == want


@pytest.mark.parametrize("codec", TWINS)
def test_multi_envelope_frame(codec):
    wire = b"".join(frame(codec, i, msg_id=i, src=f"s{i}") for i in range(5))
    envs = codec.decode_frame(wire)
    assert [(e.msg_id, e.src, codec.load_body(e.body)) for e in envs] == [
        (i, f"s{i}", i) for i in range(5)]
    with pytest.raises(DecodeError, match="more than one envelope"):
        codec.decode(wire)
    with pytest.raises(DecodeError, match="more than max_envelopes 4"):
        codec.decode_frame(wire, codec.Limits(max_envelopes=4))
    assert len(codec.decode_frame(wire, codec.Limits(max_envelopes=5))) == 5


# ---------------------------------------------------------------------------- buffers, copies


@pytest.mark.parametrize("codec", TWINS)
def test_bodies_are_zero_copy_views(codec):
    wire = frame(codec, [1, 2, 3]) + frame(codec, "x")
    (first, second) = codec.decode_frame(wire)
    assert isinstance(first.body, memoryview) and first.body.obj is wire
    assert second.body.obj is wire and bytes(second.body) == b"\xa1x"

    mutable = bytearray(wire)
    first = codec.decode_frame(mutable)[0]
    assert first.body.obj is mutable
    mutable[HEADER_SIZE + 3] = 0x90  # the view sees the buffer, so it was not copied
    assert bytes(first.body) == b"\x90\x01\x02\x03"

    view = memoryview(wire)
    assert codec.decode_frame(view)[0].body.obj is wire
    assert codec.decode(view[: len(frame(codec, [1, 2, 3]))])[1] == [1, 2, 3]


@pytest.mark.parametrize("codec", TWINS)
def test_zmq_frame_input(codec):
    zframe = zmq.Frame(frame(codec, {"k": "v"}, subject="topic.x"))
    (env,) = codec.decode_frame(zframe)
    assert env.subject == "topic.x" and env.body.obj is zframe
    assert codec.load_body(env.body) == {"k": "v"}
    assert codec.decode(zframe)[1] == {"k": "v"}


@pytest.mark.parametrize("codec", TWINS)
def test_other_buffer_shapes(codec):
    wire = frame(codec, "hi")
    assert len(wire) % 2 == 0
    words = array.array("H", wire)  # itemsize 2: read as its bytes
    assert codec.decode_frame(words)[0].as_tuple() == codec.decode_frame(wire)[0].as_tuple()
    assert codec.decode(words)[1] == "hi"
    assert codec.load_body(array.array("b", b"\xa2hi")) == "hi"
    with pytest.raises(DecodeError, match="not C-contiguous"):
        codec.decode_frame(memoryview(wire + wire)[::2])
    with pytest.raises(DecodeError, match="not C-contiguous"):
        codec.load_body(memoryview(b"\x92\x00\x01\x02")[::2])


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize("fn", ["decode_frame", "decode", "load_body"])
@pytest.mark.parametrize("bad", [None, 42, 1.5, "text", ["list"], object()])
def test_non_buffers_raise_decode_error(codec, fn, bad):
    with pytest.raises(DecodeError, match="expected a bytes-like object"):
        getattr(codec, fn)(bad)


@pytest.mark.parametrize("codec", TWINS)
def test_released_memoryview_raises_decode_error(codec):
    view = memoryview(frame(codec, 1))
    view.release()
    for fn in (codec.decode_frame, codec.decode, codec.load_body):
        with pytest.raises(DecodeError):
            fn(view)


@pytest.mark.parametrize("codec", TWINS)
def test_limits_argument_must_be_limits(codec):
    for fn in (codec.decode_frame, codec.decode, codec.load_body):
        with pytest.raises(TypeError):
            fn(b"\xc0", {"max_depth": 3})


# ----------------------------------------------------------------------------------- limits


@pytest.mark.parametrize("codec", TWINS)
def test_limits_defaults_and_repr(codec):
    limits = codec.Limits()
    assert (limits.max_frame_bytes, limits.max_body_bytes, limits.max_depth,
            limits.max_str_len, limits.max_bin_len, limits.max_array_len, limits.max_map_len,
            limits.max_envelopes, limits.max_name_len, limits.max_subject_len) == (
        16 << 20, 16 << 20, 32, 1 << 20, 16 << 20, 131072, 131072, 4096, 255, 1024)
    assert repr(codec.Limits(max_depth=3)).startswith(
        "Limits(max_frame_bytes=16777216, max_body_bytes=16777216, max_depth=3, ")
    assert codec.DEFAULT_LIMITS.max_depth == 32
    with pytest.raises(AttributeError):
        limits.max_depth = 3
    with pytest.raises(TypeError):
        codec.Limits(1024)  # keyword-only


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize("kwargs", [
    {"max_depth": 0}, {"max_depth": -1}, {"max_depth": 513}, {"max_name_len": 256},
    {"max_subject_len": 65536}, {"max_frame_bytes": 2**31}, {"max_str_len": 1.5},
    {"max_bin_len": "10"}, {"max_map_len": True}, {"max_array_len": None},
    {"max_envelopes": 0},
])
def test_limits_validation(codec, kwargs):
    with pytest.raises(ValueError):
        codec.Limits(**kwargs)


@pytest.mark.parametrize("codec", TWINS)
def test_limits_upper_bounds_accepted(codec):
    limits = codec.Limits(max_depth=512, max_name_len=255, max_subject_len=65535,
                          max_frame_bytes=2**31 - 1)
    assert codec.load_body(b"\x91" * 512 + b"\xc0", limits) is not None
    with pytest.raises(DecodeError, match="max_depth 512"):
        codec.load_body(b"\x91" * 513 + b"\xc0", limits)


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize(("limit", "ok", "bad", "message"), [
    ("max_depth", b"\x91\x91\xc0", b"\x91\x91\x91\xc0", "nests deeper than max_depth 2"),
    ("max_depth", b"\x81\xa1k\x90", b"\x81\xa1k\x91\x90", "nests deeper than max_depth 2"),
    ("max_str_len", b"\xa2ab", b"\xa3abc", "str of 3 bytes at offset 0 exceeds max_str_len 2"),
    ("max_bin_len", b"\xc4\x02ab", b"\xc4\x03abc", "bin of 3 bytes"),
    ("max_array_len", b"\x92\x01\x02", b"\x93\x01\x02\x03", "array of 3 items"),
    ("max_map_len", b"\x82\xa1a\x01\xa1b\x02", b"\x83\xa1a\x01\xa1b\x02\xa1c\x03",
     "map of 3 pairs"),
    ("max_body_bytes", b"\xa1a", b"\xa2ab", "body of 3 bytes exceeds max_body_bytes 2"),
])
def test_body_limits(codec, limit, ok, bad, message):
    limits = codec.Limits(**{limit: 2})
    assert codec.load_body(ok, limits) is not None
    with pytest.raises(DecodeError, match=message):
        codec.load_body(bad, limits)
    wire = codec.encode_raw(1, 1, 0, "a", "b", "m", bad)
    with pytest.raises(DecodeError):
        codec.decode(wire, limits)


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize(("body", "message"), [
    (b"", "body is empty"),
    (b"\xc1", "reserved byte 0xc1 at offset 0"),
    (b"\x91\xc1", "reserved byte 0xc1 at offset 1"),
    (b"\xc0\xc0", "1 trailing bytes"),
    (b"\x92\x01", "length 2 declared at offset 0 runs past its end"),
    (b"\x92\x01\x02\x03", "1 trailing bytes"),
    (b"\xcd\x01", "truncated at offset 0"),
    (b"\x92\x01\xa1", "length 1 declared at offset 2 runs past its end"),
    (b"\x92\x01\xcd\x00", "truncated at offset 2"),
    (b"\x92\xa1a", "truncated at offset 3"),
    (b"\xa5abc", "length 5 declared at offset 0 runs past"),
    (b"\xda\x00", "truncated at offset 0"),
    (b"\xdb\x00\x00\x00\xff" + b"x" * 16, "length 255 declared"),
    (b"\xdd\x00\x01\xff\xff" + b"\x00" * 16, "length 131071 declared at offset 0 runs past"),
    (b"\xdd\xff\xff\xff\xff", "array of 4294967295 items at offset 0 exceeds"),
    (b"\xdf\xff\xff\xff\xff", "map of 4294967295 pairs"),
    (b"\xdb\xff\xff\xff\xff", "str of 4294967295 bytes"),
    (b"\xc6\xff\xff\xff\xff", "bin of 4294967295 bytes"),
    (b"\x91" * 100 + b"\xc0", "nests deeper than max_depth 32 at offset 32"),
    (b"\x81" * 40 + b"\xc0", "nests deeper than max_depth 32"),
    (b"\xd4\x01\x00", "ext type 0xd4 at offset 0"),
    (b"\xd5\x01\x00\x00", "ext type 0xd5"),
    (b"\xd6\x01" + bytes(4), "ext type 0xd6"),
    (b"\xd7\x01" + bytes(8), "ext type 0xd7"),
    (b"\xd8\x01" + bytes(16), "ext type 0xd8"),
    (b"\xc7\x01\x01\x00", "ext type 0xc7"),
    (b"\xc8\x00\x01\x01\x00", "ext type 0xc8"),
    (b"\xc9\x00\x00\x00\x01\x01\x00", "ext type 0xc9"),
    (b"\x91\xd6\xff" + bytes(4), "ext type 0xd6 at offset 1"),  # a msgpack Timestamp
    (b"\x81\x01\x02", "body does not unpack: ValueError"),  # strict_map_key
    (b"\x81\x90\x02", "body does not unpack: ValueError"),
    (b"\xa2\xff\xfe", "body does not unpack: UnicodeDecodeError"),
])
def test_malformed_bodies(codec, body, message):
    with pytest.raises(DecodeError, match=message.replace("(", r"\(")) as info:
        codec.load_body(body)
    assert type(info.value) is DecodeError
    if "does not unpack" in message:
        assert info.value.__cause__ is not None


@pytest.mark.parametrize("codec", TWINS)
def test_large_body_prescanned_without_the_gil(codec):
    blob = b"\x00" * (2 << 20)
    assert codec.load_body(codec.pack_body([blob, "x"])) == [blob, "x"]
    with pytest.raises(DecodeError, match="trailing"):
        codec.load_body(codec.pack_body(blob) + b"\xc0")


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize(("data", "limits", "message"), [
    (b"", {}, "frame is empty"),
    (header()[:43], {}, "truncated header at offset 0: 43 of 44 bytes"),
    (header(version=2), {}, "unsupported envelope version 2 at offset 0"),
    (header(version=0), {}, "unsupported envelope version 0"),
    (header(src_len=9) + b"x" * 9, {"max_name_len": 8}, "src name of 9 bytes exceeds"),
    (header(dst_len=9) + b"x" * 9, {"max_name_len": 8}, "dst name of 9 bytes exceeds"),
    (header(subject_len=1025) + b"x" * 1025, {}, "subject of 1025 bytes exceeds"),
    (header(body_len=9) + b"x" * 9, {"max_body_bytes": 8}, "body of 9 bytes exceeds"),
    (header(body_len=2**32 - 1), {}, "body of 4294967295 bytes exceeds max_body_bytes"),
    (header(src_len=255, dst_len=255, subject_len=1024), {}, "needs 1578 bytes, 44 remain"),
    (header(body_len=2) + b"\xc0", {}, "needs 46 bytes, 45 remain"),
    (header(src_len=2) + b"\xff\xfe", {}, "src is not valid UTF-8"),
    (header(dst_len=1) + b"\x80", {}, "dst is not valid UTF-8"),
    (header(subject_len=3) + b"\xed\xa0\x80", {}, "subject is not valid UTF-8"),  # surrogate
    (header(body_len=1) + b"\xc0" + b"\x01", {}, "truncated header at offset 45: 1 of 44"),
    (header(body_len=1) + b"\xc0", {"max_frame_bytes": 44}, "frame of 45 bytes exceeds"),
])
def test_malformed_frames(codec, data, limits, message):
    with pytest.raises(DecodeError, match=message):
        codec.decode_frame(data, codec.Limits(**limits))
    with pytest.raises(DecodeError):
        codec.decode(data, codec.Limits(**limits))


# ----------------------------------------------------------------------------------- encode


@pytest.mark.parametrize("codec", TWINS)
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": -1}, "kind out of range 0..255: -1"),
    ({"kind": 256}, "kind out of range"),
    ({"kind": 1.0}, "kind must be an int, not float"),
    ({"kind": "1"}, "kind must be an int, not str"),
    ({"msg_id": 2**64}, "msg_id out of range 0..18446744073709551615"),
    ({"msg_id": -1}, "msg_id out of range"),
    ({"corr_id": None}, "corr_id must be an int, not NoneType"),
    ({"flags": 0x10000}, "flags out of range 0..65535"),
    ({"deadline_us": -5}, "deadline_us out of range"),
    ({"trace_id": 2**100}, "trace_id out of range"),
    ({"src": "x" * 256}, "src is 256 UTF-8 bytes, more than 255"),
    ({"dst": "é" * 128}, "dst is 256 UTF-8 bytes"),
    ({"dst": b"bytes"}, "dst must be a str, not bytes"),
    ({"src": None}, "src must be a str, not NoneType"),
    ({"subject": "s" * 65536}, "subject is 65536 UTF-8 bytes, more than 65535"),
    ({"subject": "\ud800"}, "subject is not encodable as UTF-8"),
    ({"body": object()}, "body cannot be packed"),
    ({"body": {1, 2}}, "body cannot be packed"),
    ({"body": 2**64}, "body cannot be packed"),
    ({"body": -(2**63) - 1}, "body cannot be packed"),
    ({"body": "\udc80"}, "body cannot be packed"),
])
def test_encode_errors(codec, kwargs, message):
    args = {"kind": 1, "msg_id": 1, "corr_id": 0, "src": "a", "dst": "b", "subject": "m",
            "body": None, **kwargs}
    with pytest.raises(EncodeError, match=message):
        codec.encode(**args)
    if "body" not in kwargs:
        raw_args = {name: value for name, value in args.items() if name != "body"}
        with pytest.raises(EncodeError, match=message):
            codec.encode_raw(**raw_args, body_raw=b"\xc0")


@pytest.mark.parametrize("codec", TWINS)
def test_encode_accepts_index_types_and_limits(codec):
    class Index:
        def __index__(self):
            return 5

    wire = codec.encode(Kind.SEND, Index(), True, "a" * 255, "", "s" * 65535, None,
                        flags=0xFFFF, deadline_us=U64, trace_id=U64)
    env = codec.decode_frame(wire, codec.Limits(max_subject_len=65535))[0]
    assert (env.kind, env.msg_id, env.corr_id, env.flags, env.deadline_us) == (
        Kind.SEND, 5, 1, 0xFFFF, U64)


@pytest.mark.parametrize("codec", TWINS)
def test_encode_raw_rejects_non_buffers(codec):
    for bad in (None, "text", 3, memoryview(b"abcd")[::2]):
        with pytest.raises(EncodeError, match="body_raw must be a contiguous bytes-like"):
            codec.encode_raw(1, 1, 0, "a", "b", "m", bad)


@pytest.mark.parametrize("codec", TWINS)
def test_pack_body_too_deep(codec):
    deep = None
    for _ in range(1100):  # past msgpack's own nest limit (1024) and Python's recursion
        deep = [deep]
    with pytest.raises(EncodeError):
        codec.pack_body(deep)
    assert codec.pack_body([1, 2]) == b"\x92\x01\x02"  # the failed packer was reset


@pytest.mark.parametrize("codec", TWINS)
def test_pack_body_reentrant_and_threaded(codec):
    class Sneaky(dict):  # packing it packs something else in the middle
        def items(self):
            codec.pack_body(["inner"] * 3)
            return super().items()

    assert codec.pack_body([Sneaky(a=1), 2]) == msgpack.packb([{"a": 1}, 2])
    payload = {"k": list(range(50)), "s": "x" * 100}
    want = msgpack.packb(payload)
    results = []

    def work():
        results.extend(codec.pack_body(payload) == want for _ in range(300))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1200 and all(results)


# --------------------------------------------------------------------------------- envelope


@pytest.mark.parametrize("codec", TWINS)
def test_envelope_is_read_only(codec):
    env = codec.decode_frame(frame(codec, 1))[0]
    for name in ("version", "kind", "flags", "msg_id", "corr_id", "deadline_us", "trace_id",
                 "src", "dst", "subject", "body"):
        with pytest.raises(AttributeError):
            setattr(env, name, getattr(env, name))
    made = codec.Envelope(1, 2, 3, 4, 5, 6, 7, "s", "d", "j", b"\xc0")
    assert made.as_tuple() == (1, 2, 3, 4, 5, 6, 7, "s", "d", "j", b"\xc0")
