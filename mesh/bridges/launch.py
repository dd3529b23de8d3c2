"""What the bridge command lines share: their mesh options, their logging, and the small
mesh node a bridge process runs to reach the mesh.

Theory of operation. A bridge process is a member of the mesh like ``meshctl``, only
longer-lived: it starts a :class:`mesh.Node` with no agents of its own, bound to ``--bind``
(loopback with a free port by default), joins through ``--join`` (repeatable, or
``$MESH_JOIN``), serves until SIGINT/SIGTERM (or, over stdio, until the client closes the
pipe), then leaves the mesh gracefully. Logs go to standard error: over stdio, standard output
belongs to the protocol.

Security as ``meshctl`` does it: on a mesh with keys the bridge needs a key the nodes trust
(``--keys FILE`` or ``$MESH_KEYS``) and the cluster's public keys (``--trust PATH`` or
``$MESH_TRUST``); it joins as ``<key id>~<kind>-bridge-<pid>-<random>``, so the ACL sees it as
that key's holder and decides which methods the outside world reaches through it. Without keys
it speaks plaintext, which the nodes allow on loopback only; its id is then
``<kind>-bridge-<pid>-<random>``.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import secrets
import signal
import sys
from typing import Any, AsyncIterator, Awaitable, Callable

ENV_JOIN = "MESH_JOIN"
ENV_KEYS = "MESH_KEYS"
ENV_TRUST = "MESH_TRUST"
DEFAULT_BIND = "tcp://127.0.0.1:*"

log = logging.getLogger(__name__)


def add_mesh_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--join", action="append", metavar="ADDRESS", default=None,
                   help=f"address of a mesh node to join through (repeatable; default ${ENV_JOIN})")
    p.add_argument("--expose", action="append", metavar="AGENT_OR_CAP[.METHOD]", required=True,
                   help="an agent name or a capability (call_any), optionally with .METHOD to expose "
                        "that method only (repeatable)")
    p.add_argument("--bind", metavar="ENDPOINT", default=DEFAULT_BIND,
                   help=f"endpoint the bridge's node binds; peers must reach it (default {DEFAULT_BIND})")
    p.add_argument("--keys", metavar="FILE", default=None,
                   help=f"the bridge's key file (a .key the nodes trust; default ${ENV_KEYS}); none: plaintext")
    p.add_argument("--trust", metavar="PATH", default=None,
                   help=f"folder or file of the cluster's public keys (default ${ENV_TRUST})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long one call into the mesh may take (default 30)")
    p.add_argument("--join-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the mesh when joining (default 10)")
    p.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                   help="log level; logs go to standard error (default warning)")


def join_addresses(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The seeds to join through; also settles ``args.keys``/``args.trust`` from the
    environment (a usage error when keys come without trust)."""
    join = args.join or [a for a in re.split(r"[\s,]+", os.environ.get(ENV_JOIN, "")) if a]
    if not join:
        parser.error(f"no mesh to join: give --join ADDRESS or set ${ENV_JOIN}")
    args.keys = args.keys or os.environ.get(ENV_KEYS) or None
    args.trust = args.trust or os.environ.get(ENV_TRUST) or None
    if args.keys and not args.trust:
        parser.error(f"--keys needs --trust (or ${ENV_TRUST}): the cluster's public keys")
    return join


def configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@contextlib.asynccontextmanager
async def bridge_node(kind: str, args: argparse.Namespace, join: list[str]) -> AsyncIterator[Any]:
    """A started node that joined the mesh; it leaves on exit."""
    import mesh

    name = f"{kind}-bridge-{os.getpid()}-{secrets.token_hex(2)}"
    security: dict[str, Any]
    if args.keys:
        from mesh.security.keys import load_keys

        keys = load_keys(args.keys)
        security, name = {"keys": keys, "trust": args.trust}, f"{keys.node_id}~{name}"
    else:
        # the nodes of a plaintext mesh warned loudly already; a bridge need not repeat it
        logging.getLogger("mesh.security.settings").setLevel(logging.ERROR)
        security = {"insecure": True}
    node = mesh.Node(name, bind=args.bind, seeds=join, default_timeout=args.timeout,
                     join_timeout=args.join_timeout, drain_timeout=2.0, hangup_timeout=0.5, **security)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM (the loop's handlers replace Python's)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(work: Awaitable[Any], stop: asyncio.Event) -> None:
    """Run ``work`` until it ends or ``stop`` is set, whichever comes first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, stopper):
            if not t.done():
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()          # type: ignore[misc]


def run_main(main: Callable[[], Awaitable[int]]) -> int:
    """Run the CLI's coroutine on uvloop where there is one (as nodes do)."""
    from mesh.errors import MeshError
    from mesh.security.settings import InsecureConfig

    try:
        try:
            import uvloop
        except ImportError:             # no uvloop on Windows
            return asyncio.run(main())
        return uvloop.run(main())
    except (MeshError, InsecureConfig) as exc:     # could not join: said on stderr, no traceback
        log.error("%s: %s", type(exc).__name__, exc)
        return 1
    except KeyboardInterrupt:
        return 130
