"""Which mesh methods a bridge shows to the outside, and how a call on one reaches the mesh.

Theory of operation. A bridge is given specs on its command line: an agent name, a
capability, or either followed by ``.METHOD`` to show one method only. A spec is resolved
against the bridge node's directory (what gossip told it) each time the directory changes:
a spec that is an agent's name exposes that agent (``node.call``); one that is a capability
exposes a single entry that load-balances over every agent offering it (``node.call_any``,
described by one of them: agents sharing a capability are expected to share methods);
``name.method`` names one method of either. A spec that names nothing yet is not an error:
agents may join later, and they appear when they do.

Methods are described by the node that hosts the agent (``_ops.<node>.describe``, from the
type hints and docstrings: :mod:`mesh.bridges.schema`); descriptions are cached per agent
and hosting node, so a moving agent is described again. Each exposed method becomes a
:class:`Route` named ``<target>__<method>`` with characters outside ``[A-Za-z0-9_.-]``
replaced (MCP's rule for tool names). Everything is bounded: routes (``max_routes``) and the
description cache.
"""
from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable

from mesh.bridges.schema import MethodSchema, coerce, describe_agent
from mesh.errors import MeshError
from mesh.node.ops import ops_agent_name

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
MAX_NAME = 128                  # MCP's limit on a tool name
MAX_DESCRIBED = 4096            # cached agent descriptions


@dataclass(frozen=True, slots=True)
class Route:
    """One exposed method: ``name`` outside, ``kind`` ``"agent"`` (``target`` is an agent
    name) or ``"capability"`` (``target`` is a capability), the rpc ``method`` and its schema."""

    name: str
    kind: str
    target: str
    method: str
    schema: MethodSchema


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved spec: what to call, and which methods (None: all)."""

    kind: str
    name: str
    methods: frozenset[str] | None


def safe_name(text: str) -> str:
    """``text`` with characters MCP does not allow in tool names replaced by ``_``."""
    return _UNSAFE.sub("_", text) or "_"


def resolve(specs: Iterable[str], directory: dict[str, tuple[str, tuple[str, ...]]]) -> list[Target]:
    """Specs -> targets against a directory snapshot (name -> (node, capabilities)); specs
    naming nothing known are left out; several specs for one target merge their methods."""
    capabilities = {cap for _, caps in directory.values() for cap in caps}
    merged: dict[tuple[str, str], set[str] | None] = {}
    for spec in specs:
        found = _resolve_one(spec, directory, capabilities)
        if found is None:
            continue
        kind, name, method = found
        key = (kind, name)
        if method is None or (key in merged and merged[key] is None):
            merged[key] = None
        else:
            merged.setdefault(key, set()).add(method)   # type: ignore[union-attr]
    return [Target(kind, name, None if methods is None else frozenset(methods))
            for (kind, name), methods in merged.items()]


def _resolve_one(spec: str, directory: dict[str, Any], capabilities: set[str]) -> tuple[str, str, str | None] | None:
    # The whole spec first: agent names and capabilities may contain dots ("mcp.echo").
    if spec in directory:
        return "agent", spec, None
    if spec in capabilities:
        return "capability", spec, None
    head, dot, method = spec.rpartition(".")
    if dot and head and method:
        if head in directory:
            return "agent", head, method
        if head in capabilities:
            return "capability", head, method
    return None


class Catalog:
    """The routes a bridge exposes now, kept in step with the node's directory.

    :meth:`refresh` re-resolves when the directory changed (or a description failed last
    time) and says whether the routes changed; :meth:`call` carries a call out."""

    def __init__(self, node: Any, specs: Iterable[str], *, describe_timeout: float = 5.0,
                 max_routes: int = 1024) -> None:
        self.node = node
        self.specs = tuple(specs)
        if not self.specs:
            raise ValueError("nothing to expose: give at least one agent or capability")
        self.describe_timeout = describe_timeout
        self.max_routes = max_routes
        self.routes: dict[str, Route] = {}
        self.agents: dict[str, dict[str, Any]] = {}     # exposed target -> its description
        self._described: dict[tuple[str, str, tuple[str, ...]], dict[str, Any]] = {}   # (agent, node, caps) ->
        self._seen: dict[str, tuple[str, tuple[str, ...]]] | None = None
        self._incomplete = True
        self._lock = asyncio.Lock()

    @property
    def complete(self) -> bool:
        """Every spec named something at the last refresh, and every target was described."""
        return not self._incomplete

    async def settle(self, timeout: float = 3.0) -> None:
        """After a join: wait (up to ``timeout``) until gossip brought every live member's
        agents (each node's ``_ops`` agent is in the directory), then resolve. Specs that
        still name nothing are agents yet to come, not a reason to wait longer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            directory = self.node.directory()
            if all(ops_agent_name(m["id"]) in directory for m in self.node.members()
                   if not m["self"] and m["state"] in ("alive", "suspect")):
                break
            await asyncio.sleep(0.02)
        await self.refresh(force=True)

    def targets(self) -> list[Target]:
        return resolve(self.specs, self.node.directory())

    def names_something(self, spec: str) -> bool:
        """Whether ``spec`` resolves against the directory now."""
        directory = self.node.directory()
        return _resolve_one(spec, directory, {c for _, caps in directory.values() for c in caps}) is not None

    async def refresh(self, force: bool = False) -> bool:
        """Bring the routes up to date; True if they changed."""
        async with self._lock:
            directory = self.node.directory()
            if not force and not self._incomplete and directory == self._seen:
                return False
            self._seen = directory
            routes, agents, incomplete = await self._build(directory)
            self._incomplete = incomplete
            changed = routes != self.routes
            self.routes, self.agents = routes, agents
            if changed:
                log.info("exposing %d methods: %s", len(routes), ", ".join(sorted(routes)) or "none yet")
            return changed

    async def _build(self, directory: dict[str, tuple[str, tuple[str, ...]]]
                     ) -> tuple[dict[str, Route], dict[str, dict[str, Any]], bool]:
        routes: dict[str, Route] = {}
        agents: dict[str, dict[str, Any]] = {}
        capabilities = {cap for _, caps in directory.values() for cap in caps}
        incomplete = any(_resolve_one(spec, directory, capabilities) is None for spec in self.specs)
        # forget descriptions of agents that left or moved: they are described afresh
        self._described = {k: v for k, v in self._described.items()
                            if k[0] in directory and directory[k[0]][0] == k[1] and tuple(directory[k[0]][1]) == k[2]}
        for target in resolve(self.specs, directory):
            if target.kind == "agent":
                candidates = [target.name]
            else:
                candidates = sorted(a for a, (_, caps) in directory.items() if target.name in caps)
            described = None
            for agent in candidates:
                described = await self._describe(agent, *directory[agent])
                if described is not None:
                    break
            if described is None:
                incomplete = True
                continue
            agents[target.name] = described
            for method, data in sorted(described.get("methods", {}).items()):
                if target.methods is not None and method not in target.methods:
                    continue
                if len(routes) >= self.max_routes:
                    log.warning("more than %d methods to expose; the rest are left out", self.max_routes)
                    return routes, agents, incomplete
                name = self._unique(f"{safe_name(target.name)}__{safe_name(method)}", routes)
                routes[name] = Route(name, target.kind, target.name, method, MethodSchema.from_dict(data))
        return routes, agents, incomplete

    @staticmethod
    def _unique(name: str, taken: dict[str, Route]) -> str:
        name = name[:MAX_NAME]
        n = 2
        candidate = name
        while candidate in taken:
            suffix = f"_{n}"
            candidate = name[:MAX_NAME - len(suffix)] + suffix
            n += 1
        return candidate

    async def _describe(self, agent: str, node_id: str, caps: tuple[str, ...]) -> dict[str, Any] | None:
        # keyed by capabilities too: an agent that changes them (McpToolsAgent when its
        # server's tools change) has changed its methods
        key = (agent, node_id, tuple(caps))
        if key in self._described:
            return self._described[key]
        try:
            if node_id == self.node.node_id:
                described = describe_agent(self.node.agents[agent])
            else:
                described = await self.node.call(ops_agent_name(node_id), "describe", agent,
                                                 timeout=self.describe_timeout)
        except (MeshError, KeyError) as exc:
            log.info("cannot describe agent %s on node %s yet: %s", agent, node_id, exc)
            return None
        if len(self._described) >= MAX_DESCRIBED:
            self._described.pop(next(iter(self._described)))
        self._described[key] = described
        return described

    async def describe(self, agent: str) -> dict[str, Any] | None:
        """The description of any agent in the directory (None if it cannot be had)."""
        listed = self.node.directory().get(agent)
        return None if listed is None else await self._describe(agent, *listed)

    async def call(self, route: Route, arguments: dict[str, Any] | None, timeout: float | None = None) -> Any:
        """Call ``route``'s method with ``arguments`` (by name; positional-only parameters
        are taken out and passed by position). Raises what ``node.call`` raises."""
        kwargs = coerce(dict(arguments or {}), route.schema.input_schema)
        args = [kwargs.pop(p) for p in route.schema.positional if p in kwargs]
        if route.kind == "agent":
            return await self.node.call(route.target, route.method, *args, timeout=timeout, **kwargs)
        return await self.node.call_any(route.target, route.method, *args, timeout=timeout, **kwargs)
