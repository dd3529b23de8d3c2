"""A node process that serves the live web page, for the browser test (independent of the
node CLI's flags): ``python -m tests.integration.web_node --id n1 [--join ADDR] [--data-dir D
--raft-voters a,b,c] [--agent MODULE:CLASS=NAME] [--traffic CAPABILITY]``.

It prints ``ready <id> <address> http=<url>`` once started, like ``python -m mesh.node``, and
stops on SIGTERM. ``--traffic`` keeps a steady trickle of ``call_any(CAPABILITY, "add", 1, 2)``
going (about ``--rate`` a second) so the page's charts have something to draw.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

import mesh
from mesh.errors import MeshError
from mesh.node.cli import load_agent


async def traffic(node: mesh.Node, capability: str, rate: float) -> None:
    while True:
        with contextlib.suppress(MeshError):
            await node.call_any(capability, "add", 1, 2, timeout=1.0)
        await asyncio.sleep(1.0 / rate)


async def run(args: argparse.Namespace) -> None:
    node = mesh.Node(args.id, args.bind, args.join, args.data_dir, http_port=0, join_timeout=10.0,
                     raft_voters=[v for v in args.raft_voters.split(",") if v])
    for spec in args.agent:
        node.add(load_agent(spec, args.id))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    print(f"ready {node.node_id} {node.address} http={node.http_url}", flush=True)
    task = loop.create_task(traffic(node, args.traffic, args.rate)) if args.traffic else None
    await stop.wait()
    if task is not None:
        task.cancel()
    await node.stop()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.integration.web_node")
    p.add_argument("--id", required=True)
    p.add_argument("--bind", default="tcp://127.0.0.1:*")
    p.add_argument("--join", action="append", default=[])
    p.add_argument("--data-dir")
    p.add_argument("--raft-voters", default="")
    p.add_argument("--agent", action="append", default=[])
    p.add_argument("--traffic", metavar="CAPABILITY")
    p.add_argument("--rate", type=float, default=50.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
