"""Type stub of the compiled envelope codec (mesh/_core/codec.pyx); see its docstring."""
from __future__ import annotations

from typing import Any, Final

from typing_extensions import Buffer

PUBLIC_API: list[str]
VERSION: Final[int]
HEADER_SIZE: Final[int]

class Limits:
    @property
    def max_frame_bytes(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_str_len(self) -> int: ...
    @property
    def max_bin_len(self) -> int: ...
    @property
    def max_array_len(self) -> int: ...
    @property
    def max_map_len(self) -> int: ...
    @property
    def max_envelopes(self) -> int: ...
    @property
    def max_name_len(self) -> int: ...
    @property
    def max_subject_len(self) -> int: ...
    @property
    def max_containers(self) -> int: ...
    def __init__(
        self,
        *,
        max_frame_bytes: int = ...,
        max_body_bytes: int = ...,
        max_depth: int = ...,
        max_str_len: int = ...,
        max_bin_len: int = ...,
        max_array_len: int = ...,
        max_map_len: int = ...,
        max_envelopes: int = ...,
        max_name_len: int = ...,
        max_subject_len: int = ...,
        max_containers: int = ...,
    ) -> None: ...

DEFAULT_LIMITS: Final[Limits]

class Envelope:
    @property
    def version(self) -> int: ...
    @property
    def kind(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def msg_id(self) -> int: ...
    @property
    def corr_id(self) -> int: ...
    @property
    def deadline_us(self) -> int: ...
    @property
    def trace_id(self) -> int: ...
    @property
    def src(self) -> str: ...
    @property
    def dst(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> memoryview: ...
    def __init__(
        self,
        version: int,
        kind: int,
        flags: int,
        msg_id: int,
        corr_id: int,
        deadline_us: int,
        trace_id: int,
        src: str,
        dst: str,
        subject: str,
        body: Buffer,
    ) -> None: ...
    def as_tuple(
        self,
    ) -> tuple[int, int, int, int, int, int, int, str, str, str, bytes]: ...

def pack_body(obj: object) -> bytes: ...
def load_body(raw: Buffer, limits: Limits = ...) -> Any: ...
def encode(
    kind: int,
    msg_id: int,
    corr_id: int,
    src: str,
    dst: str,
    subject: str,
    body: object,
    flags: int = 0,
    deadline_us: int = 0,
    trace_id: int = 0,
) -> bytes: ...
def encode_raw(
    kind: int,
    msg_id: int,
    corr_id: int,
    src: str,
    dst: str,
    subject: str,
    body_raw: Buffer,
    flags: int = 0,
    deadline_us: int = 0,
    trace_id: int = 0,
) -> bytes: ...
def decode_frame(buf: Buffer, limits: Limits = ...) -> list[Envelope]: ...
def decode(buf: Buffer, limits: Limits = ...) -> tuple[Envelope, Any]: ...
