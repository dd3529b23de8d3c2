"""The envelope codec: one message on the wire, encoded and decoded without trusting the bytes.

Theory of operation
-------------------
An envelope is a fixed 44-byte little-endian header, three UTF-8 names and a msgpack body
(layout in :mod:`mesh._core.wire`)::

    version u8 | kind u8 | flags u16 | body_len u32 | msg_id u64 | corr_id u64 |
    deadline_us u64 | trace_id u64 | src_len u8 | dst_len u8 | subject_len u16 |
    src | dst | subject | body (msgpack, body_len bytes)

Envelopes are self-delimiting, so one ZeroMQ frame may hold several back to back.

Decoding is split in two because a node routes on the header alone:

* :func:`decode_frame` walks the headers, checks every length against the frame and the
  :class:`Limits`, decodes the names and hands out each body as a zero-copy ``memoryview``
  slice of the input. It never unpacks a body.
* :func:`load_body` unpacks a body for the agent that receives it. It first *pre-scans* the
  msgpack tokens in one iterative pass with a fixed-size stack and no allocation: nesting
  depth, every declared str/bin/array/map length against both the limits and the bytes that
  remain, no ext types, no reserved byte 0xc1, exactly one object and nothing after it.
  Only a body that passes is given to msgpack, whose own length checks (against the body's
  length, or the limits where tighter) stay on as a second line of defence.

  Why a pre-scan: the cost is one linear loop and a fixed array, so a hostile body (declared
  lengths of 2**32, nesting thousands deep, a huge array of tiny items) is refused before a
  single object is built, rather than after msgpack has allocated and thrown away a large
  partial result; and both twins refuse exactly the same bodies with the same message.

Limits
------
What a decoder accepts is bounded by its :class:`Limits` (defaults in brackets):

* a frame: ``max_frame_bytes`` (16 MiB), at most ``max_envelopes`` (4096) envelopes;
* an envelope: src and dst of ``max_name_len`` (255) UTF-8 bytes, a subject of
  ``max_subject_len`` (1024), a body of ``max_body_bytes`` (16 MiB);
* a body: ``max_depth`` (32) levels of nesting (a scalar at the top level is depth 0 and every
  array or map opened adds one), a str of ``max_str_len`` (1 MiB) bytes, a bin of
  ``max_bin_len`` (16 MiB), an array of ``max_array_len`` (131072) items, a map of
  ``max_map_len`` (131072) pairs, ``max_containers`` (262144) arrays and maps in all, and
  no ext types.

``max_containers`` bounds what a body costs once decoded. An empty array is one byte on the
wire and about 60 bytes as a Python list (a map more), and the garbage collector walks every
one: without this bound a 16 MiB body of nested empty arrays took over 1 GiB and seconds of
CPU to decode. With it a decoded body takes at most about 25 times its length (a scalar costs
its Python object and one pointer) plus 200 bytes per container. The wire fields cap names at
255 UTF-8 bytes (u8), subjects at 65535 (u16) and bodies at 2**32-1 bytes (u32).

Errors: decoding raises :class:`mesh.errors.DecodeError` and nothing else, whatever the
input; encoding raises :class:`mesh.errors.EncodeError`. :func:`encode` does not check a
body against any receiver's limits (those are the receiver's to choose), and msgpack types a
receiver refuses (``msgpack.ExtType``, ``msgpack.Timestamp``) still pack.

Twins: the compiled ``mesh/_core/codec.pyx`` and the pure-Python ``mesh/_core/_pure/codec.py``
have the same API and give the same bytes, the same exceptions and the same messages (errors
raised inside msgpack keep msgpack's text, which differs between its C and Python code). One
known difference: the pure twin packs with Python recursion, so a body nested several hundred
levels deep may fail to encode there while the compiled packer (limit 1024 levels) takes it.
"""
from __future__ import annotations

import operator
import struct
from operator import attrgetter

from msgpack import fallback

from mesh._core.wire import HEADER_SIZE, VERSION
from mesh.errors import DecodeError, EncodeError

PUBLIC_API = [
    "VERSION", "HEADER_SIZE", "Limits", "DEFAULT_LIMITS", "Envelope",
    "pack_body", "load_body", "encode", "encode_raw", "decode_frame", "decode",
]

_HEADER = struct.Struct("<BBHIQQQQBBH")
if _HEADER.size != HEADER_SIZE:
    raise ImportError("mesh._core._pure.codec does not match the wire layout in mesh._core.wire")

_U8_MAX = 0xFF
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64_MAX = 0xFFFFFFFFFFFFFFFF
_INT_MAX = 0x7FFFFFFF  # the compiled Limits keeps C ints
_MAX_DEPTH = 512  # the pre-scan's stack has this many slots (plus one)


_LIMIT_NAMES = (
    "max_frame_bytes", "max_body_bytes", "max_depth", "max_str_len", "max_bin_len",
    "max_array_len", "max_map_len", "max_envelopes", "max_name_len", "max_subject_len",
    "max_containers",
)


def _check_limit(name: str, value: object, upper: int) -> int:
    if type(value) is bool or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    if not 1 <= value <= upper:
        raise ValueError(f"{name} must be in 1..{upper}, not {value}")
    return int(value)


class Limits:
    """Bounds on what a decoder accepts from the wire; every field is a positive int.

    ``max_depth`` is at most 512, ``max_name_len`` at most 255 and ``max_subject_len`` at
    most 65535 (the widths of the wire fields); the others at most 2**31-1.
    """

    __slots__ = (
        "_max_frame_bytes", "_max_body_bytes", "_max_depth", "_max_str_len", "_max_bin_len",
        "_max_array_len", "_max_map_len", "_max_envelopes", "_max_name_len",
        "_max_subject_len", "_max_containers", "_unpack_kwargs",
    )

    def __init__(
        self,
        *,
        max_frame_bytes: int = 16 * 1024 * 1024,
        max_body_bytes: int = 16 * 1024 * 1024,
        max_depth: int = 32,
        max_str_len: int = 1024 * 1024,
        max_bin_len: int = 16 * 1024 * 1024,
        max_array_len: int = 131072,
        max_map_len: int = 131072,
        max_envelopes: int = 4096,
        max_name_len: int = 255,
        max_subject_len: int = 1024,
        max_containers: int = 262144,
    ) -> None:
        self._max_frame_bytes = _check_limit("max_frame_bytes", max_frame_bytes, _INT_MAX)
        self._max_body_bytes = _check_limit("max_body_bytes", max_body_bytes, _INT_MAX)
        self._max_depth = _check_limit("max_depth", max_depth, _MAX_DEPTH)
        self._max_str_len = _check_limit("max_str_len", max_str_len, _INT_MAX)
        self._max_bin_len = _check_limit("max_bin_len", max_bin_len, _INT_MAX)
        self._max_array_len = _check_limit("max_array_len", max_array_len, _INT_MAX)
        self._max_map_len = _check_limit("max_map_len", max_map_len, _INT_MAX)
        self._max_envelopes = _check_limit("max_envelopes", max_envelopes, _INT_MAX)
        self._max_name_len = _check_limit("max_name_len", max_name_len, _U8_MAX)
        self._max_subject_len = _check_limit("max_subject_len", max_subject_len, _U16_MAX)
        self._max_containers = _check_limit("max_containers", max_containers, _INT_MAX)
        # msgpack enforces the same bounds again: a second line of defence behind the pre-scan
        self._unpack_kwargs = {
            "raw": False,
            "use_list": True,
            "strict_map_key": True,
            "max_str_len": self._max_str_len,
            "max_bin_len": self._max_bin_len,
            "max_array_len": self._max_array_len,
            "max_map_len": self._max_map_len,
        }

    max_frame_bytes = property(attrgetter("_max_frame_bytes"), doc="Largest frame decoded.")
    max_body_bytes = property(attrgetter("_max_body_bytes"), doc="Largest body, in bytes.")
    max_depth = property(attrgetter("_max_depth"), doc="Deepest nesting of arrays and maps.")
    max_str_len = property(attrgetter("_max_str_len"), doc="Longest str in a body, bytes.")
    max_bin_len = property(attrgetter("_max_bin_len"), doc="Longest bin in a body, bytes.")
    max_array_len = property(attrgetter("_max_array_len"), doc="Most items in one array.")
    max_map_len = property(attrgetter("_max_map_len"), doc="Most pairs in one map.")
    max_envelopes = property(attrgetter("_max_envelopes"), doc="Most envelopes in a frame.")
    max_name_len = property(attrgetter("_max_name_len"), doc="Longest src/dst, UTF-8 bytes.")
    max_subject_len = property(attrgetter("_max_subject_len"), doc="Longest subject, bytes.")
    max_containers = property(attrgetter("_max_containers"),
                              doc="Most arrays and maps in one body, all levels together.")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in _LIMIT_NAMES)
        return f"Limits({fields})"


DEFAULT_LIMITS = Limits()


class Envelope:
    """One decoded envelope; ``body`` is the raw msgpack body, a memoryview into the frame.

    Produced by :func:`decode_frame` and :func:`decode`; the attributes are read-only.
    """

    __slots__ = (
        "_version", "_kind", "_flags", "_msg_id", "_corr_id", "_deadline_us", "_trace_id",
        "_src", "_dst", "_subject", "_body",
    )

    def __init__(
        self, version: int, kind: int, flags: int, msg_id: int, corr_id: int,
        deadline_us: int, trace_id: int, src: str, dst: str, subject: str, body: object,
    ) -> None:
        self._version = version
        self._kind = kind
        self._flags = flags
        self._msg_id = msg_id
        self._corr_id = corr_id
        self._deadline_us = deadline_us
        self._trace_id = trace_id
        self._src = src
        self._dst = dst
        self._subject = subject
        self._body = body

    version = property(attrgetter("_version"), doc="Envelope format version.")
    kind = property(attrgetter("_kind"), doc="Message kind (mesh._core.wire.Kind).")
    flags = property(attrgetter("_flags"), doc="Flag bits (mesh._core.wire.Flag).")
    msg_id = property(attrgetter("_msg_id"), doc="Unique per sender.")
    corr_id = property(attrgetter("_corr_id"), doc="msg_id of the request answered, or 0.")
    deadline_us = property(attrgetter("_deadline_us"), doc="Absolute deadline, us; 0 = none.")
    trace_id = property(attrgetter("_trace_id"), doc="Trace id; 0 = none.")
    src = property(attrgetter("_src"), doc="Source agent name or node id.")
    dst = property(attrgetter("_dst"), doc="Destination agent name.")
    subject = property(attrgetter("_subject"), doc="Method name or topic.")
    body = property(attrgetter("_body"), doc="The msgpack body, a memoryview into the frame.")

    def as_tuple(self) -> tuple:
        """All fields in wire order, the body copied to bytes."""
        return (
            self._version, self._kind, self._flags, self._msg_id, self._corr_id,
            self._deadline_us, self._trace_id, self._src, self._dst, self._subject,
            bytes(self._body),
        )

    def __repr__(self) -> str:
        return (
            f"Envelope(version={self._version}, kind={self._kind}, flags={self._flags}, "
            f"msg_id={self._msg_id}, corr_id={self._corr_id}, "
            f"deadline_us={self._deadline_us}, trace_id={self._trace_id}, "
            f"src={self._src!r}, dst={self._dst!r}, subject={self._subject!r}, "
            f"body=<{len(self._body)} bytes>)"
        )


# ---------------------------------------------------------------------------------- encoding

_packers: list = []  # idle Packers; pop/append are atomic, so threads never share one


def pack_body(obj: object) -> bytes:
    """Pack ``obj`` as a msgpack body (bin type for bytes, float64, tuples as arrays)."""
    try:
        packer = _packers.pop()
    except IndexError:
        packer = fallback.Packer(use_bin_type=True)
    try:
        return packer.pack(obj)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise EncodeError(f"body cannot be packed: {type(exc).__name__}: {exc}") from exc
    finally:
        _packers.append(packer)


def _uint_field(value: object, upper: int, name: str) -> int:
    if not isinstance(value, int):
        try:
            value = operator.index(value)
        except TypeError:
            raise EncodeError(f"{name} must be an int, not {type(value).__name__}") from None
    if value < 0 or value > upper:
        raise EncodeError(f"{name} out of range 0..{upper}: {value}")
    return value


def _name_utf8(value: object, upper: int, name: str) -> bytes:
    if not isinstance(value, str):
        raise EncodeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        data = str.encode(value, "utf-8")  # as the C API does, whatever a subclass says
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{name} is not encodable as UTF-8") from exc
    if len(data) > upper:
        raise EncodeError(f"{name} is {len(data)} UTF-8 bytes, more than {upper}")
    return data


def _header_and_names(kind, msg_id, corr_id, src, dst, subject, flags, deadline_us, trace_id):
    # Validation order (and so which error a bad call reports) is the same in both twins.
    kind = _uint_field(kind, _U8_MAX, "kind")
    msg_id = _uint_field(msg_id, _U64_MAX, "msg_id")
    corr_id = _uint_field(corr_id, _U64_MAX, "corr_id")
    flags = _uint_field(flags, _U16_MAX, "flags")
    deadline_us = _uint_field(deadline_us, _U64_MAX, "deadline_us")
    trace_id = _uint_field(trace_id, _U64_MAX, "trace_id")
    src_b = _name_utf8(src, _U8_MAX, "src")
    dst_b = _name_utf8(dst, _U8_MAX, "dst")
    subject_b = _name_utf8(subject, _U16_MAX, "subject")
    return (kind, flags, msg_id, corr_id, deadline_us, trace_id), src_b, dst_b, subject_b


def _join(fields: tuple, src_b: bytes, dst_b: bytes, subject_b: bytes, body, body_len: int):
    if body_len > _U32_MAX:
        raise EncodeError(f"body is {body_len} bytes, more than {_U32_MAX}")
    kind, flags, msg_id, corr_id, deadline_us, trace_id = fields
    header = _HEADER.pack(
        VERSION, kind, flags, body_len, msg_id, corr_id, deadline_us, trace_id,
        len(src_b), len(dst_b), len(subject_b),
    )
    return b"".join((header, src_b, dst_b, subject_b, body))


def encode(
    kind: int, msg_id: int, corr_id: int, src: str, dst: str, subject: str, body: object,
    flags: int = 0, deadline_us: int = 0, trace_id: int = 0,
) -> bytes:
    """One envelope: the header, the names, and ``body`` packed with :func:`pack_body`."""
    fields, src_b, dst_b, subject_b = _header_and_names(
        kind, msg_id, corr_id, src, dst, subject, flags, deadline_us, trace_id)
    packed = pack_body(body)
    return _join(fields, src_b, dst_b, subject_b, packed, len(packed))


def encode_raw(
    kind: int, msg_id: int, corr_id: int, src: str, dst: str, subject: str, body_raw: object,
    flags: int = 0, deadline_us: int = 0, trace_id: int = 0,
) -> bytes:
    """As :func:`encode` with a body already packed (any contiguous buffer), sent as is.

    Pack a published payload once and address it to many nodes. The body is not checked.
    """
    fields, src_b, dst_b, subject_b = _header_and_names(
        kind, msg_id, corr_id, src, dst, subject, flags, deadline_us, trace_id)
    try:
        view = memoryview(body_raw)
    except TypeError:
        view = None
    if view is None or not view.c_contiguous:
        raise EncodeError(
            f"body_raw must be a contiguous bytes-like object, not {type(body_raw).__name__}")
    return _join(fields, src_b, dst_b, subject_b, view, view.nbytes)


# ---------------------------------------------------------------------------------- decoding


def _byte_view(buf: object) -> memoryview:
    """``buf`` as a flat unsigned-byte memoryview, without copying."""
    try:
        view = memoryview(buf)
    except (TypeError, ValueError, BufferError):
        raise DecodeError(f"expected a bytes-like object, not {type(buf).__name__}") from None
    if view.format != "B" or view.ndim != 1 or not view.c_contiguous:
        try:
            view = view.cast("B")
        except (TypeError, ValueError):
            raise DecodeError("buffer is not C-contiguous") from None
    return view


def _parse_one(view: memoryview, pos: int, n: int, limits: Limits) -> tuple[Envelope, int]:
    if n - pos < HEADER_SIZE:
        raise DecodeError(
            f"truncated header at offset {pos}: {n - pos} of {HEADER_SIZE} bytes")
    (version, kind, flags, body_len, msg_id, corr_id, deadline_us, trace_id,
     src_len, dst_len, subject_len) = _HEADER.unpack_from(view, pos)
    if version != VERSION:
        raise DecodeError(
            f"unsupported envelope version {version} at offset {pos} (expected {VERSION})")
    if src_len > limits._max_name_len:
        raise DecodeError(
            f"src name of {src_len} bytes exceeds max_name_len {limits._max_name_len}")
    if dst_len > limits._max_name_len:
        raise DecodeError(
            f"dst name of {dst_len} bytes exceeds max_name_len {limits._max_name_len}")
    if subject_len > limits._max_subject_len:
        raise DecodeError(
            f"subject of {subject_len} bytes exceeds max_subject_len {limits._max_subject_len}")
    if body_len > limits._max_body_bytes:
        raise DecodeError(
            f"body of {body_len} bytes exceeds max_body_bytes {limits._max_body_bytes}")
    size = HEADER_SIZE + src_len + dst_len + subject_len + body_len
    if size > n - pos:
        raise DecodeError(f"envelope at offset {pos} needs {size} bytes, {n - pos} remain")
    start = pos + HEADER_SIZE
    src = _utf8_name(view, start, src_len, "src")
    start += src_len
    dst = _utf8_name(view, start, dst_len, "dst")
    start += dst_len
    subject = _utf8_name(view, start, subject_len, "subject")
    start += subject_len
    envelope = Envelope(version, kind, flags, msg_id, corr_id, deadline_us, trace_id,
                        src, dst, subject, view[start:start + body_len])
    return envelope, pos + size


def _utf8_name(view: memoryview, start: int, length: int, name: str) -> str:
    try:
        return str(view[start:start + length], "utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name} is not valid UTF-8") from exc


def _frame_view(buf: object, limits: Limits) -> memoryview:
    if type(limits) is not Limits and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
    view = _byte_view(buf)
    n = view.nbytes
    if n == 0:
        raise DecodeError("frame is empty")
    if n > limits._max_frame_bytes:
        raise DecodeError(
            f"frame of {n} bytes exceeds max_frame_bytes {limits._max_frame_bytes}")
    return view


def decode_frame(buf: object, limits: Limits = DEFAULT_LIMITS) -> list[Envelope]:
    """Every envelope in a frame, bodies left packed (memoryview slices of ``buf``)."""
    view = _frame_view(buf, limits)
    n = view.nbytes
    envelopes = []
    pos = 0
    while pos < n:
        if len(envelopes) == limits._max_envelopes:
            raise DecodeError(
                f"frame holds more than max_envelopes {limits._max_envelopes} envelopes")
        envelope, pos = _parse_one(view, pos, n, limits)
        envelopes.append(envelope)
    return envelopes


def decode(buf: object, limits: Limits = DEFAULT_LIMITS) -> tuple[Envelope, object]:
    """The one envelope in ``buf`` and its unpacked body."""
    view = _frame_view(buf, limits)
    n = view.nbytes
    envelope, pos = _parse_one(view, 0, n, limits)
    if pos != n:
        raise DecodeError(f"frame holds more than one envelope ({n - pos} bytes follow)")
    return envelope, _load(envelope._body, limits)


def load_body(raw: object, limits: Limits = DEFAULT_LIMITS) -> object:
    """Unpack a msgpack body from any buffer after the bounded pre-scan."""
    if type(limits) is not Limits and not isinstance(limits, Limits):
        raise TypeError(f"limits must be a Limits, not {type(limits).__name__}")
    return _load(_byte_view(raw), limits)


def _load(view: memoryview, limits: Limits) -> object:
    n = view.nbytes
    if n > limits._max_body_bytes:
        raise DecodeError(f"body of {n} bytes exceeds max_body_bytes {limits._max_body_bytes}")
    error, where, what = _prescan(view, n, limits)
    if error:
        raise DecodeError(_SCAN_MESSAGES[error].format(where=where, what=what, lim=limits))
    try:
        return fallback.unpackb(view, **limits._unpack_kwargs)
    except Exception as exc:  # whatever msgpack raises, the caller sees one error type
        raise DecodeError(f"body does not unpack: {type(exc).__name__}: {exc}") from exc


# Token classes of the msgpack first byte, with their argument: a SCALAR's payload size, or
# the size of the length field of a STR/BIN/ARRAY/MAP (0: the length is in the byte).
_SCALAR, _STR, _BIN, _ARRAY, _MAP, _EXT, _RESERVED = range(7)
_CLASSES_C0_DF = "SRSSBBBEEESSSSSSSSSSEEEEETTTAAMM"  # c0..df: bool, bin, ext, numbers, str...
_ARGS_C0_DF = "00001240004812481248000001242424"
_CLASS = {"S": _SCALAR, "T": _STR, "B": _BIN, "A": _ARRAY, "M": _MAP, "E": _EXT, "R": _RESERVED}


def _token_table() -> list[tuple[int, int]]:
    table = []
    for byte in range(256):
        if byte <= 0x7F or byte >= 0xE0:
            table.append((_SCALAR, 0))  # positive and negative fixint
        elif byte <= 0x8F:
            table.append((_MAP, 0))
        elif byte <= 0x9F:
            table.append((_ARRAY, 0))
        elif byte <= 0xBF:
            table.append((_STR, 0))
        else:
            table.append((_CLASS[_CLASSES_C0_DF[byte - 0xC0]], int(_ARGS_C0_DF[byte - 0xC0])))
    return table


_TOKENS = _token_table()

# What the pre-scan found, as (code, where, what); formatted only when it is raised.
(_E_EMPTY, _E_TRUNC, _E_EXT, _E_RESERVED, _E_STR, _E_BIN, _E_PAST, _E_DEPTH, _E_ARRAY, _E_MAP,
 _E_TRAILING, _E_CONTAINERS) = range(1, 13)
_SCAN_MESSAGES = {
    _E_EMPTY: "body is empty",
    _E_TRUNC: "body truncated at offset {where}",
    _E_EXT: "body uses msgpack ext type 0x{what:02x} at offset {where} (ext types are refused)",
    _E_RESERVED: "body uses reserved byte 0xc1 at offset {where}",
    _E_STR: "body str of {what} bytes at offset {where} exceeds max_str_len {lim.max_str_len}",
    _E_BIN: "body bin of {what} bytes at offset {where} exceeds max_bin_len {lim.max_bin_len}",
    _E_PAST: "body length {what} declared at offset {where} runs past its end",
    _E_DEPTH: "body nests deeper than max_depth {lim.max_depth} at offset {where}",
    _E_ARRAY: "body array of {what} items at offset {where} exceeds "
              "max_array_len {lim.max_array_len}",
    _E_MAP: "body map of {what} pairs at offset {where} exceeds max_map_len {lim.max_map_len}",
    _E_TRAILING: "body has {what} trailing bytes after its object",
    _E_CONTAINERS: "body has more than max_containers {lim.max_containers} arrays and maps "
                   "(one too many at offset {where})",
}


def _prescan(data: memoryview, n: int, limits: Limits) -> tuple[int, int, int]:
    """Walk the msgpack tokens of ``data`` once, iteratively: (0, 0, 0) or an _E_ code.

    ``stack`` holds, per open array or map, how many items it still expects (2 per map pair).
    """
    if n == 0:
        return _E_EMPTY, 0, 0
    max_depth = limits._max_depth
    containers_left = limits._max_containers
    stack: list[int] = []
    pos = 0
    while True:
        where = pos
        if pos >= n:
            return _E_TRUNC, where, 0
        byte = data[pos]
        pos += 1
        kind, arg = _TOKENS[byte]
        if kind == _SCALAR:
            if n - pos < arg:
                return _E_TRUNC, where, 0
            pos += arg
        elif kind == _EXT:
            return _E_EXT, where, byte
        elif kind == _RESERVED:
            return _E_RESERVED, where, 0
        else:
            if arg == 0:
                length = byte & (0x1F if kind == _STR else 0x0F)
            else:
                if n - pos < arg:
                    return _E_TRUNC, where, 0
                length = int.from_bytes(data[pos:pos + arg], "big")
                pos += arg
            if kind == _STR or kind == _BIN:
                if kind == _STR and length > limits._max_str_len:
                    return _E_STR, where, length
                if kind == _BIN and length > limits._max_bin_len:
                    return _E_BIN, where, length
                if length > n - pos:
                    return _E_PAST, where, length
                pos += length
            else:
                if len(stack) >= max_depth:
                    return _E_DEPTH, where, length
                if not containers_left:
                    return _E_CONTAINERS, where, length
                containers_left -= 1
                if kind == _ARRAY:
                    if length > limits._max_array_len:
                        return _E_ARRAY, where, length
                    items = length
                else:
                    if length > limits._max_map_len:
                        return _E_MAP, where, length
                    items = 2 * length
                if items > n - pos:  # every item takes at least one byte
                    return _E_PAST, where, length
                if items:
                    stack.append(items)
                    continue
        # one object is complete: close every container it completes
        while stack:
            stack[-1] -= 1
            if stack[-1]:
                break
            stack.pop()
        if not stack:
            break
    if pos != n:
        return _E_TRAILING, pos, n - pos
    return 0, 0, 0
