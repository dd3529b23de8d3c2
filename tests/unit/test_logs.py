"""Structured logs (:mod:`mesh.observe.logs`): kv and JSON lines parse back, the trace id comes
from the context at log time (also in asyncio tasks), extra fields and exceptions are kept."""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest

from mesh.observe.logs import (JsonFormatter, KeyValueFormatter, TextFormatter, configure_logging,
                               current_trace_id, install_record_factory, trace_id, trace_scope)

_KV_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s|$)')


def parse_kv(line: str) -> dict[str, str]:
    """logfmt -> dict; fails the test on anything that is not key=value pairs."""
    assert "\n" not in line
    out, pos = {}, 0
    for m in _KV_PAIR.finditer(line):
        assert m.start() == pos, f"junk at {pos} in {line!r}"
        key, value = m.groups()
        out[key] = json.loads(value) if value.startswith('"') else value
        pos = m.end()
    assert pos == len(line), f"junk at {pos} in {line!r}"
    return out


class Lines:
    """A logger of its own whose records are formatted into a list of lines."""

    def __init__(self, formatter: logging.Formatter, name: str = "mesh.test") -> None:
        install_record_factory()
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)
        self.log = logging.getLogger(name)
        self.log.handlers[:] = [self.handler]
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def kv():
    out = Lines(KeyValueFormatter("n1"), "mesh.test.kv")
    yield out
    out.log.handlers.clear()


@pytest.fixture
def js():
    out = Lines(JsonFormatter("n1"), "mesh.test.json")
    yield out
    out.log.handlers.clear()


def test_kv_line_parses_back_with_the_standard_fields(kv):
    kv.log.info("joined the mesh after %d tries", 3)
    kv.log.warning("bare")
    first, second = (parse_kv(line) for line in kv.lines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert {k: first[k] for k in ("level", "logger", "msg", "node")} == {
        "level": "info", "logger": "mesh.test.kv", "msg": "joined the mesh after 3 tries", "node": "n1"}
    assert "trace_id" not in first
    assert kv.lines()[1].split()[1:] == ["level=warning", "logger=mesh.test.kv", "msg=bare", "node=n1"]
    assert second["msg"] == "bare"


def test_json_line_parses_back_with_the_same_fields(js):
    js.log.error("disk %s", "full", extra={"free_bytes": 0, "ratio": 0.5, "ok": False, "none": None})
    (line,) = js.lines()
    obj = json.loads(line)
    assert list(obj)[:5] == ["ts", "level", "logger", "msg", "node"]
    assert obj["level"] == "error" and obj["msg"] == "disk full" and obj["node"] == "n1"
    assert (obj["free_bytes"], obj["ratio"], obj["ok"], obj["none"]) == (0, 0.5, False, None)


def test_trace_id_comes_from_the_context_var(kv):
    assert current_trace_id() == 0
    with trace_scope(0x1234ABCD) as tid:
        assert tid == current_trace_id() == 0x1234ABCD
        kv.log.info("inside")
        with trace_scope(7):
            kv.log.info("nested")
        kv.log.info("inside again")
    kv.log.info("outside")
    got = [parse_kv(line).get("trace_id") for line in kv.lines()]
    assert got == ["000000001234abcd", "0000000000000007", "000000001234abcd", None]
    assert current_trace_id() == 0


def test_trace_id_is_taken_when_the_record_is_made_not_when_formatted():
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    install_record_factory()
    log = logging.getLogger("mesh.test.later")
    log.handlers[:] = [Keep()]
    log.propagate = False
    try:
        with trace_scope(0xFEED):
            log.warning("queued", extra={"peer": "n2"})
        with trace_scope(0xBAD):   # another trace is current when the record is finally formatted
            line = KeyValueFormatter().format(records[0])
            obj = json.loads(JsonFormatter().format(records[0]))
    finally:
        log.handlers.clear()
    assert parse_kv(line)["trace_id"] == obj["trace_id"] == "000000000000feed"
    assert "node" not in obj


def test_trace_id_follows_tasks_across_await(js):
    async def worker(name: str, go: asyncio.Event) -> None:
        js.log.info("start", extra={"task": name})
        await go.wait()           # the scope that started us has ended by now
        await asyncio.sleep(0)
        js.log.info("after await", extra={"task": name})

    async def main() -> None:
        go = asyncio.Event()
        with trace_scope(0xA):
            a = asyncio.create_task(worker("a", go))
        with trace_scope(0xB):
            b = asyncio.create_task(worker("b", go))
        c = asyncio.create_task(worker("c", go))
        await asyncio.sleep(0)
        go.set()
        await asyncio.gather(a, b, c)
        js.log.info("main")

    asyncio.run(main())
    seen = [(o["task"] if "task" in o else "main", o.get("trace_id")) for o in map(json.loads, js.lines())]
    assert sorted(seen, key=str) == sorted([("a", "000000000000000a")] * 2 + [("b", "000000000000000b")] * 2
                                           + [("c", None)] * 2 + [("main", None)], key=str)


def test_extra_fields_are_written_and_quoted_when_needed(kv, js):
    extra = {"peer": "n2", "reason": 'said "no" = twice', "path": "C:\\data", "lines": "a\nb", "empty": "",
             "count": 3, "flag": True, "node": "other", "weird key!": "x", "sep": "a\u2028b"}
    for out in (kv, js):
        out.log.info("joined", extra=extra)
    (kv_line,) = kv.lines()
    (js_line,) = js.lines()
    assert ' peer=n2 ' in kv_line and ' count=3 flag=true ' in kv_line
    fields = parse_kv(kv_line)
    assert (fields["reason"], fields["path"], fields["lines"], fields["empty"]) == (
        'said "no" = twice', "C:\\data", "a\nb", "")
    # a field named like a standard one does not replace it
    assert (fields["node"], fields["extra_node"], fields["weird_key_"]) == ("n1", "other", "x")
    obj = json.loads(js_line)
    assert (obj["node"], obj["extra_node"], obj["reason"], obj["lines"], obj["count"]) == (
        "n1", "other", 'said "no" = twice', "a\nb", 3)
    assert fields["sep"] == obj["sep"] == "a\u2028b"   # escaped: the record stays one line


def test_exceptions_go_in_one_field(kv, js):
    for out in (kv, js):
        try:
            raise ValueError("boom")
        except ValueError:
            out.log.exception("handler failed", extra={"agent": "calc-1"})
    (kv_line,) = kv.lines()
    (js_line,) = js.lines()
    exc = parse_kv(kv_line)["exc"]
    assert exc.startswith("Traceback (most recent call last):") and exc.endswith("ValueError: boom")
    assert parse_kv(kv_line)["agent"] == "calc-1"
    obj = json.loads(js_line)
    assert obj["level"] == "error" and obj["exc"].endswith("ValueError: boom") and obj["agent"] == "calc-1"


def test_json_survives_values_json_cannot_hold(js):
    js.log.info("odd", extra={"nan": float("nan"), "deep": [float("inf")], "obj": object(), "keys": {(1, 2): 3}})
    (line,) = js.lines()
    obj = json.loads(line)
    assert obj["msg"] == "odd" and obj["nan"] == "nan" and "inf" in obj["deep"]


def test_text_format_is_the_classic_line_plus_fields():
    out = Lines(TextFormatter("n1"), "mesh.test.text")
    try:
        out.log.info("plain")
        with trace_scope(0x10):
            out.log.info("traced", extra={"peer": "n 2"})
    finally:
        out.log.handlers.clear()
    plain, traced = out.lines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO mesh\.test\.text: plain", plain)
    assert traced.endswith('INFO mesh.test.text: traced trace_id=0000000000000010 peer="n 2"')


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.captureWarnings(False)


def test_configure_logging_installs_one_root_handler(root_logging):
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", "kv", "n9", stream=first)
    handler = configure_logging("warning", "json", "n9", stream=second)
    ours = [h for h in root_logging.handlers if type(h).__name__ == "_MeshHandler"]
    assert ours == [handler]
    log = logging.getLogger("mesh.test.root")
    log.info("dropped: below warning")
    with trace_scope(99):
        log.warning("kept", extra={"peer": "n2"})
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    assert json.loads(line) | {"ts": None} == {"ts": None, "level": "warning", "logger": "mesh.test.root",
                                               "msg": "kept", "trace_id": "0000000000000063", "node": "n9",
                                               "peer": "n2"}
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging("loud", "kv")


def test_extra_named_trace_id_is_refused_by_logging(kv):
    # the record already carries trace_id; logging refuses to overwrite a record attribute
    with pytest.raises(KeyError):
        kv.log.info("x", extra={"trace_id": 1})
    assert trace_id.get() == 0
