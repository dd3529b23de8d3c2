"""``python -m mesh.node``: run a node from a shell.

Settings come from flags and an optional TOML file (``--config``); a flag given on the
command line wins over the file. The file holds the node settings at top level or in a
``[node]`` table, and may tune gossip in a ``[gossip]`` table whose keys are the fields of
:class:`mesh.swim.config.SwimConfig` (e.g. ``probe_interval_ms = 500``). A ``[raft]`` table
names the voters (``voters = ["n1", "n2", "n3"]``, same as ``--raft-voters n1,n2,n3``); a
node whose id is among them runs Raft and needs ``--data-dir``. ``member = true`` (or
``--raft-member``) keeps a Raft log on a node that is not a bootstrap voter, so that it can
be added later (``node.kv.add_voter``). The process prints one line ``ready <id> <address>`` on
standard output once it has joined, and stops gracefully on SIGINT or SIGTERM.

``--metrics-port PORT`` (``metrics_port`` in the file) serves Prometheus metrics at
``http://127.0.0.1:PORT/metrics`` (``--metrics-host`` to listen elsewhere); with port 0 the
system picks one. Then the ready line carries one more word, ``metrics=<url>``, after the
address: ``ready <id> <address> metrics=http://127.0.0.1:PORT/metrics``.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import tomllib
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("mesh.node")

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and the problem."""


@dataclass
class NodeConfig:
    id: str = ""
    bind: str = "tcp://127.0.0.1:*"
    join: list[str] = field(default_factory=list)
    agent: list[str] = field(default_factory=list)
    singleton: list[str] = field(default_factory=list)
    data_dir: str | None = None
    log_level: str = "info"
    default_timeout: float = 30.0
    join_timeout: float = 10.0
    drain_timeout: float = 5.0
    gossip: dict[str, int] = field(default_factory=dict)
    raft_voters: list[str] = field(default_factory=list)
    raft_member: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


_TYPES = {"id": str, "bind": str, "join": list, "agent": list, "singleton": list, "data_dir": str, "log_level": str,
          "default_timeout": float, "join_timeout": float, "drain_timeout": float, "metrics_port": int,
          "metrics_host": str}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mesh.node",
        description="Run a mesh node: bind a ROUTER, join peers through seeds, host agents.",
        epilog="Example: python -m mesh.node --id n1 --bind tcp://127.0.0.1:7001 "
               "--join tcp://127.0.0.1:7000 --agent mypkg.agents:Risk=risk-1")
    p.add_argument("--id", help="node id, unique in the mesh (1..255 bytes)")
    p.add_argument("--bind", help="ZeroMQ endpoint to bind, e.g. tcp://127.0.0.1:7001 (port * = any free port; "
                                  "default tcp://127.0.0.1:*)")
    p.add_argument("--join", action="append", metavar="ADDRESS",
                   help="address of a node to join through (repeatable)")
    p.add_argument("--agent", action="append", metavar="MODULE:CLASS[=NAME]",
                   help="agent to host: a mesh.Agent subclass, optionally named; {id} in NAME is "
                        "replaced by the node id (repeatable)")
    p.add_argument("--singleton", action="append", metavar="MODULE:CLASS[=NAME]",
                   help="agent to run on exactly one of the nodes that name it, elected through the "
                        "Raft store; it moves when its node stops or dies (repeatable)")
    p.add_argument("--data-dir", help="folder for this node's durable state")
    p.add_argument("--config", metavar="FILE", help="TOML file with any of these settings (flags win)")
    p.add_argument("--log-level", choices=LOG_LEVELS, help="logging level (default info)")
    p.add_argument("--default-timeout", type=float, metavar="SECONDS",
                   help="timeout of calls made without one (default 30)")
    p.add_argument("--join-timeout", type=float, metavar="SECONDS",
                   help="how long to wait for the seeds at start (default 10)")
    p.add_argument("--drain-timeout", type=float, metavar="SECONDS",
                   help="on stop, how long in-flight calls may still finish (default 5)")
    p.add_argument("--raft-voters", metavar="ID,ID,...",
                   help="the ids of the Raft voters (the same list on every node); a node among them "
                        "keeps the replicated store and needs --data-dir")
    p.add_argument("--raft-member", action="store_true", default=None,
                   help="keep a Raft log here though this node is not a bootstrap voter, so it can be "
                        "added as one later (needs --data-dir)")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve Prometheus metrics on http://HOST:PORT/metrics (0: any free port, shown in "
                        "the ready line); default: no metrics server")
    p.add_argument("--metrics-host", metavar="HOST",
                   help="address the metrics server listens on (default 127.0.0.1)")
    return p


def load_config(args: argparse.Namespace) -> NodeConfig:
    """Merge the TOML file (if any) and the flags into a validated NodeConfig."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                raw = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"--config: cannot read {args.config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config: {args.config} is not valid TOML: {exc}") from None
        section = dict(raw.get("node", raw))
        gossip = raw.get("gossip", {})
        section.pop("gossip", None)
        values["gossip"] = _check_gossip(args.config, gossip)
        raft = raw.get("raft", {})
        section.pop("raft", None)
        if not isinstance(raft, dict) or set(raft) - {"voters", "member"}:
            raise ConfigError(f"{args.config}: the [raft] table takes only 'voters' and 'member'")
        if "voters" in raft:
            values["raft_voters"] = _check(args.config, "raft.voters", raft["voters"], list)
        if "member" in raft:
            values["raft_member"] = _check(args.config, "raft.member", raft["member"], bool)
        for key, value in section.items():
            name = key.replace("-", "_")
            if name not in _TYPES:
                raise ConfigError(f"{args.config}: unknown key {key!r} (known: {', '.join(sorted(_TYPES))})")
            values[name] = _check(args.config, key, value, _TYPES[name])
    for name in _TYPES:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = flag
    if getattr(args, "raft_voters", None):
        values["raft_voters"] = [v.strip() for v in args.raft_voters.split(",") if v.strip()]
    if getattr(args, "raft_member", None):
        values["raft_member"] = True
    cfg = NodeConfig(**values)
    if not cfg.id:
        raise ConfigError("id: a node id is required (--id or 'id' in the config file)")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    for name in ("default_timeout", "join_timeout", "drain_timeout"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}: must be positive, got {getattr(cfg, name)}")
    if cfg.metrics_port is not None and not 0 <= cfg.metrics_port <= 65535:
        raise ConfigError(f"metrics_port: must be 0..65535, got {cfg.metrics_port}")
    if (cfg.id in cfg.raft_voters or cfg.raft_member) and not cfg.data_dir:
        raise ConfigError(f"data_dir: node {cfg.id!r} keeps a Raft log and needs a data folder for it")
    return cfg


def _check_gossip(source: str, table: Any) -> dict[str, int]:
    from dataclasses import fields

    from mesh.swim.config import SwimConfig

    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'gossip' must be a table")
    known = {f.name for f in fields(SwimConfig)}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key 'gossip.{key}' (known: {', '.join(sorted(known))})")
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{source}: 'gossip.{key}' must be an integer, got {type(value).__name__}")
    try:
        SwimConfig(**table)
    except ValueError as exc:
        raise ConfigError(f"{source}: gossip: {exc}") from None
    return dict(table)


def _check(source: str, key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is list:
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{source}: {key!r} must be a list of strings")
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: {key!r} must be a {kind.__name__}, got {type(value).__name__}")
    return value


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
    import mesh
    from mesh.swim.config import SwimConfig

    agents = [load_agent(spec, cfg.id) for spec in cfg.agent]
    singletons = [load_agent(spec, cfg.id) for spec in cfg.singleton]
    node = mesh.Node(cfg.id, cfg.bind, cfg.join, cfg.data_dir, default_timeout=cfg.default_timeout,
                     join_timeout=cfg.join_timeout, drain_timeout=cfg.drain_timeout,
                     gossip=SwimConfig(**cfg.gossip), raft_voters=cfg.raft_voters,
                     raft_member=cfg.raft_member, metrics_port=cfg.metrics_port,
                     metrics_host=cfg.metrics_host)
    for agent in agents:
        node.add(agent)
    for agent in singletons:
        node.add(agent, singleton=True)
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
    print(f"ready {node.node_id} {node.address}{extra}", flush=True)
    await stop.wait()
    log.info("stopping (signal)")
    await node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
        logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            import uvloop
        except ImportError:   # uvloop does not exist on Windows
            return asyncio.run(run(cfg))
        return uvloop.run(run(cfg))
    except ConfigError as exc:
        print(f"mesh.node: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mesh.node: {exc}", file=sys.stderr)
        return 1
