"""Structured logs: plain text, ``key=value`` (logfmt) or JSON lines, carrying the trace id.

Theory of operation. A node logs through the stdlib: one logger per module, records
formatted by one handler on the root logger that :func:`configure_logging` installs (and
replaces when called again). Three formats, chosen by ``--log-format``:

* ``text`` (default): ``2024-05-01 12:00:00,123 INFO mesh.node: message``, the format nodes
  always had; fields (trace id, extras) are appended as ``key=value`` only when present.
* ``kv`` (logfmt): ``ts=2024-05-01T12:00:00.123Z level=info logger=mesh.node msg="message"
  trace_id=00000000000004d2 node=n1 peer=n2``. A value is written bare when it has no space,
  quote, ``=``, backslash or control character, else quoted and escaped like a JSON string,
  so one record is always one line (tracebacks go in ``exc="..."``).
* ``json``: one JSON object per line with the same fields (``"exc"`` a string).

The trace id of the envelope being handled lives in the :data:`trace_id` context variable
(0: none). The runtime sets it around a handler with :func:`trace_scope`; asyncio copies the
context into tasks created inside the scope, so work a handler spawns keeps its trace id
across ``await``. The id is read when the record is *made* (a log record factory puts it on
the record as the int attribute ``trace_id``), not when it is formatted, so a record handed to
another thread or queue still carries the trace that produced it. Formatters write it as 16
hex digits.

Fields a caller passes with ``log.info("joined", extra={"peer": "n2"})`` are written after the
standard ones; an extra named like a standard field is written as ``extra_<name>``.
"""
from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from contextvars import ContextVar, Token
from typing import IO, Any

LOG_FORMATS = ("text", "kv", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

trace_id: ContextVar[int] = ContextVar("trace_id", default=0)
"""Trace id of the envelope whose handler is running in this context; 0 = none."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "trace_id", "taskName"}
_BARE_VALUE = re.compile(r'[^\s"=\\\x00-\x1f\x7f]+')
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.\-]")
# Characters that str.splitlines() (and some log shippers) break lines at, yet json.dumps
# leaves raw with ensure_ascii=False; escaped so that a record stays one line.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def current_trace_id() -> int:
    """The trace id of the current context (0: none)."""
    return trace_id.get()


class trace_scope:
    """``with trace_scope(tid): ...`` sets :data:`trace_id` for the block (and for tasks
    created inside it), then restores the previous value. A class rather than a generator
    context manager: the runtime enters one per handled message."""

    __slots__ = ("_trace_id", "_token")

    def __init__(self, trace_id: int) -> None:
        self._trace_id = trace_id
        self._token: Token[int] | None = None

    def __enter__(self) -> int:
        self._token = trace_id.set(self._trace_id)
        return self._trace_id

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            trace_id.reset(self._token)
            self._token = None


def install_record_factory() -> None:
    """Make every new LogRecord carry ``trace_id`` (int) read from the context at creation.
    Idempotent; wraps whatever factory is installed."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_mesh_trace_id", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.trace_id = trace_id.get()
        return record

    factory._mesh_trace_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _record_trace_id(record: logging.LogRecord) -> int:
    tid = getattr(record, "trace_id", None)
    # A record made before the factory was installed: the context now is the best we have.
    return trace_id.get() if tid is None else tid


def _extras(record: logging.LogRecord) -> list[tuple[str, Any]]:
    return [(k, v) for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and not k.startswith("_")]


class _FieldsFormatter(logging.Formatter):
    """Turns a record into an ordered list of (key, value) fields; subclasses write them."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__()
        self.node_id = node_id

    def fields(self, record: logging.LogRecord) -> list[tuple[str, Any]]:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: list[tuple[str, Any]] = [("ts", ts), ("level", record.levelname.lower()),
                                      ("logger", record.name), ("msg", record.getMessage())]
        tid = _record_trace_id(record)
        if tid:
            out.append(("trace_id", f"{tid:016x}"))
        if self.node_id is not None:
            out.append(("node", self.node_id))
        taken = {k for k, _ in out} | {"exc", "stack"}
        for key, value in _extras(record):
            out.append((f"extra_{key}" if key in taken else key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out.append(("exc", record.exc_text))
        if record.stack_info:
            out.append(("stack", self.formatStack(record.stack_info)))
        return out


class KeyValueFormatter(_FieldsFormatter):
    """logfmt: ``key=value`` pairs separated by spaces, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{_kv_key(k)}={_kv_value(v)}" for k, v in self.fields(record))


class JsonFormatter(_FieldsFormatter):
    """One JSON object per record, one record per line."""

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        try:
            line = json.dumps({k: _json_value(v) for k, v in fields}, ensure_ascii=False, default=str,
                              allow_nan=False)
        except (TypeError, ValueError):   # NaN deep in an extra, a cycle, odd dict keys
            line = json.dumps({k: v if isinstance(v, str) else repr(v) for k, v in fields}, ensure_ascii=False)
        return _escape_line_breaks(line)


class TextFormatter(logging.Formatter):
    """The classic line, plus `` key=value`` fields (trace id, extras) when there are any."""

    def __init__(self, node_id: str | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self.node_id = node_id   # one node per process: not repeated on every text line

    def format(self, record: logging.LogRecord) -> str:
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        tid = _record_trace_id(record)
        extra = ([("trace_id", f"{tid:016x}")] if tid else []) + _extras(record)
        if extra:
            line += " " + " ".join(f"{_kv_key(k)}={_kv_value(v)}" for k, v in extra)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


_FORMATTERS: dict[str, type[logging.Formatter]] = {
    "text": TextFormatter, "kv": KeyValueFormatter, "json": JsonFormatter}


class _MeshHandler(logging.StreamHandler):
    """The root handler configure_logging owns (and replaces on the next call)."""


def make_formatter(fmt: str, node_id: str | None = None) -> logging.Formatter:
    """The formatter for ``fmt`` (one of :data:`LOG_FORMATS`)."""
    if fmt not in _FORMATTERS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    return _FORMATTERS[fmt](node_id)


def configure_logging(level: str, fmt: str, node_id: str | None = None,
                      stream: IO[str] | None = None) -> logging.Handler:
    """Log records at ``level`` and above from every logger to ``stream`` (None: ``sys.stderr``
    as it is now) in format ``fmt``, tagging structured lines with ``node=node_id``.

    Replaces the handler an earlier call installed and leaves other root handlers alone.
    Python warnings are routed through logging too, so that with ``json`` every line on the
    stream is a JSON object. Returns the handler."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    formatter = make_formatter(fmt, node_id)
    install_record_factory()
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _MeshHandler)]:
        root.removeHandler(old)
    handler = _MeshHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return handler


def _kv_key(key: str) -> str:
    return _BAD_KEY_CHARS.sub("_", key) or "_"


def _kv_value(value: Any) -> str:
    if value is None:
        text = "null"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = value if isinstance(value, str) else str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    return _escape_line_breaks(json.dumps(text, ensure_ascii=False))


def _json_value(value: Any) -> Any:
    # allow_nan=False would raise on these; JSON has no NaN, so they travel as strings
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _escape_line_breaks(text: str) -> str:
    for raw, escaped in _LINE_BREAKS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    return text
