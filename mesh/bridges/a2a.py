"""``python -m mesh.bridges.a2a``: publish mesh agents as A2A agents.

    python -m mesh.bridges.a2a --join tcp://127.0.0.1:7000 --expose risk-1 --http-port 8766
    curl http://127.0.0.1:8766/agents/risk-1/.well-known/agent-card.json

The process joins the mesh as a small node of its own (:mod:`mesh.bridges.launch`) and serves
one A2A agent per ``--expose`` under ``http://HOST:PORT/agents/<name>/`` (and at the root when
there is only one), as :mod:`mesh.bridges.a2a_server` describes. It prints ``ready <base url>``
on standard output once it listens (port 0: the system picks one). Exit status: 0 after a clean
stop, 1 if the mesh could not be joined, 2 for a usage error.
"""
from __future__ import annotations

import argparse
import sys

from mesh.bridges.launch import add_mesh_arguments, bridge_node, configure_logging, join_addresses, run_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mesh.bridges.a2a",
                                description="Publish mesh agents as A2A agents (agent card, JSON-RPC, tasks).")
    add_mesh_arguments(p)
    p.add_argument("--http-port", type=int, required=True, metavar="PORT", help="port to serve on (0: any free port)")
    p.add_argument("--http-host", default="127.0.0.1", metavar="HOST", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--text-method", action="append", default=[], metavar="AGENT.METHOD",
                   help="the method text messages go to, for an agent without a @text_entry method (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    join = join_addresses(args, parser)
    text_methods = {}
    for spec in args.text_method:
        agent, dot, method = spec.rpartition(".")
        if not dot or not agent or not method:
            parser.error(f"--text-method wants AGENT.METHOD, not {spec!r}")
        text_methods[agent] = method
    configure_logging(args.log_level)

    async def run() -> int:
        from mesh.bridges.a2a_server import A2ABridge
        from mesh.bridges.launch import stop_on_signals

        stop = stop_on_signals()
        async with bridge_node("a2a", args, join) as node:
            bridge = A2ABridge(node, args.expose, base_url=f"http://{args.http_host}:{args.http_port}",
                               timeout=args.timeout, text_methods=text_methods)
            await bridge.start()
            await bridge.serve_http(args.http_host, args.http_port, stop=stop,
                                    ready=lambda url: print(f"ready {url}", flush=True))
        return 0

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
