"""The trace id of an envelope reaches the logs: a call that crosses two nodes and calls a
third logs the same trace id on each hop, in key=value and JSON lines, and calls made outside
any trace start new ones."""
from __future__ import annotations

import io
import json
import logging

import pytest

import mesh
from mesh.observe.logs import KeyValueFormatter, install_record_factory, make_formatter
from tests.conftest import run_async

pytestmark = pytest.mark.integration
log = logging.getLogger("tests.trace")


class Front(mesh.Agent):
    @mesh.rpc
    async def order(self, qty):
        log.info("front got an order", extra={"qty": qty})
        return await self.call("back", "fill", qty)


class Back(mesh.Agent):
    @mesh.rpc
    def fill(self, qty):
        log.info("back filled")
        return qty


def test_one_trace_id_follows_a_call_across_nodes():
    install_record_factory()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    async def main():
        async with mesh.Node("a", insecure=True) as a:
            b = mesh.Node("b", seeds=[a.address], insecure=True)
            c = mesh.Node("c", seeds=[a.address], insecure=True)
            b.add(Front("front"))
            c.add(Back("back"))
            await b.start()
            await c.start()
            try:
                while not {"front", "back"} <= set(a.directory()) or "back" not in b.directory():
                    await __import__("asyncio").sleep(0.02)
                for qty in (1, 2):
                    assert await a.call("front", "order", qty) == qty
            finally:
                await c.stop()
                await b.stop()
    try:
        run_async(main)
    finally:
        log.removeHandler(handler)
    lines = [dict(f.split("=", 1) for f in line.replace('"front got an order"', "x").replace('"back filled"', "x")
                  .split(" ")) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4, stream.getvalue()
    traces = [ln.get("trace_id") for ln in lines]
    assert all(t and int(t, 16) for t in traces), traces
    assert traces[0] == traces[1] and traces[2] == traces[3]      # one trace per call, across 3 nodes
    assert traces[0] != traces[2]                                  # a new call, a new trace
    assert lines[0]["qty"] == "1"

    record = logging.LogRecord("x", logging.INFO, "f", 1, "m", (), None)
    record.trace_id = int(traces[0], 16)
    assert json.loads(make_formatter("json").format(record))["trace_id"] == traces[0]
