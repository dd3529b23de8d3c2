"""``python -m mesh.bridges.mcp``: serve mesh agents' methods as MCP tools.

    python -m mesh.bridges.mcp --join tcp://127.0.0.1:7000 --expose risk-1 --expose calc.add --stdio
    python -m mesh.bridges.mcp --join tcp://127.0.0.1:7000 --expose risk --http-port 8765

The process joins the mesh as a small node of its own (:mod:`mesh.bridges.launch`) and serves
an MCP server (:mod:`mesh.bridges.mcp_server`) over stdio (an MCP client launches it, e.g. a
desktop assistant's ``command``) or over streamable HTTP at ``http://HOST:PORT/mcp``. With
``--http-port`` it prints ``ready <url>`` on standard output once it listens (port 0: the
system picks one). Exit status: 0 after a clean stop, 1 if the mesh could not be joined, 2 for
a usage error.
"""
from __future__ import annotations

import argparse
import sys

from mesh.bridges.launch import (add_mesh_arguments, bridge_node, configure_logging, join_addresses, run_main,
                                 stop_on_signals, until_stopped)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mesh.bridges.mcp",
                                description="Serve mesh agents' @rpc methods as MCP tools (tool name: "
                                            "<agent or capability>__<method>).")
    add_mesh_arguments(p)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--stdio", action="store_true", help="serve one MCP client on stdin/stdout")
    mode.add_argument("--http-port", type=int, metavar="PORT",
                      help="serve streamable HTTP on this port (0: any free port)")
    p.add_argument("--http-host", default="127.0.0.1", metavar="HOST",
                   help="address to listen on with --http-port (default 127.0.0.1)")
    p.add_argument("--path", default="/mcp", help="URL path of the MCP endpoint (default /mcp)")
    p.add_argument("--name", default="mesh", help="the server name MCP clients see (default mesh)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    join = join_addresses(args, parser)
    configure_logging(args.log_level)

    async def run() -> int:
        from mesh.bridges.mcp_server import McpBridge

        stop = stop_on_signals()
        async with bridge_node("mcp", args, join) as node:
            bridge = McpBridge(node, args.expose, name=args.name, timeout=args.timeout)
            await bridge.start()
            try:
                if args.stdio:
                    await until_stopped(bridge.run_stdio(), stop)
                else:
                    await bridge.serve_http(args.http_host, args.http_port, args.path,
                                            ready=lambda url: print(f"ready {url}", flush=True), stop=stop)
            finally:
                await bridge.close()
        return 0

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
