"""A mesh client a test drives over stdin/stdout: ``python -m tests.integration.stdio_client``.

Theory of operation
-------------------
A test whose nodes live in other network namespaces cannot call them from its own process,
so it starts this program inside a namespace (``ip netns exec``) and sends it requests, one
JSON object per line; each gets one JSON line back, in order. The client is a
:class:`mesh.Node` with no agents of its own, joined under an operator key (id
``<key id>~<name>``, as meshctl does), so it shows the mesh exactly what any member would.

Requests (``timeout`` in seconds bounds the mesh operation; answers carry ``elapsed_s``)::

    {"op": "call", "agent": "calc-n1", "method": "add", "args": [1, 2], "timeout": 5}
    {"op": "put", "key": "k", "value": 1, "timeout": 5}           -> the write's revision
    {"op": "get", "key": "k", "timeout": 5}                       -> the value (linearizable)
    {"op": "members"}                                             -> this client's own view

and the answer is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "<class>",
"message": "..."}`` for a mesh error. The program prints ``ready <id> <address>`` first and
stops (leaving the mesh) at end of input. Logs go to standard error.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

import mesh
from mesh.errors import MeshError, RemoteError
from mesh.security.keys import load_keys

log = logging.getLogger("tests.integration.stdio_client")

_MAX_LINE_BYTES = 1 << 20      # a request larger than this is refused, not buffered


async def handle(node: mesh.Node, request: dict[str, Any]) -> Any:
    op = request.get("op")
    timeout = float(request.get("timeout", 5.0))
    if op == "call":
        return await node.call(request["agent"], request["method"], *request.get("args", ()), timeout=timeout)
    if op == "put":
        return await node.kv.put(request["key"], request["value"], timeout=timeout)
    if op == "get":
        return await node.kv.get(request["key"], timeout=timeout)
    if op == "members":
        return node.members()
    raise ValueError(f"unknown op {op!r}")


async def answer(node: mesh.Node, line: bytes) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        out: dict[str, Any] = {"ok": True, "result": await handle(node, json.loads(line))}
    except RemoteError as exc:
        out = {"ok": False, "error": "RemoteError", "remote_type": exc.type, "message": str(exc)}
    except MeshError as exc:
        out = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    except (ValueError, KeyError, TypeError) as exc:      # a malformed request: the test's bug
        out = {"ok": False, "error": "BadRequest", "message": f"{type(exc).__name__}: {exc}"}
    out["elapsed_s"] = round(time.monotonic() - t0, 4)
    return out


async def serve(args: argparse.Namespace) -> None:
    keys = load_keys(args.keys)
    node = mesh.Node(f"{keys.node_id}~{args.name}", bind=args.bind, seeds=args.join, keys=keys,
                     trust=args.trust, join_timeout=args.join_timeout, drain_timeout=1.0, hangup_timeout=0.5)
    await node.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_MAX_LINE_BYTES, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sys.stdin)
    print(f"ready {node.node_id} {node.address}", flush=True)
    try:
        while line := await reader.readline():
            print(json.dumps(await answer(node, line), default=repr), flush=True)
    finally:
        await node.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.integration.stdio_client", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="suffix of the node id (<key id>~NAME)")
    p.add_argument("--keys", required=True, help="a .key file the nodes trust")
    p.add_argument("--trust", required=True, help="folder of the cluster's public keys")
    p.add_argument("--bind", required=True, help="ZeroMQ endpoint to bind (port * = any)")
    p.add_argument("--join", action="append", required=True, help="seed, ID@ADDRESS (repeatable)")
    p.add_argument("--join-timeout", type=float, default=20.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
