"""The envelope codec per message: compiled vs pure twin vs plain msgpack, same payload.

Names are stable so a report can take ratios within one run:
``test_codec_roundtrip[compiled|pure|msgpack]`` (encode then decode with the body unpacked),
``test_codec_encode[...]`` and ``test_codec_decode[...]``. The msgpack rows pack and unpack
the payload alone (no envelope): the floor the compiled codec is measured against.
No timing is asserted here.

    python -m pytest bench/test_bench_codec.py --benchmark-only -q
"""
from __future__ import annotations

import msgpack
import pytest

import mesh._core._pure.codec as pure
from mesh._core import compiled_twin

try:
    compiled = compiled_twin("codec")
except ImportError:
    compiled = None

PAYLOAD = {
    "symbol": "AAPL", "side": "buy", "qty": 100, "price": 187.25, "account": "acct-42",
    "order_id": 123456789, "tif": "IOC", "ts_us": 1732460000000000, "venue": "XNAS",
    "tags": ["algo", "v2"],
}
ENVELOPE = (1, 123456789, 0, "client-7", "risk-1", "check")  # kind, ids, src, dst, subject
IMPLS = [
    pytest.param("compiled", id="compiled",
                 marks=pytest.mark.skipif(compiled is None, reason="compiled codec not built")),
    pytest.param("pure", id="pure"),
    pytest.param("msgpack", id="msgpack"),
]


def _codec(impl: str):
    return compiled if impl == "compiled" else pure


@pytest.mark.parametrize("impl", IMPLS)
def test_codec_roundtrip(benchmark, impl):
    benchmark.group = "codec"
    if impl == "msgpack":
        packb, unpackb = msgpack.packb, msgpack.unpackb
        result = benchmark(lambda: unpackb(packb(PAYLOAD)))
    else:
        encode, decode = _codec(impl).encode, _codec(impl).decode
        result = benchmark(lambda: decode(encode(*ENVELOPE, PAYLOAD))[1])
    assert result == PAYLOAD


@pytest.mark.parametrize("impl", IMPLS)
def test_codec_encode(benchmark, impl):
    benchmark.group = "codec"
    if impl == "msgpack":
        packb = msgpack.packb
        benchmark(lambda: packb(PAYLOAD))
    else:
        encode = _codec(impl).encode
        benchmark(lambda: encode(*ENVELOPE, PAYLOAD))


@pytest.mark.parametrize("impl", IMPLS)
def test_codec_decode(benchmark, impl):
    benchmark.group = "codec"
    if impl == "msgpack":
        packed = msgpack.packb(PAYLOAD)
        result = benchmark(msgpack.unpackb, packed)
    else:
        wire = pure.encode(*ENVELOPE, PAYLOAD)
        result = benchmark(_codec(impl).decode, wire)[1]
    assert result == PAYLOAD
