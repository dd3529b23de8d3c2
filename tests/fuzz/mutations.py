"""Mutators for the fuzz tests: hostile variants of valid encodings, at the byte and object level.

Theory of operation
-------------------
Random bytes rarely get past a decoder's first check, so most cases start from a valid
encoding made by the real encoder and break it a little:

* :func:`mutate_bytes` edits the bytes: flip a bit, bump a byte by one (an off-by-one length),
  set a byte to a msgpack type marker, smash four bytes with an extreme length, insert, delete,
  duplicate, truncate, or splice in a piece of another valid encoding. One to three edits each.
* :func:`mutate_object` edits the decoded object before it is packed again, so the result is
  valid msgpack of the wrong shape: a part replaced by a hostile value (wrong type, out of
  range, too long, empty), an item dropped, added, doubled or wrapped, an array turned into a
  map, and now and then a list made longer than any protocol allows.

Each drawn hypothesis example yields many cases (a ``random.Random`` seeded by the example
drives the edits): drawing an example costs milliseconds, a decoder microseconds.
"""
from __future__ import annotations

from random import Random
from typing import Any, Sequence

__all__ = ["HOSTILE", "mutate_bytes", "mutate_object", "paths"]

# msgpack type markers: nil, reserved, bools, bin/ext/str/array/map of each width, fixint edges
_MARKERS = bytes([0x00, 0x01, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5,
                  0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xCB, 0xCC, 0xCF, 0xD0, 0xD3, 0xD4, 0xD8, 0xD9, 0xDA, 0xDB,
                  0xDC, 0xDD, 0xDE, 0xDF, 0xE0, 0xFF])
# runs that make a length field extreme, or open deep nesting
_RUNS = (b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x01\x00\x00",
         b"\xff\xff", b"\x00\x00", b"\xdd\xff\xff\xff\xff", b"\xdf\x00\x01\x00\x00", b"\xdb\x00\x10\x00\x00",
         b"\xc6\x7f\xff\xff\xff", b"\x91" * 40, b"\x81\xa0" * 20, b"\xd4\x00\x00", b"\xc7\x01\xff\x00",
         b"\xcf" + b"\xff" * 8, b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xa2\xed\xa0", b"\xa1\xff")

HOSTILE: tuple[Any, ...] = (
    None, True, False, -1, 0, 1, 2, 3, 4, 64, 255, 256, 2**32, 2**63, 2**64 - 1, -(2**63), 1.5, -0.0,
    float("nan"), float("inf"), "", "x", "n1", "x" * 256, "é" * 128, "\u00ff" * 300, "a.*", "#.a", "..",
    b"", b"x", b"\x00" * 65, [], [[]], [None], ["n1", "n1"], {}, {"a": 1}, {"v": 1}, {b"k": 1},
)


def mutate_bytes(data: bytes, rng: Random, others: Sequence[bytes] = ()) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        n = len(out)
        op = rng.randrange(12)
        at = rng.randrange(n) if n else 0
        if op == 0 and n:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[at] = (out[at] + rng.choice((1, -1))) & 0xFF
        elif op == 2 and n:
            out[at] = rng.choice(_MARKERS)
        elif op == 3 and n:
            out[at] = rng.randrange(256)
        elif op == 4:
            run = rng.choice(_RUNS)
            out[at:at + len(run)] = run
        elif op == 5:
            out[at:at] = rng.choice(_RUNS)
        elif op == 6:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 7 and n:
            del out[at:at + rng.randrange(1, 9)]
        elif op == 8:
            del out[rng.randrange(n + 1):]
        elif op == 9 and n:
            end = rng.randrange(at, n + 1)
            out[end:end] = out[at:end]
        elif op == 10 and others:
            other = rng.choice(others)
            start = rng.randrange(len(other) + 1)
            out[at:at + rng.randrange(9)] = other[start:start + rng.randrange(1, 33)]
        elif n > 1:
            at = min(at, n - 2)
            out[at], out[at + 1] = out[at + 1], out[at]
    return bytes(out)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a tree of lists and dicts: a path of list indexes and dict keys."""
    out = [prefix]
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            out.extend(paths(item, prefix + (i,)))
    elif isinstance(obj, dict):
        for key, item in obj.items():
            out.extend(paths(item, prefix + (key,)))
    return out


def _replace(obj: Any, path: tuple, fn: Any) -> Any:
    if not path:
        return fn(obj)
    head, rest = path[0], path[1:]
    if isinstance(obj, list):
        out = list(obj)
    else:
        out = dict(obj)
    out[head] = _replace(obj[head], rest, fn)
    return out


def mutate_object(obj: Any, rng: Random, extra: Sequence[Any] = ()) -> Any:
    """``obj`` with one part changed (see the module docstring); ``extra``: more hostile values."""
    path = rng.choice(paths(obj))
    values = HOSTILE + tuple(extra)
    op = rng.randrange(10)

    def change(part: Any) -> Any:
        if op <= 3 or not isinstance(part, (list, dict)):
            return rng.choice(values)
        if isinstance(part, dict):
            if op <= 5 and part:
                dropped = dict(part)
                del dropped[rng.choice(list(dropped))]
                return dropped
            return {**part, rng.choice(("v", "agents", "x", "")): rng.choice(values)}
        if op == 4 and part:
            return part[:rng.randrange(len(part))]   # an item or more dropped
        if op == 5:
            return part + [rng.choice(values)]
        if op == 6 and part:
            i = rng.randrange(len(part))
            return part[:i + 1] + part[i:]
        if op == 7:
            return [part]
        if op == 8:
            return {str(i): v for i, v in enumerate(part)}
        # rarely, longer than any protocol allows (a long list of the same item)
        return part * (4097 // max(len(part), 1) + 1) if part and rng.random() < 0.05 else part[::-1]

    return _replace(obj, path, change)
