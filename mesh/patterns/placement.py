"""Placement: which node gets a new replica, and the per-node agent that builds, drains and
reports replicas for the autoscaler (:mod:`mesh.patterns.autoscale`).

Theory of operation
-------------------
* A :class:`PlacementAgent` (capability ``mesh.placement``) runs on every node that may host
  replicas. ``spawn(capability, name)`` builds a replica and adds it to its node;
  ``retire(name)`` drains it (``Node.retire``: no new calls are routed to it, queued and
  in-flight calls finish) and removes it; ``load()`` reports the node's busyness and each
  replica's ``Node.agent_load``.
* It builds only what the autoscale record in the KV assigns to its node, of the kind the KV
  config names. So an RPC caller can neither choose the class (the import of
  ``module:Class`` is limited to what an operator put in the KV) nor start a replica the
  record does not hold: a stale autoscaler cannot double-spawn. Spawning is idempotent by
  name, which lets a successor autoscaler redo a spawn it cannot know finished.
* Every ``sweep_interval`` seconds it retires the replicas it hosts that the record no
  longer assigns to it: orphans of a partition (the autoscaler gave up on this node and
  placed their replacements elsewhere) or of an autoscaler that died halfway.
* :func:`choose_nodes` puts each new replica on the eligible node (its placement agent
  answered and can build the kind) with the lowest :func:`expected_load`: the calls
  outstanding at the node's other user agents, plus the set point times its replicas of
  the capability, counting those placed in this round (so one round spreads); ties go to
  the node with fewer replicas of the capability, then by id. :func:`choose_victims` is its
  mirror: replicas come off the node with the highest expected load, the one with the
  fewest calls to drain there, newest first.
  Load is asked of each node rather than read from the gossip summary
  (``node.members()[i]["load"]``): that one is re-published only when it moves by half and at
  most every ``load_interval`` (5 s), too coarse for a decision every half second, while one
  small RPC per node per round costs nothing.

The KV layout (shared with the autoscaler): ``_autoscale/config/<capability>`` =
``{"kind": ..., <ScalingConfig fields>}``; ``_autoscale/state/<capability>`` = ``{"next": int,
"replicas": {name: {"node": id, "draining": bool}}}``.
"""
from __future__ import annotations

import asyncio
import importlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from mesh.agent import Agent, rpc
from mesh.errors import MeshError
from mesh.patterns.scaling_policy import ScalingConfig

log = logging.getLogger(__name__)

__all__ = ["PLACEMENT_CAPABILITY", "CONFIG_PREFIX", "STATE_PREFIX", "PlacementRefused", "PlacementAgent",
           "NodeReport", "expected_load", "choose_nodes", "choose_victims", "parse_record", "parse_config"]

PLACEMENT_CAPABILITY = "mesh.placement"
CONFIG_PREFIX = "_autoscale/config/"
STATE_PREFIX = "_autoscale/state/"

Factory = Callable[[str], Agent]


class PlacementRefused(MeshError):
    """A placement agent will not build a replica: the record does not assign it to its node,
    the kind is unknown there, or the class does not offer the capability."""


def parse_record(value: Any) -> dict[str, Any]:
    """A stored record, or the empty one for None (absent)."""
    if not isinstance(value, dict):
        return {"next": 1, "replicas": {}}
    return {"next": int(value.get("next", 1)), "replicas": dict(value.get("replicas", {}))}


def parse_config(value: Any) -> tuple[str, ScalingConfig]:
    """A stored config: (kind, scaling settings); ValueError if it is malformed."""
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError(f"an autoscale config needs a 'kind', got {value!r}")
    settings = dict(value)
    kind = settings.pop("kind")
    return kind, ScalingConfig.from_dict(settings)


# -- placement (pure) ------------------------------------------------------------------------


@dataclass(slots=True)
class NodeReport:
    """What one placement agent's ``load()`` said."""

    node: str
    agent: str                               # the placement agent's name
    busy: float                              # calls outstanding at the node's user agents
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)   # name -> capability + load
    kinds: tuple[str, ...] = ()
    imports: bool = True
    health: float = 100.0                    # the node's health score (design doc 5.1), 0..100

    def can_build(self, kind: str) -> bool:
        return kind in self.kinds or (self.imports and ":" in kind)

    def replicas_of(self, capability: str) -> list[dict[str, Any]]:
        return [r for r in self.replicas.values() if r.get("capability") == capability]

    def count(self, capability: str) -> int:
        return len(self.replicas_of(capability))


def expected_load(report: NodeReport, capability: str, target_outstanding: float, added: int = 0) -> float:
    """A node's load once ``added`` more replicas of ``capability`` are placed on it:
    ``(busy - outstanding at its replicas of capability) + target_outstanding * (its replicas
    of capability + added)``. ``call_any`` spreads a capability's calls evenly over its
    replicas wherever they are, so the capability's own load on a node follows its replica
    count (each at about the set point once scaled) and what it shows this instant is noise;
    the node's other work stays where it is."""
    own = report.replicas_of(capability)
    outstanding = sum(r.get("inflight", 0) + r.get("queued", 0) for r in own)
    return report.busy - outstanding + target_outstanding * (len(own) + added)


def choose_nodes(nodes: Iterable[NodeReport], count: int, capability: str,
                 target_outstanding: float, min_health: float = 0.0) -> list[str]:
    """Nodes for ``count`` new replicas, one pick at a time: the lowest
    :func:`expected_load` counting the replicas placed in this round, then the healthiest
    (health score), then the fewest replicas of ``capability``, then the id. A node may be
    picked more than once. Nodes whose health is below ``min_health`` (slow or failing
    handlers) get none, unless no node is that healthy."""
    pool = list(nodes)
    if not pool:
        return []
    healthy = [r for r in pool if r.health >= min_health]
    pool = healthy or pool
    added = {r.node: 0 for r in pool}
    picks = []
    for _ in range(count):
        best = min(pool, key=lambda r: (expected_load(r, capability, target_outstanding, added[r.node]),
                                        -r.health, r.count(capability) + added[r.node], r.node))
        added[best.node] += 1
        picks.append(best.node)
    return picks


def choose_victims(nodes: dict[str, NodeReport], replicas: dict[str, tuple[str, int]], count: int,
                   capability: str, target_outstanding: float) -> list[str]:
    """``count`` of ``replicas`` (name -> (node, outstanding calls)) to retire, one at a time:
    from the node with the highest :func:`expected_load` after the removals so far (the
    mirror of :func:`choose_nodes`, so shrinking keeps the spread), more replicas there
    first, then the highest id; on it the replica with the fewest calls to drain, the newest
    (highest number) on a tie."""
    def number(name: str) -> int:
        tail = name.rsplit(".", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    left = dict(replicas)
    removed: dict[str, int] = {}
    victims = []
    for _ in range(min(count, len(left))):
        here: dict[str, list[str]] = {}
        for name, (node, _) in left.items():
            here.setdefault(node, []).append(name)

        def weight(node: str) -> tuple[float, int, str]:
            report = nodes.get(node)
            load = 0.0 if report is None else expected_load(report, capability, target_outstanding,
                                                            -removed.get(node, 0))
            return (load, len(here[node]), node)

        node = max(here, key=weight)
        victim = min(here[node], key=lambda n: (left[n][1], -number(n)))
        victims.append(victim)
        del left[victim]
        removed[node] = removed.get(node, 0) + 1
    return victims


# -- the placement agent (one per node) -----------------------------------------------------


class PlacementAgent(Agent):
    """Builds, drains and reports replicas on its node for the autoscaler.

    ``factories`` maps kind names to callables ``name -> Agent``; with ``allow_import`` (the
    default) a kind ``"module:Class"`` is imported too — only ever a kind named in the KV
    config. From the command line: ``--agent mesh.patterns.autoscale:PlacementAgent=_place.n1``
    (the name must be unique in the mesh; without one a random ``_place.<hex>`` is used).
    ``sweep_interval``: seconds between checks for orphaned replicas (0: never)."""

    capabilities = (PLACEMENT_CAPABILITY,)
    kv_timeout = 5.0          # for its own KV reads

    def __init__(self, name: str | None = None, *, factories: dict[str, Factory] | None = None,
                 allow_import: bool = True, sweep_interval: float = 5.0) -> None:
        super().__init__(name or f"_place.{uuid.uuid4().hex[:8]}")
        self.factories = dict(factories or {})
        self.allow_import = allow_import
        self.sweep_interval = sweep_interval
        self.hosted: dict[str, str] = {}       # replica name -> capability
        self.spawned = 0                        # replicas built here (a figure for tests)
        self._sweeper: asyncio.Task | None = None

    async def on_start(self) -> None:
        if self.sweep_interval > 0:
            self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def on_stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    @rpc(eager=False)
    async def spawn(self, capability: str, name: str) -> str:
        """Build replica ``name`` of ``capability`` here, if the record assigns it to this node;
        idempotent (a replica already here is left as it is). Returns this node's id."""
        node = self._node()
        kv = node.kv
        config = await kv.get(CONFIG_PREFIX + capability, timeout=self.kv_timeout)
        entry = parse_record(await kv.get(STATE_PREFIX + capability, timeout=self.kv_timeout))["replicas"].get(name)
        if config is None:
            raise PlacementRefused(f"{capability!r} is not autoscaled")
        if not isinstance(entry, dict) or entry.get("node") != node.node_id or entry.get("draining"):
            raise PlacementRefused(f"the record does not assign {name!r} to node {node.node_id!r}: {entry!r}")
        # No await from here to node.add: two concurrent spawns of one name cannot both build.
        if name in node.agents:
            self.hosted[name] = capability
            return node.node_id
        kind, _ = parse_config(config)
        agent = self._build(kind, name)
        if capability not in agent.capabilities:
            raise PlacementRefused(f"{kind} does not offer {capability!r} (it offers {agent.capabilities})")
        node.add(agent)
        self.hosted[name] = capability
        self.spawned += 1
        log.info("spawned %s (%s) on %s", name, kind, node.node_id)
        return node.node_id

    @rpc(eager=False)
    async def retire(self, name: str, timeout: float = 10.0) -> bool:
        """Drain replica ``name`` (no new calls; queued and running ones finish, up to
        ``timeout`` s) and remove it. False if it is not here (already retired)."""
        node = self._node()
        self.hosted.pop(name, None)
        if name not in node.agents:
            return False
        await node.retire(name, timeout=timeout)
        log.info("retired %s from %s", name, node.node_id)
        return True

    @rpc
    def load(self) -> dict[str, Any]:
        """This node's busyness and each hosted replica's load (``Node.agent_load``)."""
        node = self._node()
        agents = node.agents
        busy = 0
        for name in agents:
            if not name.startswith("_"):        # the mesh's own agents (long polls) are not load
                stats = node.agent_load(name)
                busy += stats["inflight"] + stats["queued"]
        replicas = {}
        for name, capability in list(self.hosted.items()):
            if name not in agents:
                continue
            stats = node.agent_load(name)
            replicas[name] = {"capability": capability, "inflight": stats["inflight"], "queued": stats["queued"],
                              "latency_ms": stats["latency_ms"], "calls": stats["calls"]}
        health = node.health()["node"] if hasattr(node, "health") else 100.0
        return {"node": node.node_id, "busy": busy, "replicas": replicas, "spawned": self.spawned,
                "kinds": sorted(self.factories), "imports": self.allow_import, "health": health}

    def _build(self, kind: str, name: str) -> Agent:
        factory = self.factories.get(kind)
        if factory is None:
            if not (self.allow_import and ":" in kind):
                raise PlacementRefused(f"node {self._node().node_id!r} cannot build {kind!r}")
            module_name, _, class_name = kind.partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as exc:
                raise PlacementRefused(f"cannot load {kind!r}: {exc}") from None
            if not (isinstance(factory, type) and issubclass(factory, Agent)):
                raise PlacementRefused(f"{kind} is not a mesh.Agent subclass")
        agent = factory(name)
        if not isinstance(agent, Agent) or agent.name != name:
            raise PlacementRefused(f"the factory of {kind!r} did not build an agent named {name!r}")
        return agent

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except MeshError as exc:          # no quorum now: the next sweep will do
                log.info("placement sweep on %s skipped: %s", self._node().node_id, exc)

    async def sweep(self) -> list[str]:
        """Retire hosted replicas that the record no longer assigns to this node."""
        node = self._node()
        # Only replicas hosted before the read: each was in the record before it was built,
        # so the (linearizable) read sees it unless it was really taken away. One built
        # while the read is under way may be newer than what the read returns.
        hosted = list(self.hosted.items())
        if not hosted:
            return []
        records = await node.kv.range(STATE_PREFIX, timeout=self.kv_timeout)
        orphans = []
        for name, capability in hosted:
            entry = parse_record(records.get(STATE_PREFIX + capability))["replicas"].get(name)
            if not isinstance(entry, dict) or entry.get("node") != node.node_id:
                orphans.append(name)
        for name in orphans:
            if self.hosted.get(name) is None:
                continue                       # retired meanwhile
            log.warning("replica %s on %s is not in the autoscale record; retiring it", name, node.node_id)
            await self.retire(name)
        return orphans
