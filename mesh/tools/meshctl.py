"""``meshctl``: look at and poke a running mesh from a shell.

    meshctl --join tcp://10.0.0.5:7000 status
    MESH_JOIN=tcp://10.0.0.5:7000 meshctl agents --all
    meshctl kv put limits/AAPL '{"max": 1000}'
    meshctl call calc-1 add 2 3
    meshctl bench calc-1 add 1 2 --calls 20000 --concurrency 16

meshctl joins the mesh as a short-lived member (node id ``meshctl-<pid>-<random>``) through
any node it is given (``--join``, repeatable, or ``$MESH_JOIN``: addresses separated by
commas or spaces), does one thing, and leaves. Membership and the directory come from its
own gossip view; per-node figures (counters, agent load, Raft status) from each node's
``_ops.<node id>`` system agent (:mod:`mesh.node.ops`).

Security: on a mesh with keys, meshctl needs a key the nodes trust (``--keys FILE``, or
``$MESH_KEYS``; an operator key made with ``python -m mesh.keys generate --id ops``) and the
cluster's public keys (``--trust DIR``, ``$MESH_TRUST``). It then joins as
``<key id>~<pid>-<random>`` and the ACL sees it as that key's node. Without keys it speaks
plaintext, which only a loopback mesh started with ``--insecure`` accepts.

Output: aligned tables for people; with ``--json`` (on every sub-command) only JSON on
standard output — one document, or one per line for the streaming commands (``kv watch``,
``top``). Progress and diagnostics go to standard error. Exit status: 0 done, 1 a mesh error
(its class and message on standard error, and ``{"error": {"type", "message"}}`` on standard
output with ``--json``) or a key not found, 2 a usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import secrets
import signal
import sys
import time
from typing import Any, AsyncIterator, Callable

from mesh.errors import MeshError, RemoteError
from mesh.node.ops import ops_agent_name
from mesh.tools import units
from mesh.tools.progress import ProgressBar
from mesh.tools.tables import render

log = logging.getLogger("mesh.tools.meshctl")

ENV_JOIN = "MESH_JOIN"
ENV_KEYS = "MESH_KEYS"
ENV_TRUST = "MESH_TRUST"
ENV_BIND = "MESH_BIND"
LIVE = ("alive", "suspect")
STATE_ORDER = ("alive", "suspect", "dead", "left")
_SETTLE_S = 3.0        # at most this long after joining, wait for every node's _ops agent to be known


class UsageError(Exception):
    """The command line cannot be carried out as given (exit status 2)."""


class NotFound(Exception):
    """What was asked for does not exist (exit status 1, no traceback)."""


# -- the client node: the one place meshctl becomes a member -------------------------------

def client_id(key_id: str | None = None) -> str:
    """meshctl's node id: unique per run; under a key, named for that key's holder."""
    suffix = f"{os.getpid()}-{secrets.token_hex(2)}"
    return f"{key_id}~{suffix}" if key_id else f"meshctl-{suffix}"


@contextlib.asynccontextmanager
async def joined(args: argparse.Namespace) -> AsyncIterator[Any]:
    """A started :class:`mesh.Node` that has joined through ``args.join``; it leaves the mesh
    on exit. Every sub-command talks to the mesh through this node (when nodes authenticate,
    this is where meshctl's credentials go)."""
    import mesh

    if args.keys:
        from mesh.security.keys import load_keys

        keys = load_keys(args.keys)
        security: dict[str, Any] = {"keys": keys, "trust": args.trust}
        name = client_id(keys.node_id)
    else:
        # the nodes of a plaintext mesh warned loudly already; a client need not repeat it
        logging.getLogger("mesh.security.settings").setLevel(logging.ERROR)
        security, name = {"insecure": True}, client_id()
    node = mesh.Node(name, bind=args.bind, seeds=args.join, default_timeout=args.timeout,
                     join_timeout=args.timeout, drain_timeout=1.0, hangup_timeout=0.5, **security)
    await node.start()
    try:
        await _settle(node, min(args.timeout, _SETTLE_S))
        yield node
    finally:
        await node.stop()


async def _settle(node: Any, timeout: float) -> None:
    """Wait until the directory names the ``_ops`` agent of every live member (their
    metadata arrives by gossip, just after the links come up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        directory = node.directory()
        if all(ops_agent_name(m["id"]) in directory for m in _peers(node) if m["state"] in LIVE):
            return
        await asyncio.sleep(0.02)


def _peers(node: Any) -> list[dict[str, Any]]:
    """Every member but meshctl itself."""
    return [m for m in node.members() if not m["self"]]


async def ask_nodes(node: Any, ids: list[str], method: str, timeout: float) -> dict[str, Any]:
    """``_ops.<id>.method()`` on each node at once: id -> answer, or the MeshError it raised."""
    async def one(nid: str) -> Any:
        try:
            return await node.call(ops_agent_name(nid), method, timeout=timeout)
        except MeshError as exc:
            return exc
    answers = await asyncio.gather(*(one(n) for n in ids))
    return dict(zip(ids, answers))


def _live_ids(node: Any) -> list[str]:
    return [m["id"] for m in _peers(node) if m["state"] in LIVE]


# -- output ---------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            return bytes(value).hex()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, BaseException):
        return {"type": type(value).__name__, "message": str(value)}
    return repr(value)


def dumps(value: Any, pretty: bool = False) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=2 if pretty else None)


class Output:
    """Where results go: human text or JSON on stdout, nothing else there."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json

    def emit(self, data: Any, human: Callable[[], str]) -> None:
        print(dumps(data) if self.json else human(), flush=True)

    def note(self, text: str) -> None:
        """Side information for people: on stderr, never in the way of --json."""
        print(text, file=sys.stderr, flush=True)


def parse_value(text: str) -> Any:
    """A command-line value: JSON if it parses as JSON, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def show_value(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value, pretty=isinstance(value, (dict, list)))


def one_line(value: Any) -> str:
    return value if isinstance(value, str) else dumps(value)


def _user(name: str) -> bool:
    return not name.startswith("_")


def _err(answer: Any) -> str:
    return f"({type(answer).__name__})"


# -- members, agents, raft, status ----------------------------------------------------------

async def cmd_members(node: Any, args: argparse.Namespace, out: Output) -> int:
    members = _peers(node)
    for m in members:
        m.pop("self", None)

    def human() -> str:
        rows = [[m["id"], m["address"], m["state"], m["incarnation"], m["link"],
                 len([a for a in m["agents"] if args.all or _user(a)]),
                 units.rate(m["load"].get("calls_per_s"))] for m in members]
        return render(["NODE", "ADDRESS", "STATE", "INC", "LINK", "AGENTS", "CALLS/S"], rows, numeric=(3, 5, 6))
    out.emit(members, human)
    return 0


async def cmd_agents(node: Any, args: argparse.Namespace, out: Output) -> int:
    me = node.node_id
    listed = {name: (nid, caps) for name, (nid, caps) in node.directory().items()
              if nid != me and (args.all or _user(name))}
    loads = await ask_nodes(node, sorted({nid for nid, _ in listed.values()}), "agents", args.timeout)
    agents = []
    for name, (nid, caps) in sorted(listed.items(), key=lambda kv: (kv[1][0], kv[0])):
        answer = loads.get(nid)
        load = answer["agents"].get(name) if isinstance(answer, dict) else None
        entry = {"name": name, "node": nid, "capabilities": list(caps)}
        entry["load"] = {k: v for k, v in load.items() if k != "capabilities"} if load else None
        agents.append(entry)

    def human() -> str:
        rows = []
        for a in agents:
            ld = a["load"] or {}
            rows.append([a["name"], a["node"], ",".join(a["capabilities"]) or "-", ld.get("inflight"),
                         ld.get("queued"), units.count(ld.get("calls")), units.count(ld.get("errors")),
                         units.duration_ms(ld["latency_ms"]) if ld.get("calls") else None])
        return render(["AGENT", "NODE", "CAPABILITIES", "IN-FLIGHT", "QUEUED", "CALLS", "ERRORS", "LATENCY"],
                      rows, numeric=(3, 4, 5, 6, 7))
    out.emit(agents, human)
    return 0


def raft_summary(statuses: dict[str, dict]) -> dict[str, Any] | None:
    """The group as its members report it: the leader of the highest term anyone has seen."""
    if not statuses:
        return None
    term = max(s["term"] for s in statuses.values())
    current = [s for s in statuses.values() if s["term"] == term]
    leaders = [s for s in current if s["role"] == "leader"]
    ref = leaders[0] if leaders else max(current, key=lambda s: s["commit"])
    return {"leader": ref["id"] if leaders else next((s["leader"] for s in current if s["leader"]), None),
            "term": term, "commit": ref["commit"], "applied": ref["applied"], "revision": ref["revision"],
            "voters": ref["voters"], "learners": ref["learners"]}


async def _raft_statuses(node: Any, timeout: float) -> tuple[dict[str, dict], dict[str, MeshError]]:
    answers = await ask_nodes(node, _live_ids(node), "raft", timeout)
    statuses = {nid: a for nid, a in answers.items() if isinstance(a, dict)}
    failed = {nid: a for nid, a in answers.items() if isinstance(a, MeshError)}
    return statuses, failed


async def cmd_raft(node: Any, args: argparse.Namespace, out: Output) -> int:
    statuses, failed = await _raft_statuses(node, args.timeout)
    summary = raft_summary(statuses)
    data = {**(summary or {"leader": None}), "nodes": statuses,
            "unanswered": {nid: _json_default(e) for nid, e in failed.items()}}

    def human() -> str:
        if not statuses:
            return "no node keeps a Raft log (start voters with --raft-voters and --data-dir)"
        rows = [[s["id"], s["role"], s["term"], s["leader"], s["commit"], s["applied"], s["last_index"],
                 s["snapshot_index"], s["revision"]] for _, s in sorted(statuses.items())]
        rows += [[nid, _err(e)] + [None] * 7 for nid, e in sorted(failed.items())]
        table = render(["NODE", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT", "REVISION"],
                       rows, numeric=(2, 4, 5, 6, 7, 8))
        tail = (f"leader {summary['leader'] or '(none)'} · term {summary['term']} · commit {summary['commit']}"
                f" · voters {' '.join(summary['voters']) or '-'} · learners {' '.join(summary['learners']) or '-'}")
        return f"{table}\n\n{tail}"
    out.emit(data, human)
    return 0


async def cmd_status(node: Any, args: argparse.Namespace, out: Output) -> int:
    peers = _peers(node)
    by_state: dict[str, list[str]] = {}
    for m in peers:
        by_state.setdefault(m["state"], []).append(m["id"])
    directory = {n: v for n, v in node.directory().items() if v[0] != node.node_id}
    user = sorted(n for n in directory if _user(n))
    statuses, failed = await _raft_statuses(node, args.timeout)
    summary = raft_summary(statuses)
    data = {"observer": node.node_id, "members": by_state,
            "agents": {n: directory[n][0] for n in user},
            "system_agents": len(directory) - len(user), "raft": summary}

    def human() -> str:
        lines = ["members  " + (" · ".join(f"{len(by_state[s])} {s}" for s in STATE_ORDER if s in by_state)
                                or "none")]
        for s in STATE_ORDER:
            if s in by_state:
                lines.append(f"  {s:<7}  {' '.join(sorted(by_state[s]))}")
        lines.append(f"agents   {len(user)} (+{data['system_agents']} system)")
        per_node: dict[str, list[str]] = {}
        for n in user:
            per_node.setdefault(directory[n][0], []).append(n)
        for nid in sorted(per_node):
            lines.append(f"  {nid:<7}  {' '.join(per_node[nid])}")
        if summary is None:
            lines.append("raft     no node keeps a Raft log")
        else:
            lines.append(f"raft     leader {summary['leader'] or '(none)'} · term {summary['term']}"
                         f" · commit {summary['commit']} · applied {summary['applied']}")
            lines.append(f"  voters   {' '.join(summary['voters']) or '-'}")
            if summary["learners"]:
                lines.append(f"  learners {' '.join(summary['learners'])}")
        if failed:
            lines.append("unanswered  " + " ".join(f"{n} {_err(e)}" for n, e in sorted(failed.items())))
        return "\n".join(lines)
    out.emit(data, human)
    return 0


# -- kv ---------------------------------------------------------------------------------------

async def cmd_kv_get(node: Any, args: argparse.Namespace, out: Output) -> int:
    value = await node.kv.get(args.key, timeout=args.timeout)
    if value is None:           # the store does not tell an absent key from a stored null
        if out.json:
            out.emit({"key": args.key, "value": None, "found": False}, str)
        raise NotFound(f"no key {args.key!r}")
    out.emit({"key": args.key, "value": value, "found": True}, lambda: show_value(value))
    return 0


async def cmd_kv_put(node: Any, args: argparse.Namespace, out: Output) -> int:
    value = parse_value(args.value)
    revision = await node.kv.put(args.key, value, timeout=args.timeout)
    out.emit({"key": args.key, "value": value, "revision": revision}, lambda: f"revision {revision}")
    return 0


async def cmd_kv_del(node: Any, args: argparse.Namespace, out: Output) -> int:
    deleted = await node.kv.delete(args.key, timeout=args.timeout)
    out.emit({"key": args.key, "deleted": bool(deleted)}, lambda: "deleted" if deleted else "no such key")
    return 0


async def cmd_kv_ls(node: Any, args: argparse.Namespace, out: Output) -> int:
    revision, found = await node.kv.range(args.prefix, revision=True, timeout=args.timeout)
    out.emit({"revision": revision, "items": found},
             lambda: render(["KEY", "VALUE"], [[k, one_line(v)] for k, v in sorted(found.items())]))
    return 0


async def cmd_kv_watch(node: Any, args: argparse.Namespace, out: Output) -> int:
    after = args.after
    if after is None:
        after, _ = await node.kv.range(args.prefix, revision=True, timeout=args.timeout)
    out.note(f"watching {args.prefix!r} after revision {after} (Ctrl-C to stop)")
    seen = 0
    async for event in node.kv.watch(args.prefix, after=after, timeout=args.timeout):
        data = {"kind": event.kind, "key": event.key, "value": event.value, "revision": event.revision}
        out.emit(data, lambda: f"{event.revision:>6}  {event.kind:<6}  {event.key}  "
                               f"{'' if event.value is None else one_line(event.value)}".rstrip())
        seen += 1
        if args.count is not None and seen >= args.count:
            break
    return 0


# -- call -------------------------------------------------------------------------------------

async def cmd_call(node: Any, args: argparse.Namespace, out: Output) -> int:
    values = [parse_value(a) for a in args.args]
    if args.any:
        result = await node.call_any(args.agent, args.method, *values, timeout=args.timeout)
    else:
        result = await node.call(args.agent, args.method, *values, timeout=args.timeout)
    out.emit({"result": result}, lambda: show_value(result))
    return 0


# -- top --------------------------------------------------------------------------------------

def top_rows(prev: dict[str, dict], now: dict[str, Any], states: dict[str, str], show_all: bool
             ) -> dict[str, Any]:
    """Two samples of every node's snapshot -> the nodes and agents with their rates."""
    nodes, agents = [], []
    for nid in sorted(now):
        snap = now[nid]
        if not isinstance(snap, dict):
            nodes.append({"node": nid, "state": states.get(nid, "?"), "error": _json_default(snap)})
            continue
        before = prev.get(nid) if isinstance(prev.get(nid), dict) else None
        dt = snap["now_s"] - before["now_s"] if before else 0.0
        st, st0 = snap["stats"], (before or {}).get("stats", {})

        def per_s(new: float, old: float | None) -> float | None:
            return None if old is None or dt <= 0 else round(max(new - old, 0) / dt, 1)
        served = st.get("calls_in", 0) + st.get("sends_in", 0)
        served0 = st0.get("calls_in", 0) + st0.get("sends_in", 0) if before else None
        raft = snap.get("raft")
        nodes.append({"node": nid, "state": states.get(nid, "?"), "calls_per_s": per_s(served, served0),
                      "handlers": st.get("running_handlers", 0), "pending": st.get("pending_calls", 0),
                      "errors": st.get("handler_errors", 0) + st.get("errors_out", 0),
                      "raft": raft["role"] if raft else None, "uptime_s": snap["uptime_s"]})
        for name, ld in sorted(snap["agents"].items()):
            if not (show_all or _user(name)):
                continue
            old = (before or {}).get("agents", {}).get(name)
            agents.append({"agent": name, "node": nid,
                           "calls_per_s": per_s(ld["calls"], old["calls"] if old else None),
                           "inflight": ld["inflight"], "queued": ld["queued"],
                           "errors": ld["errors"] + ld["rejected"] + ld["expired"],
                           "latency_ms": ld["latency_ms"] if ld["calls"] else None})
    return {"time": time.time(), "nodes": nodes, "agents": agents}


def render_top(view: dict[str, Any], interval: float) -> str:
    nodes, agents = view["nodes"], view["agents"]
    total = sum(n.get("calls_per_s") or 0 for n in nodes)
    head = (f"meshctl top · {len(nodes)} nodes · {len(agents)} agents · {units.rate(total)} calls/s · "
            f"every {interval:g} s · {time.strftime('%H:%M:%S', time.localtime(view['time']))}")
    node_rows = [[n["node"], n["state"], units.rate(n.get("calls_per_s")), n.get("handlers"), n.get("pending"),
                  units.count(n.get("errors")), n.get("raft") or ("-" if "error" not in n else n["error"]["type"]),
                  units.uptime(n["uptime_s"]) if "uptime_s" in n else None] for n in nodes]
    agent_rows = [[a["agent"], a["node"], units.rate(a["calls_per_s"]), a["inflight"], a["queued"],
                   units.count(a["errors"]), units.duration_ms(a["latency_ms"])] for a in agents]
    return "\n".join([
        head, "",
        render(["NODE", "STATE", "CALLS/S", "HANDLERS", "PENDING", "ERRORS", "RAFT", "UPTIME"], node_rows,
               numeric=(2, 3, 4, 5, 7)), "",
        render(["AGENT", "NODE", "CALLS/S", "IN-FLIGHT", "QUEUED", "ERRORS", "LATENCY"], agent_rows,
               numeric=(2, 3, 4, 5, 6))])


async def cmd_top(node: Any, args: argparse.Namespace, out: Output) -> int:
    iterations = 1 if args.once else args.iterations
    redraw = sys.stdout.isatty() and not out.json

    async def sample() -> dict[str, Any]:
        return await ask_nodes(node, _live_ids(node), "snapshot", min(args.timeout, max(args.interval, 0.5)))
    prev = await sample()
    done = 0
    while iterations is None or done < iterations:
        await asyncio.sleep(args.interval)
        now = await sample()
        states = {m["id"]: m["state"] for m in _peers(node)}
        view = top_rows(prev, now, states, args.all)
        prev = now
        done += 1
        if redraw:
            print("\x1b[H\x1b[2J", end="")
        out.emit(view, lambda: render_top(view, args.interval) + ("" if redraw else "\n"))
    return 0


# -- bench ------------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of an already sorted list."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


async def cmd_bench(node: Any, args: argparse.Namespace, out: Output) -> int:
    if args.calls < 1 or args.concurrency < 1:
        raise UsageError("--calls and --concurrency must be at least 1")
    values = [parse_value(a) for a in args.args]
    target = node.call_any if args.any else node.call

    async def one() -> None:
        await target(args.agent, args.method, *values, timeout=args.timeout)
    for _ in range(args.warmup):           # also fails fast on a wrong name, before any figure
        await one()

    rtt_ns: list[int] = []
    errors: dict[str, int] = {}
    issued = 0
    bar = ProgressBar(args.calls, f"{args.agent}.{args.method} ", enabled=not args.quiet)
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal issued
        while issued < args.calls:
            issued += 1
            t0 = clock()
            try:
                await one()
            except MeshError as exc:
                name = exc.type if isinstance(exc, RemoteError) else type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            else:
                rtt_ns.append(clock() - t0)
            bar.update(len(rtt_ns) + sum(errors.values()), sum(errors.values()))
    t_start = clock()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, args.calls))))
    elapsed_s = (clock() - t_start) / 1e9
    bar.close()

    rtt_ns.sort()
    us = [v / 1000 for v in rtt_ns]
    result: dict[str, Any] = {
        "target": args.agent, "method": args.method, "by_capability": args.any,
        "calls": len(rtt_ns) + sum(errors.values()), "ok": len(rtt_ns), "errors": errors,
        "concurrency": args.concurrency, "elapsed_s": round(elapsed_s, 6),
        "calls_per_s": round((len(rtt_ns) + sum(errors.values())) / elapsed_s, 1) if elapsed_s > 0 else None}
    for label, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
        v = percentile(us, q)
        result[f"rtt_us_{label}"] = None if v is None else round(v, 1)
    result["rtt_us_max"] = round(us[-1], 1) if us else None
    result["rtt_us_mean"] = round(sum(us) / len(us), 1) if us else None
    if args.plot:
        write_plot(args.plot, us, f"meshctl bench {args.agent}.{args.method} · c={args.concurrency}")
        out.note(f"wrote {args.plot}")

    def human() -> str:
        ms = lambda key: units.duration_ms(None if result[key] is None else result[key] / 1000)  # noqa: E731
        err = ", ".join(f"{n} {t}" for t, n in sorted(errors.items())) or "none"
        return "\n".join([
            f"{'call_any' if args.any else 'call'} {args.agent}.{args.method} · {result['calls']} calls · "
            f"concurrency {args.concurrency} · {elapsed_s:.2f} s",
            f"throughput  {units.rate(result['calls_per_s'])} calls/s",
            "latency     " + "  ".join(f"{k} {ms('rtt_us_' + k)}" for k in ("p50", "p90", "p99", "p999", "max")),
            f"errors      {err}"])
    out.emit(result, human)
    return 0


def write_plot(path: str, rtt_us: list[float], title: str) -> None:
    """The latency distribution (CDF, log scale) as an image (needs matplotlib)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install 'mesh[bench]')") from None
    fig, ax = plt.subplots(figsize=(7, 4))
    n = len(rtt_us)
    ax.plot(rtt_us, [(i + 1) / n for i in range(n)])
    ax.set_xscale("log")
    ax.set_xlabel("round trip (µs)")
    ax.set_ylabel("fraction of calls")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- command line -----------------------------------------------------------------------------

def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options every sub-command takes, before or after its name."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--join", action="append", metavar="ADDRESS", default=d(None),
                   help=f"address of a mesh node to join through (repeatable; default ${ENV_JOIN})")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=d(5.0),
                   help="bound on joining and on each request (default 5)")
    p.add_argument("--bind", metavar="ENDPOINT", default=d(None),
                   help=f"endpoint meshctl binds for its replies; peers must reach it "
                        f"(default ${ENV_BIND} or tcp://127.0.0.1:*)")
    p.add_argument("--keys", metavar="FILE", default=d(None),
                   help=f"meshctl's key file (a .key the nodes trust; default ${ENV_KEYS}); none: plaintext")
    p.add_argument("--trust", metavar="PATH", default=d(None),
                   help=f"folder or file of the cluster's public keys (default ${ENV_TRUST})")
    p.add_argument("--json", action="store_true", default=d(False),
                   help="machine-readable output: JSON on stdout and nothing else there")
    p.add_argument("-v", "--verbose", action="store_true", default=d(False), help="log what the client node does")
    return p


def add_target(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The AGENT METHOD [ARG...] [--any] that call and bench share."""
    sp.add_argument("agent")
    sp.add_argument("method")
    sp.add_argument("args", nargs="*", metavar="ARG")
    sp.add_argument("--any", action="store_true", help="AGENT is a capability: call_any, load-balanced")
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshctl", parents=[_common(False)],
        description="Inspect and operate a running mesh. meshctl joins it as a short-lived member "
                    "through --join and leaves when done.",
        epilog="Example: meshctl --join tcp://127.0.0.1:7000 status")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = [_common(True)]

    def add(name: str, fn: Callable, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, parents=common, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    add("status", cmd_status, "the mesh at a glance: members by state, agents, Raft leader/term/commit")
    add("members", cmd_members, "every member: address, SWIM state, incarnation, link, agents, calls/s") \
        .add_argument("--all", action="store_true", help="count system agents (_-prefixed) too")
    add("agents", cmd_agents, "every agent: node, capabilities and its load (in flight, queued, calls, "
                              "errors, latency)").add_argument("--all", action="store_true",
                                                               help="show system agents (_-prefixed) too")
    add("raft", cmd_raft, "the Raft group: each member's role, term, commit and applied index; the leader")

    kv = sub.add_parser("kv", parents=common, help="the replicated key-value store",
                        description="the replicated key-value store")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="KV_COMMAND", required=True)
    add("get", cmd_kv_get, "print a key's value (linearizable read); exit 1 if absent", kv_sub) \
        .add_argument("key")
    sp = add("put", cmd_kv_put, "store a value (JSON if it parses as JSON, else a string); print the "
                                "revision", kv_sub)
    sp.add_argument("key")
    sp.add_argument("value")
    add("del", cmd_kv_del, "delete a key", kv_sub).add_argument("key")
    add("ls", cmd_kv_ls, "every key under a prefix with its value", kv_sub).add_argument("prefix", nargs="?",
                                                                                          default="")
    sp = add("watch", cmd_kv_watch, "print every change under a prefix until Ctrl-C or --count", kv_sub)
    sp.add_argument("prefix", nargs="?", default="")
    sp.add_argument("--count", type=int, metavar="N", help="stop after N events")
    sp.add_argument("--after", type=int, metavar="REVISION", help="start after this revision (default: now)")

    add_target(add("call", cmd_call, "call AGENT.METHOD with ARGS (each JSON if it parses, else a string) "
                                     "and print the result"))

    sp = add("top", cmd_top, "a live table of nodes and agents: calls/s, in flight, queued, errors, latency")
    sp.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period (default 1)")
    sp.add_argument("--once", action="store_true", help="one table (after one interval) and exit")
    sp.add_argument("--iterations", type=int, metavar="N", help="N tables and exit")
    sp.add_argument("--all", action="store_true", help="show system agents (_-prefixed) too")

    sp = add_target(add("bench", cmd_bench, "round trips and throughput of AGENT.METHOD(ARGS) from here; "
                                            "prints p50/p99/p999 and calls/s"))
    sp.add_argument("--calls", type=int, default=10_000, metavar="N", help="calls to measure (default 10000)")
    sp.add_argument("--concurrency", type=int, default=1, metavar="C", help="calls in flight (default 1)")
    sp.add_argument("--warmup", type=int, default=10, metavar="N", help="calls made first, not measured (default 10)")
    sp.add_argument("--plot", metavar="FILE", help="also write the latency CDF to FILE (.png, .svg; "
                                                   "needs matplotlib)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in what comes from the environment; check what argparse cannot."""
    if not args.join:
        args.join = [a for a in re.split(r"[\s,]+", os.environ.get(ENV_JOIN, "")) if a]
    if not args.join:
        raise UsageError(f"no mesh to join: give --join ADDRESS or set ${ENV_JOIN}")
    if args.bind is None:
        args.bind = os.environ.get(ENV_BIND) or "tcp://127.0.0.1:*"
    args.keys = args.keys or os.environ.get(ENV_KEYS) or None
    args.trust = args.trust or os.environ.get(ENV_TRUST) or None
    if args.keys and not args.trust:
        raise UsageError(f"--keys needs --trust (or ${ENV_TRUST}): the cluster's public keys")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return args


async def run(args: argparse.Namespace) -> int:
    out = Output(args.json)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        command.cancel()
    command: asyncio.Future = loop.create_future()
    try:
        async with joined(args) as node:
            command = asyncio.ensure_future(args.fn(node, args, out))
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, interrupt)
            try:
                return await command
            except asyncio.CancelledError:
                if not interrupted or task.cancelling():
                    raise
                return 0 if args.fn in (cmd_kv_watch, cmd_top) else 130
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
    except MeshError as exc:
        kind = exc.type if isinstance(exc, RemoteError) else type(exc).__name__
        if out.json:
            print(dumps({"error": {"type": type(exc).__name__, "message": str(exc),
                                   **({"remote_type": kind} if isinstance(exc, RemoteError) else {})}}))
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except NotFound as exc:
        out.note(f"meshctl: {exc}")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve(args)
    except UsageError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        try:
            import uvloop
        except ImportError:     # uvloop does not exist on Windows
            return asyncio.run(run(args))
        return uvloop.run(run(args))
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:     # the reader went away (meshctl top --json | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
