# cython: language_level=3
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
from cpython.buffer cimport (PyBUF_RECORDS_RO, PyBUF_SIMPLE, PyBuffer_IsContiguous,
                             PyBuffer_Release, PyObject_GetBuffer)
from cpython.bytes cimport (PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize,
                            PyBytes_GET_SIZE)
from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_Check
from cpython.memoryview cimport PyMemoryView_FromObject, PyMemoryView_GET_BUFFER
from cpython.number cimport PyNumber_Index
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check, PyUnicode_DecodeUTF8
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, strcmp

import msgpack

from mesh._core.wire import HEADER_SIZE, VERSION
from mesh.errors import DecodeError, EncodeError

PUBLIC_API = [
    "VERSION", "HEADER_SIZE", "Limits", "DEFAULT_LIMITS", "Envelope",
    "pack_body", "load_body", "encode", "encode_raw", "decode_frame", "decode",
]

cdef enum:
    _HDR = 44               # HEADER_SIZE, checked below
    _VER = 1                # VERSION, checked below
    _MAX_DEPTH = 512        # the pre-scan's stack has this many slots (plus one)
    _NOGIL_BYTES = 1 << 20  # pre-scans of bodies this large let other threads run

cdef uint64_t _U8_MAX = 0xFF, _U16_MAX = 0xFFFF, _U32_MAX = 0xFFFFFFFF
cdef uint64_t _U64_MAX = 0xFFFFFFFFFFFFFFFF
cdef int _INT_MAX = 0x7FFFFFFF  # Limits keeps C ints
cdef uint16_t _ONE = 1

if msgpack.version < (1, 0, 0):  # _load relies on the 1.0 defaults of unpackb
    raise ImportError("mesh._core.codec needs msgpack >= 1.0")
if HEADER_SIZE != _HDR or VERSION != _VER:
    raise ImportError("mesh._core.codec was built for another wire layout; rebuild it")
if (<unsigned char*>&_ONE)[0] != 1:
    raise ImportError("mesh._core.codec reads the wire with native loads: little-endian only")


_LIMIT_NAMES = (
    "max_frame_bytes", "max_body_bytes", "max_depth", "max_str_len", "max_bin_len",
    "max_array_len", "max_map_len", "max_envelopes", "max_name_len", "max_subject_len",
    "max_containers",
)


def _check_limit(str name, object value, int upper):
    if type(value) is bool or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    if not 1 <= value <= upper:
        raise ValueError(f"{name} must be in 1..{upper}, not {value}")
    return int(value)


cdef class Limits:
    """Bounds on what a decoder accepts from the wire; every field is a positive int.

    ``max_depth`` is at most 512, ``max_name_len`` at most 255 and ``max_subject_len`` at
    most 65535 (the widths of the wire fields); the others at most 2**31-1.
    """

    cdef readonly int max_frame_bytes, max_body_bytes, max_depth, max_str_len, max_bin_len
    cdef readonly int max_array_len, max_map_len, max_envelopes, max_name_len, max_subject_len
    cdef readonly int max_containers
    cdef Py_ssize_t _msgpack_bound  # bodies this short need no explicit msgpack limits

    def __init__(self, *, max_frame_bytes=16 * 1024 * 1024, max_body_bytes=16 * 1024 * 1024,
                 max_depth=32, max_str_len=1024 * 1024, max_bin_len=16 * 1024 * 1024,
                 max_array_len=131072, max_map_len=131072, max_envelopes=4096,
                 max_name_len=255, max_subject_len=1024, max_containers=262144):
        self.max_frame_bytes = _check_limit("max_frame_bytes", max_frame_bytes, _INT_MAX)
        self.max_body_bytes = _check_limit("max_body_bytes", max_body_bytes, _INT_MAX)
        self.max_depth = _check_limit("max_depth", max_depth, _MAX_DEPTH)
        self.max_str_len = _check_limit("max_str_len", max_str_len, _INT_MAX)
        self.max_bin_len = _check_limit("max_bin_len", max_bin_len, _INT_MAX)
        self.max_array_len = _check_limit("max_array_len", max_array_len, _INT_MAX)
        self.max_map_len = _check_limit("max_map_len", max_map_len, _INT_MAX)
        self.max_envelopes = _check_limit("max_envelopes", max_envelopes, _INT_MAX)
        self.max_name_len = _check_limit("max_name_len", max_name_len, _U8_MAX)
        self.max_subject_len = _check_limit("max_subject_len", max_subject_len, _U16_MAX)
        self.max_containers = _check_limit("max_containers", max_containers, _INT_MAX)
        # msgpack bounds lengths by the body's size by itself; the limits are tighter only
        # for bodies longer than this
        self._msgpack_bound = min(self.max_str_len, self.max_bin_len, self.max_array_len,
                                  2 * <Py_ssize_t>self.max_map_len)

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)}" for name in _LIMIT_NAMES)
        return f"Limits({fields})"


DEFAULT_LIMITS = Limits()


cdef class Envelope:
    """One decoded envelope; ``body`` is the raw msgpack body, a memoryview into the frame.

    Produced by :func:`decode_frame` and :func:`decode`; the attributes are read-only.
    """

    cdef readonly int version, kind, flags
    cdef readonly uint64_t msg_id, corr_id, deadline_us, trace_id
    cdef readonly str src, dst, subject
    cdef readonly object body

    def __init__(self, int version, int kind, int flags, uint64_t msg_id, uint64_t corr_id,
                 uint64_t deadline_us, uint64_t trace_id, str src, str dst, str subject,
                 object body):
        self.version, self.kind, self.flags = version, kind, flags
        self.msg_id, self.corr_id = msg_id, corr_id
        self.deadline_us, self.trace_id = deadline_us, trace_id
        self.src, self.dst, self.subject, self.body = src, dst, subject, body

    def as_tuple(self):
        """All fields in wire order, the body copied to bytes."""
        return (self.version, self.kind, self.flags, self.msg_id, self.corr_id,
                self.deadline_us, self.trace_id, self.src, self.dst, self.subject,
                bytes(self.body))

    def __repr__(self):
        return (
            f"Envelope(version={self.version}, kind={self.kind}, flags={self.flags}, "
            f"msg_id={self.msg_id}, corr_id={self.corr_id}, "
            f"deadline_us={self.deadline_us}, trace_id={self.trace_id}, "
            f"src={self.src!r}, dst={self.dst!r}, subject={self.subject!r}, "
            f"body=<{len(self.body)} bytes>)"
        )


# ---------------------------------------------------------------------------------- encoding

cdef list _packers = []  # idle Packers; no other thread can run between the check and pop()
cdef object _Packer = msgpack.Packer


cpdef bytes pack_body(object obj):
    """Pack ``obj`` as a msgpack body (bin type for bytes, float64, tuples as arrays)."""
    packer = _packers.pop() if _packers else _Packer(use_bin_type=True, autoreset=True)
    try:
        return packer.pack(obj)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise EncodeError(f"body cannot be packed: {type(exc).__name__}: {exc}") from exc
    finally:
        _packers.append(packer)


cdef struct _Head:
    uint64_t kind, flags, msg_id, corr_id, deadline_us, trace_id
    const char* src
    const char* dst
    const char* subject
    Py_ssize_t src_len, dst_len, subject_len


cdef uint64_t _uint_field(object value, uint64_t upper, str name) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t result
    if not PyLong_Check(value):
        try:
            value = PyNumber_Index(value)
        except TypeError:
            raise EncodeError(f"{name} must be an int, not {type(value).__name__}") from None
    try:
        result = PyLong_AsUnsignedLongLong(value)
    except OverflowError:
        raise EncodeError(f"{name} out of range 0..{upper}: {value}") from None
    if result > upper:
        raise EncodeError(f"{name} out of range 0..{upper}: {value}")
    return result


cdef const char* _name_utf8(object value, Py_ssize_t upper, str name,
                            Py_ssize_t* size) except NULL:
    cdef const char* data
    if not PyUnicode_Check(value):
        raise EncodeError(f"{name} must be a str, not {type(value).__name__}")
    try:
        data = PyUnicode_AsUTF8AndSize(value, size)  # cached in the str: no copy
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{name} is not encodable as UTF-8") from exc
    if size[0] > upper:
        raise EncodeError(f"{name} is {size[0]} UTF-8 bytes, more than {upper}")
    return data


cdef int _header_and_names(_Head* h, kind, msg_id, corr_id, src, dst, subject,
                           flags, deadline_us, trace_id) except -1:
    # Validation order (and so which error a bad call reports) is the same in both twins.
    h.kind = _uint_field(kind, _U8_MAX, "kind")
    h.msg_id = _uint_field(msg_id, _U64_MAX, "msg_id")
    h.corr_id = _uint_field(corr_id, _U64_MAX, "corr_id")
    h.flags = _uint_field(flags, _U16_MAX, "flags")
    h.deadline_us = _uint_field(deadline_us, _U64_MAX, "deadline_us")
    h.trace_id = _uint_field(trace_id, _U64_MAX, "trace_id")
    h.src = _name_utf8(src, _U8_MAX, "src", &h.src_len)
    h.dst = _name_utf8(dst, _U8_MAX, "dst", &h.dst_len)
    h.subject = _name_utf8(subject, _U16_MAX, "subject", &h.subject_len)
    return 0


cdef bytes _join(_Head* h, const char* body, Py_ssize_t body_len):
    """The envelope, written once into a bytes object allocated at its final size."""
    cdef uint16_t flags = <uint16_t>h.flags, subject_len = <uint16_t>h.subject_len
    cdef uint32_t blen = <uint32_t>body_len
    if <uint64_t>body_len > _U32_MAX:
        raise EncodeError(f"body is {body_len} bytes, more than {_U32_MAX}")
    cdef bytes out = PyBytes_FromStringAndSize(
        NULL, _HDR + h.src_len + h.dst_len + h.subject_len + body_len)
    cdef unsigned char* o = <unsigned char*>PyBytes_AS_STRING(out)
    o[0] = _VER
    o[1] = <unsigned char>h.kind
    memcpy(o + 2, &flags, 2)  # the host is little-endian (checked at import)
    memcpy(o + 4, &blen, 4)
    memcpy(o + 8, &h.msg_id, 8)
    memcpy(o + 16, &h.corr_id, 8)
    memcpy(o + 24, &h.deadline_us, 8)
    memcpy(o + 32, &h.trace_id, 8)
    o[40] = <unsigned char>h.src_len
    o[41] = <unsigned char>h.dst_len
    memcpy(o + 42, &subject_len, 2)
    o += _HDR
    memcpy(o, h.src, h.src_len)
    o += h.src_len
    memcpy(o, h.dst, h.dst_len)
    o += h.dst_len
    memcpy(o, h.subject, h.subject_len)
    memcpy(o + h.subject_len, body, body_len)
    return out


def encode(kind, msg_id, corr_id, src, dst, subject, body,
           flags=0, deadline_us=0, trace_id=0):
    """One envelope: the header, the names, and ``body`` packed with :func:`pack_body`."""
    cdef _Head h
    _header_and_names(&h, kind, msg_id, corr_id, src, dst, subject, flags, deadline_us,
                      trace_id)
    cdef bytes packed = pack_body(body)
    return _join(&h, PyBytes_AS_STRING(packed), PyBytes_GET_SIZE(packed))


def encode_raw(kind, msg_id, corr_id, src, dst, subject, body_raw,
               flags=0, deadline_us=0, trace_id=0):
    """As :func:`encode` with a body already packed (any contiguous buffer), sent as is.

    Pack a published payload once and address it to many nodes. The body is not checked.
    """
    cdef _Head h
    cdef Py_buffer view
    _header_and_names(&h, kind, msg_id, corr_id, src, dst, subject, flags, deadline_us,
                      trace_id)
    if PyBytes_CheckExact(body_raw):
        return _join(&h, PyBytes_AS_STRING(body_raw), PyBytes_GET_SIZE(body_raw))
    try:
        PyObject_GetBuffer(body_raw, &view, PyBUF_SIMPLE)
    except (TypeError, ValueError, BufferError):
        raise EncodeError(f"body_raw must be a contiguous bytes-like object, "
                          f"not {type(body_raw).__name__}") from None
    try:
        return _join(&h, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


# ---------------------------------------------------------------------------------- decoding

cdef object _byte_view(object buf):
    """``buf`` as a flat unsigned-byte memoryview, without copying."""
    try:
        view = PyMemoryView_FromObject(buf)
    except (TypeError, ValueError, BufferError):
        raise DecodeError(f"expected a bytes-like object, not {type(buf).__name__}") from None
    cdef Py_buffer* b = PyMemoryView_GET_BUFFER(view)
    if (b.ndim != 1 or b.format == NULL or strcmp(b.format, "B") != 0
            or not PyBuffer_IsContiguous(b, b'C')):
        try:
            view = view.cast("B")
        except (TypeError, ValueError):
            raise DecodeError("buffer is not C-contiguous") from None
    return view


cdef str _utf8_name(const unsigned char* p, Py_ssize_t length, str name):
    try:
        return PyUnicode_DecodeUTF8(<char*>p, length, NULL)
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name} is not valid UTF-8") from exc


cdef Envelope _parse_one(object view, const unsigned char* p, Py_ssize_t* at, Py_ssize_t n,
                         Limits limits):
    cdef Py_ssize_t pos = at[0], size, start
    cdef const unsigned char* h = p + pos
    cdef uint16_t flags, subject_len
    cdef uint32_t body_len
    cdef unsigned int src_len, dst_len
    if n - pos < _HDR:
        raise DecodeError(f"truncated header at offset {pos}: {n - pos} of {_HDR} bytes")
    if h[0] != _VER:
        raise DecodeError(
            f"unsupported envelope version {h[0]} at offset {pos} (expected {_VER})")
    memcpy(&flags, h + 2, 2)
    memcpy(&body_len, h + 4, 4)
    src_len, dst_len = h[40], h[41]
    memcpy(&subject_len, h + 42, 2)
    if src_len > <unsigned int>limits.max_name_len:
        raise DecodeError(
            f"src name of {src_len} bytes exceeds max_name_len {limits.max_name_len}")
    if dst_len > <unsigned int>limits.max_name_len:
        raise DecodeError(
            f"dst name of {dst_len} bytes exceeds max_name_len {limits.max_name_len}")
    if subject_len > limits.max_subject_len:
        raise DecodeError(
            f"subject of {subject_len} bytes exceeds max_subject_len {limits.max_subject_len}")
    if body_len > <uint32_t>limits.max_body_bytes:
        raise DecodeError(
            f"body of {body_len} bytes exceeds max_body_bytes {limits.max_body_bytes}")
    size = _HDR + src_len + dst_len + subject_len + <Py_ssize_t>body_len
    if size > n - pos:
        raise DecodeError(f"envelope at offset {pos} needs {size} bytes, {n - pos} remain")
    cdef Envelope env = Envelope.__new__(Envelope)
    env.version, env.kind, env.flags = _VER, h[1], flags
    memcpy(&env.msg_id, h + 8, 8)
    memcpy(&env.corr_id, h + 16, 8)
    memcpy(&env.deadline_us, h + 24, 8)
    memcpy(&env.trace_id, h + 32, 8)
    start = pos + _HDR
    env.src = _utf8_name(p + start, src_len, "src")
    start += src_len
    env.dst = _utf8_name(p + start, dst_len, "dst")
    start += dst_len
    env.subject = _utf8_name(p + start, subject_len, "subject")
    start += subject_len
    env.body = view[start:start + body_len]
    at[0] = pos + size
    return env


cdef object _frame_view(object buf, Limits limits):
    view = _byte_view(buf)
    cdef Py_ssize_t n = PyMemoryView_GET_BUFFER(view).len
    if n == 0:
        raise DecodeError("frame is empty")
    if n > limits.max_frame_bytes:
        raise DecodeError(f"frame of {n} bytes exceeds max_frame_bytes {limits.max_frame_bytes}")
    return view


def decode_frame(buf, Limits limits not None=DEFAULT_LIMITS):
    """Every envelope in a frame, bodies left packed (memoryview slices of ``buf``)."""
    view = _frame_view(buf, limits)
    cdef Py_buffer* b = PyMemoryView_GET_BUFFER(view)
    cdef Py_ssize_t pos = 0, count = 0
    cdef list envelopes = []
    while pos < b.len:
        if count == limits.max_envelopes:
            raise DecodeError(
                f"frame holds more than max_envelopes {limits.max_envelopes} envelopes")
        envelopes.append(_parse_one(view, <const unsigned char*>b.buf, &pos, b.len, limits))
        count += 1
    return envelopes


def decode(buf, Limits limits not None=DEFAULT_LIMITS):
    """The one envelope in ``buf`` and its unpacked body."""
    view = _frame_view(buf, limits)
    cdef Py_buffer* b = PyMemoryView_GET_BUFFER(view)
    cdef Py_ssize_t pos = 0
    cdef Envelope env = _parse_one(view, <const unsigned char*>b.buf, &pos, b.len, limits)
    if pos != b.len:
        raise DecodeError(f"frame holds more than one envelope ({b.len - pos} bytes follow)")
    cdef Py_buffer* body = PyMemoryView_GET_BUFFER(env.body)
    return env, _load(env.body, <const unsigned char*>body.buf, body.len, limits)


def load_body(raw, Limits limits not None=DEFAULT_LIMITS):
    """Unpack a msgpack body from any buffer after the bounded pre-scan."""
    cdef Py_buffer b
    if PyBytes_CheckExact(raw):
        return _load(raw, <const unsigned char*>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw),
                     limits)
    # A flat byte buffer (a body memoryview from decode_frame) is read in place; anything
    # else is first cast to unsigned bytes, as the pure twin does.
    try:
        PyObject_GetBuffer(raw, &b, PyBUF_RECORDS_RO)
    except (TypeError, ValueError, BufferError):
        pass  # _byte_view says why
    else:
        try:
            if b.itemsize == 1 and PyBuffer_IsContiguous(&b, b'C'):
                return _load(raw, <const unsigned char*>b.buf, b.len, limits)
        finally:
            PyBuffer_Release(&b)
    view = _byte_view(raw)
    cdef Py_buffer* v = PyMemoryView_GET_BUFFER(view)
    return _load(view, <const unsigned char*>v.buf, v.len, limits)


cdef object _unpackb = msgpack.unpackb


cdef object _load(object raw, const unsigned char* p, Py_ssize_t n, Limits limits):
    cdef Py_ssize_t where = 0, what = 0
    cdef int error
    if n > limits.max_body_bytes:
        raise DecodeError(f"body of {n} bytes exceeds max_body_bytes {limits.max_body_bytes}")
    if n >= _NOGIL_BYTES:
        with nogil:
            error = _prescan(p, n, limits, &where, &what)
    else:
        error = _prescan(p, n, limits, &where, &what)
    if error:
        raise DecodeError(_SCAN_MESSAGES[error].format(where=where, what=what, lim=limits))
    try:
        if n <= limits._msgpack_bound:  # msgpack's defaults (raw=False, use_list=True,
            return _unpackb(raw)         # strict_map_key=True; lengths <= n) are as tight
        return _unpackb(raw, raw=False, use_list=True, strict_map_key=True,
                        max_str_len=limits.max_str_len, max_bin_len=limits.max_bin_len,
                        max_array_len=limits.max_array_len, max_map_len=limits.max_map_len)
    except Exception as exc:  # whatever msgpack raises, the caller sees one error type
        raise DecodeError(f"body does not unpack: {type(exc).__name__}: {exc}") from exc


# Token classes of the msgpack first byte, with their argument: a SCALAR's payload size, or
# the size of the length field of a STR/BIN/ARRAY/MAP (0: the length is in the byte).
cdef enum:
    _SCALAR, _STR, _BIN, _ARRAY, _MAP, _EXT, _RESERVED
_CLASSES_C0_DF = "SRSSBBBEEESSSSSSSSSSEEEEETTTAAMM"  # c0..df: bool, bin, ext, numbers, str...
_ARGS_C0_DF = "00001240004812481248000001242424"
_CLASS = {"S": _SCALAR, "T": _STR, "B": _BIN, "A": _ARRAY, "M": _MAP, "E": _EXT, "R": _RESERVED}
cdef unsigned char _KIND[256]
cdef unsigned char _ARG[256]


def _token_table():
    for byte in range(256):
        if byte <= 0x7F or byte >= 0xE0:
            _KIND[byte], _ARG[byte] = _SCALAR, 0  # positive and negative fixint
        elif byte <= 0x8F:
            _KIND[byte], _ARG[byte] = _MAP, 0
        elif byte <= 0x9F:
            _KIND[byte], _ARG[byte] = _ARRAY, 0
        elif byte <= 0xBF:
            _KIND[byte], _ARG[byte] = _STR, 0
        else:
            _KIND[byte] = _CLASS[_CLASSES_C0_DF[byte - 0xC0]]
            _ARG[byte] = int(_ARGS_C0_DF[byte - 0xC0])


_token_table()

# What the pre-scan found, as (code, where, what); formatted only when it is raised.
cdef enum:
    _E_EMPTY = 1, _E_TRUNC, _E_EXT, _E_RESERVED, _E_STR, _E_BIN, _E_PAST, _E_DEPTH
    _E_ARRAY, _E_MAP, _E_TRAILING, _E_CONTAINERS
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


cdef int _prescan(const unsigned char* p, Py_ssize_t n, Limits limits,
                  Py_ssize_t* where, Py_ssize_t* what) noexcept nogil:
    """Walk the msgpack tokens of ``p[:n]`` once, iteratively: 0 or an _E_ code.

    ``stack`` holds, per open array or map, how many items it still expects (2 per map pair).
    """
    cdef Py_ssize_t stack[_MAX_DEPTH + 1]
    cdef Py_ssize_t sp = 0, pos = 0, length, items
    cdef int max_depth = limits.max_depth, containers_left = limits.max_containers, kind, arg, i
    cdef unsigned char byte
    if n == 0:
        return _E_EMPTY
    while True:
        where[0] = pos
        if pos >= n:
            return _E_TRUNC
        byte = p[pos]
        pos += 1
        kind, arg = _KIND[byte], _ARG[byte]
        if kind == _SCALAR:
            if n - pos < arg:
                return _E_TRUNC
            pos += arg
        elif kind == _EXT:
            what[0] = byte
            return _E_EXT
        elif kind == _RESERVED:
            return _E_RESERVED
        else:
            if arg == 0:
                length = byte & (0x1F if kind == _STR else 0x0F)
            else:
                if n - pos < arg:
                    return _E_TRUNC
                length = 0  # big-endian, 1, 2 or 4 bytes
                for i in range(arg):
                    length = (length << 8) | p[pos + i]
                pos += arg
            what[0] = length
            if kind == _STR or kind == _BIN:
                if kind == _STR and length > limits.max_str_len:
                    return _E_STR
                if kind == _BIN and length > limits.max_bin_len:
                    return _E_BIN
                if length > n - pos:
                    return _E_PAST
                pos += length
            else:
                if sp >= max_depth:
                    return _E_DEPTH
                if not containers_left:
                    return _E_CONTAINERS
                containers_left -= 1
                if kind == _ARRAY:
                    if length > limits.max_array_len:
                        return _E_ARRAY
                    items = length
                else:
                    if length > limits.max_map_len:
                        return _E_MAP
                    items = 2 * length
                if items > n - pos:  # every item takes at least one byte
                    return _E_PAST
                if items:
                    stack[sp] = items
                    sp += 1
                    continue
        # one object is complete: close every container it completes
        while sp:
            stack[sp - 1] -= 1
            if stack[sp - 1]:
                break
            sp -= 1
        if not sp:
            break
    if pos != n:
        where[0], what[0] = pos, n - pos
        return _E_TRAILING
    return 0
