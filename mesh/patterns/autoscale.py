"""Autoscaling: replicas of a capability added and removed by load, placed on the least-loaded
node, every decision recorded in the Raft KV before it is carried out.

    await configure(node.kv, "risk", "mypkg.agents:Risk",
                    ScalingConfig(min_replicas=2, max_replicas=10, target_outstanding=4))

Theory of operation
-------------------
Three roles, three modules:

* **Configuration** lives in the KV, one key per capability (:func:`configure`). Any node or
  tool may write it; the autoscaler picks a change up on its next round, so limits change
  without restarting anything.
* **A placement agent** on every node that may host replicas builds, drains and reports them
  (:mod:`mesh.patterns.placement`, which also decides where a new replica goes). It builds
  only what the record assigns to its node.
* **The autoscaler** (:class:`Autoscaler`) runs as a singleton (``node.add(Autoscaler(),
  singleton=True)`` on several nodes): one decision maker in the mesh, elected through the
  KV, moving when its node dies. Every ``interval`` seconds it reads the configs and
  records, asks every placement agent for ``load()``, and per capability:

  1. *reconciles* the record with what the nodes report: a replica recorded but missing on
     a live node is spawned again (same name, same node); one whose node has not answered
     for ``lost_after`` seconds is dropped from the record (the load then decides whether it
     is replaced; ``min_replicas`` is restored at once); one marked draining is retired
     (again: retiring is idempotent);
  2. feeds the live replicas' load to its :class:`~mesh.patterns.scaling_policy.ScalingPolicy`
     (queue depth and latency, hysteresis, sustain times, cooldowns: see that module);
  3. *acts, record first*: to grow, it writes the new replicas (name, node) into
     ``_autoscale/state/<capability>`` by compare-and-set against the record it read, then
     asks the chosen nodes to spawn them; to shrink, it marks the victims draining (cas),
     has them retired (drained), and deletes them from the record (cas) once gone.

  Replica names are ``<capability>.<n>`` from a counter in the record, never reused. Since
  every change is a cas on the record, two autoscalers (a moment of double leadership, or a
  successor starting while the old one finishes a round) cannot both act on the same state:
  the second cas fails and that round is dropped. Since intent is written before acting and
  spawning and retiring are idempotent by name, a successor that takes over halfway finishes
  the job from the record alone: it never needs the old one's memory. What it does not
  inherit is the policy's timing state (smoothed demand, cooldowns): it starts afresh, so
  its first load decision waits one sustain period.
"""
from __future__ import annotations

import asyncio
import logging
import math
from typing import Any, Iterable

from mesh.agent import Agent, rpc
from mesh.errors import MeshError
from mesh.patterns.placement import (CONFIG_PREFIX, PLACEMENT_CAPABILITY, STATE_PREFIX, NodeReport, PlacementAgent,
                                     PlacementRefused, choose_nodes, choose_victims, parse_config, parse_record)
from mesh.patterns.scaling_policy import Decision, LoadSample, ScalingConfig, ScalingPolicy

log = logging.getLogger(__name__)

__all__ = ["Autoscaler", "PlacementAgent", "PlacementRefused", "ScalingConfig", "configure", "unconfigure",
           "record", "CONFIG_PREFIX", "STATE_PREFIX"]

# -- configuration and record (KV) ---------------------------------------------------------


async def configure(kv: Any, capability: str, kind: str, config: ScalingConfig | None = None,
                    *, timeout: float | None = None) -> None:
    """Autoscale ``capability`` with replicas of ``kind`` (``"module:Class"``, or a name a
    :class:`PlacementAgent` has a factory for) within ``config``'s limits."""
    if not capability or "/" in capability:
        raise ValueError(f"invalid capability {capability!r}")
    cfg = config or ScalingConfig()
    await kv.put(CONFIG_PREFIX + capability, {"kind": kind, **cfg.to_dict()}, timeout=timeout)


async def unconfigure(kv: Any, capability: str, *, timeout: float | None = None) -> None:
    """Stop autoscaling ``capability``: the autoscaler drains and retires its replicas."""
    await kv.delete(CONFIG_PREFIX + capability, timeout=timeout)


async def record(kv: Any, capability: str, *, timeout: float | None = None) -> dict[str, Any]:
    """The autoscaler's record for ``capability`` (see the module docstring)."""
    return parse_record(await kv.get(STATE_PREFIX + capability, timeout=timeout))


# -- the autoscaler (a singleton) ------------------------------------------------------------


class Autoscaler(Agent):
    """The mesh's one scaling decision maker; add it with ``singleton=True`` on several nodes
    (``--singleton mesh.patterns.autoscale:Autoscaler`` from the command line).

    ``interval``: seconds between rounds. ``call_timeout``: for ``load()``/``spawn()`` calls
    and KV operations. ``drain_timeout``: how long a retiring replica may take to finish its
    calls. ``lost_after``: seconds a replica's node may stay silent before the replica is
    dropped from the record."""

    def __init__(self, name: str = "_autoscaler", *, interval: float = 0.5, call_timeout: float = 2.0,
                 drain_timeout: float = 10.0, lost_after: float = 3.0) -> None:
        super().__init__(name)
        self.interval = interval
        self.call_timeout = call_timeout
        self.drain_timeout = drain_timeout
        self.lost_after = lost_after
        self.policies: dict[str, tuple[ScalingConfig, ScalingPolicy]] = {}
        self.decisions: dict[str, Decision] = {}
        self._unseen_since: dict[str, float] = {}       # replica -> when its node first failed to answer
        self._retiring: dict[tuple[str, str], asyncio.Task] = {}   # (capability, replica) -> task
        self._task: asyncio.Task | None = None

    async def on_start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def on_stop(self) -> None:
        # The record keeps what was going on; whoever runs next finishes it.
        tasks = [t for t in (self._task, *self._retiring.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._retiring.clear()

    @rpc
    def status(self) -> dict[str, Any]:
        """Per capability: the last decision (replicas, desired, why, utilisation)."""
        return {cap: {"replicas": d.replicas, "desired": d.desired, "reason": d.reason,
                      "utilisation": None if math.isinf(d.utilisation) else round(d.utilisation, 3)}
                for cap, d in self.decisions.items()}

    async def _run(self) -> None:
        log.info("autoscaler running on %s", self._node().node_id)
        while True:
            try:
                await self.round()
            except MeshError as exc:          # no quorum, a node gone mid-call: try next round
                log.info("autoscale round failed: %s", exc)
            except Exception:                 # a bug in one round must not end autoscaling
                log.exception("autoscale round failed")
            await asyncio.sleep(self.interval)

    async def round(self) -> None:
        """One look at every autoscaled capability (see the module docstring)."""
        node = self._node()
        kv = node.kv
        configs = await kv.range(CONFIG_PREFIX, timeout=self.call_timeout)
        records = await kv.range(STATE_PREFIX, timeout=self.call_timeout)
        reports = await self._poll()
        now = asyncio.get_running_loop().time()
        caps = {k[len(CONFIG_PREFIX):] for k in configs} | {k[len(STATE_PREFIX):] for k in records}
        for cap in sorted(caps):
            raw = configs.get(CONFIG_PREFIX + cap)
            try:
                spec = parse_config(raw) if raw is not None else None
            except ValueError as exc:
                log.warning("autoscale config of %r is invalid: %s", cap, exc)
                continue
            await self._scale(cap, spec, parse_record(records.get(STATE_PREFIX + cap)), reports, now)

    async def _poll(self) -> dict[str, NodeReport]:
        node = self._node()
        agents = [(a, n) for a, (n, caps) in node.directory().items() if PLACEMENT_CAPABILITY in caps]

        async def ask(agent: str) -> Any:
            return await node.call(agent, "load", timeout=self.call_timeout)

        answers = await asyncio.gather(*(ask(a) for a, _ in agents), return_exceptions=True)
        reports = {}
        for (agent, owner), answer in zip(agents, answers):
            if isinstance(answer, BaseException):
                if not isinstance(answer, MeshError):
                    raise answer
                log.debug("placement agent %s did not answer: %s", agent, answer)
                continue
            reports[owner] = NodeReport(owner, agent, float(answer["busy"]), dict(answer["replicas"]),
                                        tuple(answer["kinds"]), bool(answer["imports"]),
                                        float(answer.get("health", 100.0)))
        return reports

    async def _scale(self, cap: str, spec: tuple[str, ScalingConfig] | None, rec: dict[str, Any],
                     reports: dict[str, NodeReport], now: float) -> None:
        replicas: dict[str, dict[str, Any]] = rec["replicas"]
        # 1. reconcile the record with what the nodes say
        live: dict[str, tuple[str, int]] = {}            # name -> (node, outstanding)
        samples: list[LoadSample] = []
        respawn: list[tuple[str, str]] = []
        lost: list[str] = []
        for name, entry in sorted(replicas.items()):
            where = entry.get("node")
            report = reports.get(where)
            if report is None:
                first = self._unseen_since.setdefault(name, now)
                if now - first >= self.lost_after:
                    lost.append(name)
                continue
            self._unseen_since.pop(name, None)
            if entry.get("draining"):
                self._start_retire(cap, name, report.agent)
            elif name in report.replicas:
                stats = report.replicas[name]
                live[name] = (where, stats["inflight"] + stats["queued"])
                samples.append(LoadSample(name, stats["inflight"], stats["queued"], stats["latency_ms"],
                                          stats["calls"]))
            else:
                respawn.append((name, where))
        if spec is None:                  # no longer autoscaled: whatever is missing stays so
            lost += [name for name, _ in respawn]
            respawn = []
        if lost:
            log.warning("%s: dropping replicas %s from the record (lost with their nodes, or no "
                        "longer wanted)", cap, ", ".join(lost))
            rec = await self._commit(cap, rec, _without(rec, lost))
            if rec is None:
                return
            for name in lost:
                self._unseen_since.pop(name, None)
        if respawn:                       # recorded but missing (its node restarted, a spawn failed)
            rec = await self._spawn_all(cap, rec, respawn, reports)
            if rec is None:
                return
        if spec is None:                  # drain everything, then forget the record
            self.policies.pop(cap, None)
            self.decisions.pop(cap, None)
            if live:
                await self._shrink(cap, rec, list(live), reports)
            elif not rec["replicas"] and not any(c == cap for c, _ in self._retiring):
                await self._commit(cap, rec, None)
            return
        kind, cfg = spec
        kept = self.policies.get(cap)
        if kept is None or kept[0] != cfg:
            kept = self.policies[cap] = (cfg, ScalingPolicy(cfg))
        # replicas on silent nodes (not yet lost) still count: they may be back next round
        active = sum(1 for e in rec["replicas"].values() if not e.get("draining"))
        decision = kept[1].decide(now, active, samples)
        self.decisions[cap] = decision
        if decision.delta > 0:
            log.info("%s: %d -> %d replicas (%s, utilisation %.2f)", cap, decision.replicas,
                     decision.desired, decision.reason, decision.utilisation)
            await self._grow(cap, kind, cfg, rec, decision.delta, reports)
        elif decision.delta < 0:
            log.info("%s: %d -> %d replicas (%s, utilisation %.2f)", cap, decision.replicas,
                     decision.desired, decision.reason, decision.utilisation)
            victims = choose_victims(reports, live, -decision.delta, cap, cfg.target_outstanding)
            await self._shrink(cap, rec, victims, reports)

    async def _grow(self, cap: str, kind: str, cfg: ScalingConfig, rec: dict[str, Any], count: int,
                    reports: dict[str, NodeReport]) -> None:
        eligible = [r for r in reports.values() if r.can_build(kind)]
        picks = choose_nodes(eligible, count, cap, cfg.target_outstanding, cfg.min_health)
        if not picks:
            log.warning("%s: no node can build %s; cannot scale up", cap, kind)
            return
        new = {"next": rec["next"] + len(picks), "replicas": dict(rec["replicas"])}
        planned = []
        for i, where in enumerate(picks):
            name = f"{cap}.{rec['next'] + i}"
            new["replicas"][name] = {"node": where, "draining": False}
            planned.append((name, where))
        rec = await self._commit(cap, rec, new)     # intent first: a successor will finish it
        if rec is not None:
            await self._spawn_all(cap, rec, planned, reports)

    async def _spawn_all(self, cap: str, rec: dict[str, Any], planned: list[tuple[str, str]],
                         reports: dict[str, NodeReport]) -> dict[str, Any] | None:
        """Ask the nodes to build ``planned`` (already in ``rec``); drop from the record those
        refused for good. The record afterwards (None: it changed under us)."""
        node = self._node()

        async def spawn(name: str, where: str) -> None:
            await node.call(reports[where].agent, "spawn", cap, name, timeout=self.call_timeout * 2)

        results = await asyncio.gather(*(spawn(n, w) for n, w in planned), return_exceptions=True)
        failed = []
        for (name, where), result in zip(planned, results):
            if isinstance(result, BaseException):
                if not isinstance(result, MeshError):
                    raise result
                log.warning("%s: spawning %s on %s failed: %s", cap, name, where, result)
                # refused for good (cannot build, not assigned): drop it; a transport failure
                # leaves it for the next round (spawn is idempotent)
                if isinstance(result, PlacementRefused) or getattr(result, "type", "") == "PlacementRefused":
                    failed.append(name)
        if failed:
            return await self._commit(cap, rec, _without(rec, failed))
        return rec

    async def _shrink(self, cap: str, rec: dict[str, Any], victims: list[str],
                      reports: dict[str, NodeReport]) -> None:
        new = {"next": rec["next"], "replicas": dict(rec["replicas"])}
        for name in victims:
            new["replicas"][name] = {**new["replicas"][name], "draining": True}
        if await self._commit(cap, rec, new) is None:
            return
        for name in victims:
            report = reports.get(new["replicas"][name]["node"])
            if report is not None:
                self._start_retire(cap, name, report.agent)

    def _start_retire(self, cap: str, name: str, placement: str) -> None:
        key = (cap, name)
        if key not in self._retiring:
            task = asyncio.ensure_future(self._retire(cap, name, placement))
            self._retiring[key] = task
            task.add_done_callback(lambda _t: self._retiring.pop(key, None))

    async def _retire(self, cap: str, name: str, placement: str) -> None:
        node = self._node()
        try:
            await node.call(placement, "retire", name, self.drain_timeout,
                            timeout=self.drain_timeout + self.call_timeout)
        except MeshError as exc:
            log.warning("%s: retiring %s failed (%s); the next round tries again", cap, name, exc)
            return
        for _ in range(5):           # other edits of the record may race with ours: re-read
            try:
                rec = await record(node.kv, cap, timeout=self.call_timeout)
                if name not in rec["replicas"] or await self._commit(cap, rec, _without(rec, [name])) is not None:
                    return
            except MeshError as exc:
                log.info("%s: removing %s from the record: %s", cap, name, exc)
            await asyncio.sleep(self.interval / 2)

    async def _commit(self, cap: str, old: dict[str, Any], new: dict[str, Any] | None) -> dict[str, Any] | None:
        """Compare-and-set the record from ``old`` (as read) to ``new`` (None: delete it);
        the new record, or None if it had changed under us (the round is then dropped)."""
        kv = self._node().kv
        key = STATE_PREFIX + cap
        stored = await kv.get(key, timeout=self.call_timeout)
        expected = stored if parse_record(stored) == old else _MISMATCH
        if expected is _MISMATCH or not await kv.cas(key, expected, new, timeout=self.call_timeout):
            log.info("%s: the record changed under this round; dropping the round", cap)
            return None
        return parse_record(new)


_MISMATCH = object()


def _without(rec: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    gone = set(names)
    return {"next": rec["next"], "replicas": {n: e for n, e in rec["replicas"].items() if n not in gone}}
