"""``python -m examples.trading``: run the trading system on local node processes and measure it.

    python -m examples.trading                         # 20 s at 20,000 ticks/s (60,000 signals/s)
    python -m examples.trading --quick                 # 8 s
    python -m examples.trading --kill-executor-at 8    # kill -9 the executor's node 8 s in

Starts the seven node processes of :mod:`examples.trading.cluster`, joins them as a client
node (``driver``), writes the risk limits to the Raft KV, waits until every agent is known
and every subscription has reached its publisher, then starts the feeds. While they run it
shows a progress line (signals/s over the last half second, decision p99 so far, orders sent
and acknowledged, where the executor runs). With ``--kill-executor-at`` it kills -9 the node
process hosting the executor singleton at that moment and keeps going until a new executor
has acknowledged orders (at most 30 s more). Then it stops the feeds, lets the pipeline run
dry, drains the strategies' orders and audits:

* signals/s: signals decided by the strategies whose tick happened in the measured window
  (after ``--warmup``), over the window's length; offered = ticks/s x 3 analyses;
* decision latency (tick -> strategy decision) and order latency (tick -> executor's ack),
  p50/p99/p99.9 from mesh's log-bucketed HDR-style histogram (:mod:`mesh.observe.histogram`);
* orders sent / executed / duplicated / lost, as the exchange counted them;
* whether positions agree in the KV (risk), at the exchange and in the portfolio.

Writes ``<out>/summary.json`` and, unless ``--no-plot`` (or without matplotlib),
``<out>/latency.png``. Exit status 0 when every sent order was executed exactly once and the
books agree, 1 otherwise.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import mesh
from mesh.errors import MeshError

from examples.trading import latency
from examples.trading.cluster import Cluster, layout
from examples.trading.idle_policy import cpus_awake
from examples.trading.universe import DEFAULT_LIMIT, FEEDS, KINDS, LIMITS, POSITIONS, STRATEGIES

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
MD = tuple(f"md-{i}" for i in range(len(FEEDS)))
POLL_S = 0.5
FAILOVER_GRACE_S = 30.0          # how much longer a run may go to see the executor come back


@dataclass(frozen=True)
class Settings:
    duration_s: float = 20.0       # feed running time, warm-up included
    warmup_s: float = 2.0          # ticks before this are not measured
    ticks_per_s: float = 20_000.0  # over the three feeds together; each tick makes three signals
    orders_per_s: float = 20.0     # per strategy (token bucket)
    interval_ms: float = 1.0       # how often a feed publishes its batch
    seed: int = 7
    limit: int = DEFAULT_LIMIT     # shares per strategy and symbol, written to trading/limits/
    kill_executor_at: float | None = None   # seconds after the feeds start
    drain_s: float = 30.0          # how long in-flight orders may take at the end
    out: str = str(OUT)
    plot: bool = True
    progress: bool = True
    no_cpu_sleep: bool = False     # hold /dev/cpu_dma_latency at 0 (root): idle CPUs poll


QUICK = Settings(duration_s=8.0, warmup_s=1.0)


class Progress:
    """One status line on stderr: redrawn on a terminal, a line every few seconds otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self._printed = 0.0

    def show(self, elapsed: float, text: str) -> None:
        if not self.enabled:
            return
        line = f"[{elapsed:5.1f} s] {text}"
        if self.tty:
            sys.stderr.write("\r" + line.ljust(110)[:160])
            sys.stderr.flush()
        elif elapsed - self._printed >= 2.0:
            self._printed = elapsed
            print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


async def until(check: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll the coroutine function ``check`` until it returns something true; mesh errors
    (the agent is not there yet) count as not yet."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except MeshError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval_s)


def expected_agents() -> set[str]:
    names = {"executor", "portfolio"}
    for spec in layout():
        names |= {a.rpartition("=")[2] for a in spec.agents}
    return names


async def call(node: mesh.Node, agent: str, method: str, *args: Any, timeout: float = 10.0) -> Any:
    return await node.call(agent, method, *args, timeout=timeout)


async def optional(coro: Any) -> Any:
    """The result, or None if the agent cannot answer (its node was killed)."""
    try:
        return await coro
    except MeshError:
        return None


async def drive(cluster: Cluster, s: Settings, say: Progress) -> dict[str, Any]:
    node = mesh.Node("driver", seeds=[cluster.seed], join_timeout=30.0, default_timeout=10.0, insecure=True)
    async with node:
        names = expected_agents()
        await until(lambda: _all_known(node, names), 60.0, f"the agents {sorted(names)}")
        for feed in FEEDS:
            for sym in feed:
                await node.kv.put(LIMITS + sym, s.limit)
        executor = await until(lambda: _executor_ready(node), 60.0, "the executor's epoch")
        for agent in (*MD, *KINDS):
            await until(lambda: call(node, agent, "subscribed"), 30.0, f"subscribers of {agent}")
        for kind in KINDS:
            await call(node, kind, "start", s.seed)

        cpu0 = cluster.cpu_s()
        t0 = time.monotonic_ns() + 50_000_000
        from_ns = t0 + int(s.warmup_s * 1e9)
        for strategy in STRATEGIES:
            await call(node, strategy, "start", from_ns, s.orders_per_s)
        for md in MD:
            await call(node, md, "start", s.ticks_per_s / len(MD), s.seed, t0, from_ns, s.interval_ms)
        say.note(f"feeds started: {s.ticks_per_s:,.0f} ticks/s over {len(MD)} feeds "
                 f"({s.ticks_per_s * len(KINDS):,.0f} signals/s offered); executor on {executor['node']}")

        timeline, kill = await _watch(node, cluster, s, t0, say)
        say.close()

        end_ns = time.monotonic_ns()
        cpu1 = cluster.cpu_s()
        run_s = (end_ns - t0) / 1e9
        cpu = {n: (cpu1[n] - cpu0[n]) / run_s for n in cpu0 if cpu0[n] is not None and cpu1[n] is not None}
        md_stats = [await call(node, md, "finish", end_ns) for md in MD]
        ticks_in_window = sum(m["in_window"] for m in md_stats)
        # the pipeline runs dry: every tick of the window decided by its strategy (or dropped)
        await until(lambda: _drained(node, ticks_in_window * len(KINDS)), 15.0, "the signal pipeline to run dry", 0.1)
        reports = await asyncio.gather(*(call(node, st, "drain", s.drain_s, timeout=s.drain_s + 5.0)
                                         for st in STRATEGIES))
        analysis = [await call(node, kind, "stats") for kind in KINDS]
        sent = {r["agent"]: r["sent_seqs"] for r in reports}
        audit = await call(node, "exchange", "audit", sent, timeout=30.0)
        executor_info = await until(lambda: _executor_ready(node), 30.0, "the executor")
        portfolio = await call(node, "portfolio", "report", timeout=30.0)
        kv_positions = await node.kv.range(POSITIONS, timeout=10.0)
        risk = {name: await optional(call(node, name, "stats", timeout=2.0))
                for name in sorted(n for n in node.directory() if n.startswith("risk-"))}
        members = {m["id"]: m["state"] for m in node.members()}

    return summarize(s, t0, from_ns, end_ns, md_stats, analysis, reports, audit, executor_info, portfolio,
                     kv_positions, risk, kill, timeline, members, cpu)


async def _watch(node: mesh.Node, cluster: Cluster, s: Settings, t0: int,
                 say: Progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """While the feeds run: the progress line, the timeline for the plot, the kill (if asked)
    and the failover; returns when the run is long enough (and the executor back, if killed)."""
    started = time.monotonic()
    timeline: list[dict[str, Any]] = []
    kill: dict[str, Any] = {}
    last = (time.monotonic_ns(), 0, 0)
    while True:
        await asyncio.sleep(POLL_S)
        now_ns = time.monotonic_ns()
        run_s = (now_ns - t0) / 1e9
        prog = [await optional(call(node, st, "progress", timeout=2.0)) for st in STRATEGIES]
        prog = [p for p in prog if p]
        signals = sum(p["signals"] for p in prog)
        acked = sum(p["acked"] for p in prog)
        dt = (now_ns - last[0]) / 1e9
        rate, ack_rate = (signals - last[1]) / dt, (acked - last[2]) / dt
        last = (now_ns, signals, acked)
        where = node.directory().get("executor", ("-",))[0]
        timeline.append({"t_s": run_s, "signals_per_s": rate, "acks_per_s": ack_rate, "executor": where})
        p99 = max((p["p99_ms"] for p in prog), default=0.0)
        say.show(time.monotonic() - started,
                 f"t={run_s:5.1f}/{s.duration_s:g} s  signals {rate:8,.0f}/s  decision p99 {p99:5.2f} ms  "
                 f"orders sent {sum(p['sent'] for p in prog):,} acked {acked:,}  executor@{where}")
        if s.kill_executor_at is not None and not kill and run_s >= s.kill_executor_at and where != "-":
            kill = _kill_executor(cluster, where, t0)
            say.note(f"killed -9 node {kill['victim']} (hosting the executor) at t={kill['at_s']:.1f} s")
        if kill and "first_ack_ns" not in kill:
            info = await optional(call(node, "executor", "info", timeout=1.0))
            if info and info["node"] != kill["victim"] and info["first_ack_ns"]:
                kill.update(new_node=info["node"], epoch=info["epoch"], ready_ns=info["ready_ns"],
                            first_ack_ns=info["first_ack_ns"])
                say.note(f"executor moved to {info['node']}: elected "
                         f"{(info['ready_ns'] - kill['kill_ns']) / 1e9:.2f} s after the kill, first order "
                         f"acknowledged after {(info['first_ack_ns'] - kill['kill_ns']) / 1e9:.2f} s")
        if run_s >= s.duration_s:
            # with a kill: on until the new executor has acknowledged orders for a second
            if not kill or ("first_ack_ns" in kill and (now_ns - kill["first_ack_ns"]) / 1e9 >= 1.0):
                return timeline, kill
            if run_s >= s.duration_s + FAILOVER_GRACE_S:
                say.note("the executor did not come back in time")
                return timeline, kill


async def _all_known(node: mesh.Node, names: set[str]) -> bool:
    return names <= set(node.directory())


async def _executor_ready(node: mesh.Node) -> dict[str, Any] | None:
    info = await node.call("executor", "info", timeout=2.0)
    return info if info["epoch"] else None


async def _drained(node: mesh.Node, ticks: int) -> bool:
    """Every tick of the window decided, or nothing more arriving (batches were dropped)."""
    decided = await _decided(node)
    if decided >= ticks:
        return True
    await asyncio.sleep(0.3)
    return await _decided(node) == decided


async def _decided(node: mesh.Node) -> int:
    return sum([(await node.call(st, "progress", timeout=2.0))["in_window"] for st in STRATEGIES])


def _kill_executor(cluster: Cluster, victim: str, t0: int) -> dict[str, Any]:
    kill_ns = cluster.kill(victim)
    return {"victim": victim, "kill_ns": kill_ns, "at_s": (kill_ns - t0) / 1e9}


def _sum_counts(parts: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = out.get(k, 0) + v
    return out


def _books(positions: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(positions.items()) if v}


def summarize(s: Settings, t0: int, from_ns: int, end_ns: int, md_stats: list[dict[str, Any]],
              analysis: list[dict[str, Any]], reports: list[dict[str, Any]], audit: dict[str, Any],
              executor: dict[str, Any], portfolio: dict[str, Any], kv_positions: dict[str, Any],
              risk: dict[str, Any], kill: dict[str, Any], timeline: list[dict[str, Any]],
              members: dict[str, str], cpu: dict[str, float]) -> dict[str, Any]:
    window_s = (end_ns - from_ns) / 1e9
    ticks = sum(m["in_window"] for m in md_stats)
    decided = sum(r["in_window"] for r in reports)      # signals: each strategy sees one per tick
    decision = latency.merged(r["decision"] for r in reports)
    order = latency.merged(r["order"] for r in reports)
    drops = {a["node"]: a["subscription_drops"] for a in analysis}
    drops.update({r["node"]: r["subscription_drops"] for r in reports})
    kv_books = _books({k[len(POSITIONS):]: v[0] for k, v in kv_positions.items()})
    exchange_books = _books(audit["net"])
    portfolio_books = _books(portfolio["positions"])
    strategy_books = _books({f"{r['agent']}/{sym}": q for r in reports for sym, q in r["book"].items()})
    acked = sum(r["acked"] for r in reports)
    result: dict[str, Any] = {
        "settings": asdict(s),
        "window_s": window_s,
        "ticks": ticks,
        "ticks_per_s": ticks / window_s,
        "signals": decided,
        "signals_per_s": decided / window_s,
        "signals_offered_per_s": s.ticks_per_s * len(KINDS),
        "batches_dropped": sum(drops.values()),
        "signals_missing": ticks * len(KINDS) - decided,
        "decision_latency": latency.summary(decision),
        "order_latency": latency.summary(order),
        "stages": {
            "feed_batch_age": latency.summary(latency.merged(m["age"] for m in md_stats)),
            "analysis_out_age": latency.summary(latency.merged(a["age"] for a in analysis)),
            "risk_check": latency.summary(latency.merged(r["risk_rtt"] for r in reports)),
            "execute_call": latency.summary(latency.merged(r["execute_rtt"] for r in reports)),
            **{f"executor_{k}": latency.summary(latency.from_wire(h)) for k, h in executor["stages"].items()},
        },
        "largest_batch": max(m["largest_batch"] for m in md_stats),
        "batches": sum(m["batches"] for m in md_stats),
        "orders": {
            "decided": sum(r["orders"] for r in reports),
            "rejected_by_risk": sum(r["rejected"] for r in reports),
            "sent": audit["sent"], "acked": acked, "executed": audit["executed"],
            "duplicated": audit["duplicated"], "lost": audit["lost"], "phantom": audit["phantom"],
            "fills_at_exchange": audit["fills"], "gave_up": sum(r["gave_up"] for r in reports),
            "still_in_flight": sum(r["in_flight"] for r in reports),
            "execute_retries": sum(r["execute_retries"] for r in reports),
            "risk_retries": sum(r["risk_retries"] for r in reports),
            "errors": _sum_counts(r["errors"] for r in reports),
            "examples": {k: audit[k] for k in ("duplicated_keys", "lost_keys", "phantom_keys") if audit[k]},
        },
        "executor": {k: v for k, v in executor.items() if k != "stages"},
        "risk": risk,
        "portfolio": {k: portfolio[k] for k in ("node", "fills", "pnl", "gross", "streamed", "repeated", "reconciled")},
        "books": {"kv": kv_books, "exchange": exchange_books, "portfolio": portfolio_books,
                  "strategies": strategy_books},
        "reconciled": kv_books == exchange_books == portfolio_books == strategy_books,
        "members": members,
        "cpu_cores": cpu,
        "timeline": timeline,
        "cdf": {"decision": latency.cdf(decision), "order": latency.cdf(order)},
    }
    if kill:
        k = dict(kill)
        k["t0_ns"] = t0
        if "first_ack_ns" in kill:
            k["elected_after_s"] = (kill["ready_ns"] - kill["kill_ns"]) / 1e9
            k["first_ack_after_s"] = (kill["first_ack_ns"] - kill["kill_ns"]) / 1e9
        k["max_ack_gap_s"] = max(r["max_ack_gap_ns"] for r in reports) / 1e9
        result["failover"] = k
    o = result["orders"]
    result["ok"] = (o["duplicated"] == 0 and o["lost"] == 0 and o["phantom"] == 0 and o["executed"] == o["sent"]
                    and o["acked"] == o["sent"] and result["reconciled"])
    return result


def fmt_latency(d: dict[str, float]) -> str:
    if not d.get("count"):
        return "no samples"
    return (f"p50 {d['p50_ms']:.2f} ms   p99 {d['p99_ms']:.2f} ms   p99.9 {d['p999_ms']:.2f} ms   "
            f"max {d['max_ms']:.1f} ms   mean {d['mean_ms']:.2f} ms   ({d['count']:,} samples)")


def render(r: dict[str, Any]) -> str:
    s = r["settings"]
    o = r["orders"]
    lines = [
        f"trading run: {r['window_s']:.1f} s measured after {s['warmup_s']:g} s of warm-up; 7 node processes "
        f"(n1 n2 n3 md an st venue); seed {s['seed']}; {mesh.IMPLEMENTATION} core; CPU idle policy "
        f"{r['cpu_idle_policy']}",
        f"  signals    {r['signals']:,} decided = {r['signals_per_s']:,.0f} signals/s "
        f"(offered {r['signals_offered_per_s']:,.0f}/s: {s['ticks_per_s']:,.0f} ticks/s, each analysed 3 ways; "
        f"batches dropped {r['batches_dropped']}, signals not decided {r['signals_missing']})",
        f"  decision   tick -> strategy decision:  {fmt_latency(r['decision_latency'])}",
        f"  orders     tick -> executor ack:       {fmt_latency(r['order_latency'])}",
        f"  orders     sent {o['sent']:,}  executed {o['executed']:,}  duplicated {o['duplicated']}  "
        f"lost {o['lost']}  (acknowledged {o['acked']:,}; fills at the exchange {o['fills_at_exchange']:,}; "
        f"refused by risk {o['rejected_by_risk']:,}; phantom {o['phantom']}; gave up {o['gave_up']})",
    ]
    f = r.get("failover")
    if f:
        if "first_ack_after_s" in f:
            lines.append(f"  failover   killed -9 {f['victim']} (executor) at t={f['at_s']:.1f} s; the executor "
                         f"restarted on {f['new_node']} {f['elected_after_s']:.2f} s later and acknowledged "
                         f"its first order {f['first_ack_after_s']:.2f} s after the kill (longest pause between "
                         f"acknowledgements {f['max_ack_gap_s']:.2f} s)")
        else:
            lines.append(f"  failover   killed -9 {f['victim']} at t={f['at_s']:.1f} s; the executor did NOT come back")
        e = r["executor"]
        lines.append(f"  executor   on {e['node']} (epoch {e['epoch']}): executed {e['executed']:,}; keys it found "
                     f"claimed: filled (replayed) {e['replayed']}, pending and filled at the exchange (recovered) "
                     f"{e['recovered']}, pending and not (resumed) {e['resumed']}; joined {e['joined']}, fenced "
                     f"{e['fenced']}; execute retries by the strategies {o['execute_retries']:,}")
    books = r["books"]["kv"]
    lines.append(f"  books      {'KV (risk) = exchange = portfolio = strategies' if r['reconciled'] else 'DISAGREE'}"
                 f" over {len(books)} non-flat positions; portfolio P&L "
                 + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(r["portfolio"]["pnl"].items())))
    if r["cpu_cores"]:
        lines.append("  cpu        cores busy per process over the run: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in r["cpu_cores"].items())
                     + f"; total {sum(r['cpu_cores'].values()):.2f}")
    lines.append(f"  result     {'OK' if r['ok'] else 'FAILED'}")
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, color, key in (("decision (tick -> strategy)", "C0", "decision"), ("order (tick -> executor ack)", "C3",
                                                                               "order")):
        pts = [(x, y) for x, y in r["cdf"][key] if y > 0]
        if pts:
            d = r[f"{key}_latency"]
            ax1.step([x for x, _ in pts], [y for _, y in pts], where="post", color=color,
                     label=f"{name}: p50 {d['p50_ms']:.2f}, p99 {d['p99_ms']:.2f}, p99.9 {d['p999_ms']:.2f} ms")
    for q in (0.01, 0.001):
        ax1.axhline(q, color="gray", lw=0.5)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("latency (ms)")
    ax1.set_ylabel("fraction slower (1 - CDF)")
    ax1.set_title("latency distribution (log-bucketed histogram)", fontsize=10)
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(fontsize=7.5, loc="lower left")

    tl = r["timeline"][1:]
    xs = [p["t_s"] for p in tl]
    ax2.plot(xs, [p["signals_per_s"] / 1e3 for p in tl], color="C0", label="signals decided (k/s)")
    ax2.set_xlabel("time since the feeds started (s)")
    ax2.set_ylabel("k signals/s")
    ax2.set_ylim(0, max([p["signals_per_s"] / 1e3 for p in tl] + [1.0]) * 1.3)
    ax3 = ax2.twinx()
    ax3.plot(xs, [p["acks_per_s"] for p in tl], color="C3", label="orders acknowledged (/s)")
    ax3.set_ylabel("orders/s")
    ax3.set_ylim(0, max([p["acks_per_s"] for p in tl] + [1.0]) * 1.3)
    ax2.axvline(r["settings"]["warmup_s"], color="gray", ls=":", lw=1)
    f = r.get("failover")
    if f:
        ax2.axvline(f["at_s"], color="k", ls="--", lw=1, label=f"kill -9 {f['victim']} (executor)")
        if "first_ack_after_s" in f:
            ax2.axvline(f["at_s"] + f["first_ack_after_s"], color="C2", ls="--", lw=1,
                        label=f"first ack on {f['new_node']}")
    lines = ax2.get_legend_handles_labels()
    more = ax3.get_legend_handles_labels()
    ax2.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7.5, loc="lower right")
    ax2.set_title("throughput", fontsize=10)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv: list[str] | None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m examples.trading", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK.duration_s:g} s with {QUICK.warmup_s:g} s of warm-up")
    p.add_argument("--duration", type=float, help=f"seconds the feeds run, warm-up included (default {d.duration_s:g})")
    p.add_argument("--warmup", type=float, help=f"seconds not measured at the start (default {d.warmup_s:g})")
    p.add_argument("--rate", type=float, help=f"ticks/s over the three feeds (default {d.ticks_per_s:,.0f}; "
                                              "signals/s is three times that)")
    p.add_argument("--orders-per-s", type=float, help=f"orders/s per strategy at most (default {d.orders_per_s:g})")
    p.add_argument("--interval-ms", type=float, help=f"feed batching interval (default {d.interval_ms:g} ms)")
    p.add_argument("--seed", type=int, help=f"seed of the feeds and models (default {d.seed})")
    p.add_argument("--limit", type=int, help=f"position limit per strategy and symbol (default {d.limit})")
    p.add_argument("--kill-executor-at", type=float, metavar="SECONDS",
                   help="kill -9 the node running the executor this many seconds after the feeds start")
    p.add_argument("--out", help=f"folder for summary.json and latency.png (default {OUT})")
    p.add_argument("--no-plot", action="store_true", help="do not write latency.png")
    p.add_argument("--no-cpu-sleep", action="store_true",
                   help="hold /dev/cpu_dma_latency at 0 for the run (Linux, root): idle CPUs poll instead of "
                        "halting, as on a low-latency host (the same switch as python -m bench --no-cpu-sleep)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    a = p.parse_args(argv)
    s = QUICK if a.quick else d
    for field, value in (("duration_s", a.duration), ("warmup_s", a.warmup), ("ticks_per_s", a.rate),
                         ("orders_per_s", a.orders_per_s), ("interval_ms", a.interval_ms), ("seed", a.seed),
                         ("limit", a.limit), ("kill_executor_at", a.kill_executor_at), ("out", a.out)):
        if value is not None:
            s = replace(s, **{field: value})
    s = replace(s, plot=not a.no_plot, progress=not a.quiet, no_cpu_sleep=a.no_cpu_sleep)
    if s.duration_s <= s.warmup_s or s.ticks_per_s <= 0 or s.interval_ms <= 0 or s.orders_per_s < 0:
        p.error("need --duration > --warmup, --rate > 0, --interval-ms > 0, --orders-per-s >= 0")
    if s.kill_executor_at is not None and not 0 <= s.kill_executor_at < s.duration_s:
        p.error("--kill-executor-at must fall within --duration")
    return s


def run(s: Settings) -> dict[str, Any]:
    """Start the cluster, drive one run, stop it; the summary (also written to ``s.out``)."""
    import uvloop

    say = Progress(s.progress)
    data_root = Path(tempfile.mkdtemp(prefix="mesh-trading-"))
    cluster = Cluster(data_root)
    say.note(f"starting {len(cluster.nodes)} node processes ...")
    try:
        with cpus_awake(s.no_cpu_sleep) as idle_policy:
            cluster.start()
            result = uvloop.run(drive(cluster, s, say))
        result["cpu_idle_policy"] = idle_policy
    finally:
        cluster.stop()
        shutil.rmtree(data_root, ignore_errors=True)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    result["command"] = "python -m examples.trading " + " ".join(sys.argv[1:])
    result["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    result["files"] = [str(out / "summary.json")]
    if s.plot:
        try:
            plot(result, out / "latency.png", f"{result['command']} — {result['date']}")
            result["files"].append(str(out / "latency.png"))
        except ImportError:
            say.note("matplotlib is not installed (pip install -e '.[bench]'): no plot")
    return result


def main(argv: list[str] | None = None) -> int:
    s = parse(argv)
    result = run(s)
    print(render(result))
    print("  files      " + ", ".join(result["files"]))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
