"""The live web page of a node: the whole mesh as this node sees it, in a browser.

Theory of operation
-------------------
* :class:`WebServer` serves, on the node's event loop (:mod:`mesh.observe.http`): ``GET /``
  the page (``page.html``, ``page.css``, ``page.js`` beside this module: plain HTML, vanilla
  JavaScript and SVG drawn by the page itself, nothing from elsewhere, for machines that are
  offline), ``GET /api/mesh`` the JSON the page polls every ``POLL_INTERVAL_S``, and the
  node's ``/metrics`` and ``/health`` as the metrics server has them.
* :class:`MeshView` builds that JSON the way ``meshctl top`` builds its table: membership,
  states and each member's agents from this node's gossip view (``node.members()``), and
  every other figure from one ``_ops.<id>.snapshot()`` call per live member
  (:mod:`mesh.node.ops`): counters, agent loads, Raft status, health score, links, handler
  runs. Calls go out in parallel (at most ``MAX_PARALLEL`` at once, ``MAX_POLLED`` members
  at most), each with its own timeout; a member that does not answer is shown as such
  (``ok: false`` and the error), never as a failure of the whole page.
* The result is kept ``CACHE_S`` and one gathering is shared by every request that arrives
  while it runs, so any number of open browsers cost the mesh one round of calls per
  ``CACHE_S`` at most; with no browser open nothing is gathered at all.
* Charts. Each snapshot carries the node's handler runs since start with their handler-time
  histogram (:mod:`mesh.observe.histogram` buckets). Two successive snapshots of a node give
  one chart point: messages handled per second between them (by the node's own clock) and
  the p50 and p99 handler time of exactly the runs in between (the difference of the two
  histograms, 1.6 % resolution). A member that does not answer adds a gap; a restarted
  member (its counts went down) starts again. The last ``HISTORY_S`` of points are kept per
  member (``HISTORY_POINTS`` at most), so a page opened late shows the last minute at once.
* Topology: each snapshot lists that node's links (up or down) to the others; an edge is up
  when every node that reported on it says so, down when one says down.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable

from mesh.errors import MeshError
from mesh.node.ops import ops_agent_name
from mesh.observe.histogram import LogHistogram, bucket_bounds
from mesh.observe.http import NodeServer, Request, Response
from mesh.observe.metrics import make_registry, metrics_routes

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from mesh.node.runtime import Node

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 1.0      # how often the page asks (told to it in the JSON)
CACHE_S = 0.5              # answers younger than this are served again
CALL_TIMEOUT_S = 1.0       # per _ops snapshot call
MAX_PARALLEL = 32          # snapshot calls in flight at once
MAX_POLLED = 256           # members asked for figures per round; the others are listed only
HISTORY_S = 60.0           # chart span
HISTORY_POINTS = 240       # chart points kept per member (4 a second over HISTORY_S)
LIVE = ("alive", "suspect")

_STATIC = {"/": ("page.html", "text/html; charset=utf-8"),
           "/index.html": ("page.html", "text/html; charset=utf-8"),
           "/page.js": ("page.js", "text/javascript; charset=utf-8"),
           "/page.css": ("page.css", "text/css; charset=utf-8")}
# Nothing but this origin: the page must work offline, and data from the mesh is only text.
_SECURITY = (("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
             ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-store"))


class _Series:
    """One member's chart: its last sample and its points [time_s, msgs_per_s, p50_ms, p99_ms]."""

    __slots__ = ("last", "points")

    def __init__(self) -> None:
        self.last: tuple[float, int, dict[int, int]] | None = None   # node clock, runs, buckets
        self.points: deque[list[float | None]] = deque(maxlen=HISTORY_POINTS)


def interval_figures(before: tuple[float, int, dict[int, int]], after: tuple[float, int, dict[int, int]]
                     ) -> tuple[float, float | None, float | None] | None:
    """(runs per second, p50 ms, p99 ms) of the handler runs between two samples (node clock
    seconds, run count, histogram buckets); None when they cannot be compared (no time passed,
    or the node restarted in between). Percentiles are None when nothing ran."""
    dt = after[0] - before[0]
    runs = after[1] - before[1]
    if dt <= 0 or runs < 0:
        return None
    if runs == 0:
        return 0.0, None, None
    window = LogHistogram()
    top = 0
    for index, n in after[2].items():
        d = n - before[2].get(index, 0)
        if d < 0:                         # a bucket shrank: not the same node's history
            return None
        if d:
            if index >= len(window.counts):
                window.counts.extend([0] * (index + 1 - len(window.counts)))
            window.counts[index] = d
            window.count += d
            top = max(top, bucket_bounds(index)[1])
    window.max = top
    return (round(runs / dt, 2), round(window.value_at_quantile(0.5) / 1e6, 4),
            round(window.value_at_quantile(0.99) / 1e6, 4))


def topology_edges(members: list[dict[str, Any]], links: dict[str, dict[str, str]]) -> list[list[str]]:
    """[a, b, "up"|"down"] for each pair of members (not ``left``) that some answering node
    reported a link between: down if any report says down."""
    known = {m["id"] for m in members if m["state"] != "left"}
    edges: dict[tuple[str, str], str] = {}
    for src, peers in links.items():
        if src not in known:
            continue
        for dst, state in peers.items():
            if dst not in known or dst == src:
                continue
            pair = (src, dst) if src < dst else (dst, src)
            if edges.get(pair) != "down":
                edges[pair] = "up" if state == "up" else "down"
    return [[a, b, s] for (a, b), s in sorted(edges.items())]


def raft_summary(rafts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The group as its members report it: the leader of the highest term anyone has seen."""
    if not rafts:
        return None
    term = max(r["term"] for r in rafts.values())
    current = [r for r in rafts.values() if r["term"] == term]
    leader = next((r["id"] for r in current if r["role"] == "leader"), None)
    if leader is None:
        leader = next((r["leader"] for r in current if r["leader"]), None)
    return {"leader": leader, "term": term, "commit": max(r["commit"] for r in current),
            "voters": sorted(current[0]["voters"])}


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


class MeshView:
    """The JSON of ``/api/mesh``, gathered on ``node`` (see the module docstring)."""

    def __init__(self, node: Node, *, call_timeout_s: float = CALL_TIMEOUT_S, cache_s: float = CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.call_timeout_s = call_timeout_s
        self.cache_s = cache_s
        self.clock = clock
        self._series: dict[str, _Series] = {}
        self._cached: bytes | None = None
        self._cached_at = 0.0
        self._task: asyncio.Future[bytes] | None = None
        self._slots = asyncio.Semaphore(MAX_PARALLEL)

    async def json(self) -> bytes:
        """The current view, encoded; at most one gathering runs at a time, shared by all."""
        if self._cached is not None and self.clock() - self._cached_at < self.cache_s:
            return self._cached
        if self._task is None:
            self._task = asyncio.ensure_future(self._refresh())
        # shield: a caller that goes away must not cancel the gathering the others wait for
        return await asyncio.shield(self._task)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _refresh(self) -> bytes:
        try:
            body = json.dumps(await self.gather(), separators=(",", ":"), default=str).encode()
            self._cached, self._cached_at = body, self.clock()
            return body
        finally:
            self._task = None

    async def gather(self) -> dict[str, Any]:
        """Ask every live member for its snapshot and assemble the view (uncached)."""
        node = self.node
        members = [self._member(m) for m in node.members()]
        polled = [m["id"] for m in members if m["state"] in LIVE][:MAX_POLLED]
        answers = await asyncio.gather(*(self._snapshot(nid) for nid in polled))
        wall = round(time.time(), 3)
        nodes: dict[str, dict[str, Any]] = {}
        links: dict[str, dict[str, str]] = {}
        rafts: dict[str, dict[str, Any]] = {}
        for nid, answer in zip(polled, answers):
            series = self._series.setdefault(nid, _Series())
            if isinstance(answer, dict):
                nodes[nid] = entry = self._figures(answer, series, wall)
                links[nid] = answer.get("links") or {}
                if entry["raft"] is not None:
                    rafts[nid] = answer["raft"]
            else:
                nodes[nid] = {"ok": False, "error": _error(answer)}
                series.points.append([wall, None, None, None])
                series.last = None
        for nid in {m["id"] for m in members} - set(polled):
            series = self._series.get(nid)
            if series is not None and series.points and series.points[-1][1] is not None:
                series.points.append([wall, None, None, None])    # it went away: end its line
            if series is not None:
                series.last = None
        self._forget(wall, {m["id"] for m in members})
        return {"node": node.node_id, "time": wall, "interval_s": POLL_INTERVAL_S, "history_s": HISTORY_S,
                "members": members, "nodes": nodes, "raft": raft_summary(rafts),
                "edges": topology_edges(members, links),
                "series": {nid: list(s.points) for nid, s in sorted(self._series.items())}}

    @staticmethod
    def _member(m: dict[str, Any]) -> dict[str, Any]:
        agents = sorted(m["agents"])
        return {"id": m["id"], "address": m["address"], "state": m["state"], "incarnation": m["incarnation"],
                "link": m["link"], "self": m["self"], "agents": [a for a in agents if not a.startswith("_")],
                "system_agents": sum(a.startswith("_") for a in agents)}

    async def _snapshot(self, nid: str) -> dict[str, Any] | BaseException:
        async with self._slots:
            try:
                return await self.node.call(ops_agent_name(nid), "snapshot", timeout=self.call_timeout_s)
            except MeshError as exc:
                return exc

    def _figures(self, snap: dict[str, Any], series: _Series, wall: float) -> dict[str, Any]:
        handled = snap.get("handled") or {"count": 0, "buckets": []}
        sample = (snap["now_s"], handled["count"], {i: n for i, n in handled["buckets"]})
        figures = interval_figures(series.last, sample) if series.last is not None else None
        series.last = sample
        if figures is not None:
            series.points.append([wall, *figures])
        raft = snap.get("raft")
        health = snap.get("health")
        return {"ok": True, "implementation": snap.get("implementation"), "uptime_s": snap.get("uptime_s"),
                "msgs_per_s": figures[0] if figures else None, "p50_ms": figures[1] if figures else None,
                "p99_ms": figures[2] if figures else None, "runs": handled["count"],
                "errors": handled.get("errors", 0),
                "health": health.get("node") if isinstance(health, dict) else None,
                "raft": None if raft is None else {k: raft.get(k) for k in
                                                   ("role", "term", "leader", "commit", "applied", "last_index")},
                "agents": {name: {k: load.get(k) for k in ("inflight", "queued", "calls", "errors", "latency_ms")}
                           for name, load in sorted(snap.get("agents", {}).items())
                           if not name.startswith("_")}}

    def _forget(self, wall: float, members: set[str]) -> None:
        """Drop members gossip no longer knows, and points older than the chart span."""
        for nid in list(self._series):
            points = self._series[nid].points
            while points and points[0][0] < wall - HISTORY_S:
                points.popleft()
            if nid not in members or not points and self._series[nid].last is None:
                del self._series[nid]


class WebServer(NodeServer):
    """The node's web page over HTTP (see the module docstring); :attr:`url` is the page."""

    def __init__(self, node: Node, host: str = "127.0.0.1", port: int = 0,
                 registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.view = MeshView(node)
        routes: dict[str, Any] = {path: self._static(name, ctype) for path, (name, ctype) in _STATIC.items()}
        routes["/api/mesh"] = self._api
        routes.update(metrics_routes(node, registry if registry is not None else make_registry(node)))
        super().__init__(node.node_id, routes, host, port, name="web page", not_found="not found: try / or /api/mesh")

    def close(self) -> None:
        super().close()
        self.view.close()

    @staticmethod
    def _static(name: str, content_type: str) -> Callable[[Request], Response]:
        body = resources.files(__package__).joinpath(name).read_bytes()
        return lambda request: Response(200, content_type, body, _SECURITY)

    async def _api(self, request: Request) -> Response:
        return Response(200, "application/json", await self.view.json(), _SECURITY)
