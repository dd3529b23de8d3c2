"""``python -m mesh.node``: run a node from a shell.

Settings come from flags, ``MESH_*`` environment variables and a TOML file (``--config FILE``
or ``$MESH_CONFIG``), in that order of precedence over the built-in defaults; every option
can be given all three ways. :mod:`mesh.node.config` is the reference: the option table, the
names derived from it, the file layout (``[node]``, ``[gossip]`` tuning
:class:`mesh.swim.config.SwimConfig`, ``[raft] voters/member``) and the error messages.
``--print-config`` prints the effective configuration as TOML, with the source of each value
in a comment, and exits 0 (2 when the configuration is invalid).

A node whose id is among the Raft voters (``--raft-voters n1,n2,n3``) runs Raft and needs
``--data-dir``; ``--raft-member`` keeps a Raft log on a node that is not a bootstrap voter, so
that it can be added later (``node.kv.add_voter``).

The process prints one line on standard output once it has joined, and stops gracefully on
SIGINT or SIGTERM::

    ready <id> <address> [metrics=<url>] [http=<url>]

``metrics=`` is there with ``--metrics-port`` (Prometheus metrics at
``http://127.0.0.1:PORT/metrics``; ``--metrics-host`` to listen elsewhere; port 0: the system
picks one), ``http=`` with ``--http-port`` (the node's live web page). Logs go to standard
error as ``--log-format text`` (default), ``kv`` (logfmt) or ``json`` lines
(:mod:`mesh.observe.logs`). Exit status: 0 after a graceful stop, 1 when the node could not
start, 2 for an invalid configuration (the message names the key and its source).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
from typing import Any, Mapping

from mesh.errors import ConfigError
from mesh.node.config import (ENV_CONFIG, LOG_FORMATS, LOG_LEVELS, NodeConfig, add_arguments, load_config,
                              render_toml, resolve_config)
from mesh.observe.logs import configure_logging

__all__ = ["ConfigError", "LOG_FORMATS", "LOG_LEVELS", "NodeConfig", "build_parser", "load_agent", "load_config",
           "main", "run"]

log = logging.getLogger("mesh.node")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mesh.node",
        description="Run a mesh node: bind a ROUTER, join peers through seeds, host agents. "
                    "Precedence: flags > MESH_* environment variables > config file > defaults.",
        epilog="Example: python -m mesh.node --id n1 --bind tcp://127.0.0.1:7001 "
               "--join tcp://127.0.0.1:7000 --agent mypkg.agents:Risk=risk-1")
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML file with any of these settings (default ${ENV_CONFIG}; "
                        "environment variables and flags win over it)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration as TOML, with where each value came from, and exit")
    add_arguments(p)
    return p


def load_agent(spec: str, node_id: str = ""):
    """``module:Class[=name]`` -> an agent instance. ``{id}`` in the name becomes the node's
    id, so every node can run the same command line (``--agent ...:PlacementAgent=_place.{id}``)."""
    import mesh

    target, _, name = spec.partition("=")
    name = name.replace("{id}", node_id)
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"agent: {spec!r} is not MODULE:CLASS[=NAME]")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"agent: cannot import {module_name!r}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, mesh.Agent)):
        raise ConfigError(f"agent: {module_name}:{class_name} is not a mesh.Agent subclass")
    return cls(name) if name else cls()


async def run(cfg: NodeConfig) -> int:
    from mesh.security.errors import KeyFileError, PolicyError
    from mesh.security.settings import InsecureConfig

    if not cfg.keys and not cfg.insecure:
        raise ConfigError("keys: security is on by default; give --keys FILE and --trust PATH (make keys "
                          "with: python -m mesh.keys generate --id ID --out DIR), or --insecure to run in "
                          "plaintext on loopback addresses only")
    agents = [load_agent(spec, cfg.id) for spec in cfg.agent]
    singletons = [load_agent(spec, cfg.id) for spec in cfg.singleton]
    try:
        node = _make_node(cfg)
    except (InsecureConfig, KeyFileError, PolicyError) as exc:
        raise ConfigError(str(exc)) from None
    for agent in agents:
        node.add(agent)
    for agent in singletons:
        node.add(agent, singleton=True)
    return await _serve(node)


def _make_node(cfg: NodeConfig) -> Any:
    import mesh
    from mesh.swim.config import SwimConfig

    return mesh.Node(cfg.id, cfg.bind, cfg.join, cfg.data_dir, default_timeout=cfg.default_timeout,
                     join_timeout=cfg.join_timeout, drain_timeout=cfg.drain_timeout,
                     gossip=SwimConfig(**cfg.gossip), raft_voters=cfg.raft_voters,
                     raft_member=cfg.raft_member, metrics_port=cfg.metrics_port,
                     metrics_host=cfg.metrics_host, http_port=cfg.http_port, http_host=cfg.http_host,
                     keys=cfg.keys, trust=cfg.trust, acl=cfg.acl, audit_log=cfg.audit_log,
                     insecure=cfg.insecure)


async def _serve(node: Any) -> int:
    import mesh

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except mesh.errors.MeshError as exc:
        log.error("could not start: %s", exc)
        await node.stop()
        return 1
    extra = f" metrics={node.metrics_url}" if node.metrics_url else ""
    http_url = getattr(node, "http_url", None)
    if http_url:
        extra += f" http={http_url}"
    print(f"ready {node.node_id} {node.address}{extra}", flush=True)
    await stop.wait()
    log.info("stopping (signal)")
    await node.stop()
    return 0


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The command line; ``environ`` (default ``os.environ``) supplies ``MESH_*`` settings."""
    args = build_parser().parse_args(argv)
    try:
        resolved = resolve_config(args, environ)
    except ConfigError as exc:
        print(f"mesh.node: configuration error: {exc}", file=sys.stderr)
        return 2
    cfg = resolved.config
    if args.print_config:
        for warning in resolved.warnings:
            print(f"mesh.node: warning: {warning}", file=sys.stderr)
        sys.stdout.write(render_toml(resolved))
        return 0
    configure_logging(cfg.log_level, cfg.log_format, cfg.id)
    for warning in resolved.warnings:
        log.warning("%s", warning)
    try:
        try:
            import uvloop
        except ImportError:   # uvloop does not exist on Windows
            return asyncio.run(run(cfg))
        return uvloop.run(run(cfg))
    except ConfigError as exc:   # an agent that cannot be loaded
        log.error("configuration error: %s", exc)
        return 2
    except OSError as exc:
        log.error("%s", exc)
        return 1
