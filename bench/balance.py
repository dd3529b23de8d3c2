"""``python -m bench.balance``: ``call_any`` against round-robin and random, one sick replica among healthy ones.

    python -m bench.balance --quick       # about 20 s on 2 cores
    python -m bench.balance --plot        # full run (about 3 minutes) and bench/out/balance.png
    python -m bench.balance --replot      # redraw the plot from bench/out/balance.json

Four replica processes (``python -m mesh.node --agent bench.balance_agents:Replica=rN``, each in
its own process group) offer the capability ``work``: a pool of 4 workers, 1 ms of service
per call (``asyncio.sleep``: no CPU, so the replicas do not compete with the client for the
two cores). A client, a ``mesh.Node`` in this process joined to them, keeps 16 calls in flight
(closed loop) and sends the same number of calls three ways:

* **call_any**: ``node.call_any("work", "work", payload)``, mesh's power-of-two-choices pick
  over its compiled scores (in-flight calls, EWMA latency, error rate, capacity);
* **round-robin**: ``node.call(names[i % n], "work", payload)``;
* **random**: ``node.call(rng.choice(names), "work", payload)``.

Cases (see :mod:`bench.balance_agents`): **slow** — one replica takes 10× the service time
with the same workers (a tenth of the capacity: a degraded replica); **stall** — one replica's
event loop freezes for 30 ms every 300 ms on average (stop-the-world pauses, like a GC of a
large heap); **equal** — all healthy, to see what scoring costs when there is nothing to avoid.

Each case runs several rounds; in each round every strategy first warms up (calls not
counted), then sends its calls, the order of the strategies rotating from round to round so
that drift on a shared machine favours none. Reported per strategy: p50/p99/p99.9 latency over
all rounds, calls/s, the share of calls answered by the sick replica, errors; and the ratios
p99(round-robin)/p99(call_any) and p99(random)/p99(call_any) (above 1×: call_any is better),
over all rounds and per round (their spread shows the noise); and the share of calls slower
than 10 service times, which is steadier than a p99 that sits at the edge of the slow calls.
In a closed loop one pause can catch at most as many calls as are in flight, so in the
*stall* case only about 1% of the calls are delayed whatever the strategy, and its p99 flips
between the healthy and the stalled latency from round to round.

Writes bench/out/balance.md (table), bench/out/balance.json (percentiles, per-round figures,
quantiles for the plot) and, with --plot, bench/out/balance.png (latency tails per case).
Every process started here is killed on the way out (and by the kernel if this one dies).
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import uvloop

import mesh
from bench.baselines import PAYLOAD
from bench.raft import Child, machine, mesh_version, run_main
from bench.report import percentile, publish
from mesh.errors import MeshError

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
STRATEGIES = ("call_any", "round-robin", "random")
CASES = ("slow", "stall", "equal")
CASE_TITLES = {"slow": "one replica 10× slower", "stall": "one replica stalls (GC-like pauses)",
               "equal": "all replicas equal"}
CALL_TIMEOUT_S = 10.0
SLOW_CALL_SERVICES = 10      # a call is "slow" when it took this many healthy service times or more
# Where the CDF in balance.json (and the plot) is sampled: fine towards the tail.
CDF_QUANTILES = tuple(sorted({round(100 - 100 * 10 ** (-k / 20), 4) for k in range(0, 81)} | {0.0, 100.0}))


@dataclass(frozen=True)
class Settings:
    replicas: int = 4
    concurrency: int = 16
    calls: int = 20_000          # per strategy per round (counted)
    warmup: int = 1_000          # per strategy per round (not counted)
    rounds: int = 3
    cases: tuple[str, ...] = CASES
    service_ms: float = 1.0
    workers: int = 4
    factor: float = 10.0
    stall_ms: float = 30.0
    period_ms: float = 300.0
    seed: int = 1


QUICK = Settings(calls=2_000, warmup=300, rounds=3)
FULL = Settings()


# -- replicas --------------------------------------------------------------------------------------


class Replicas:
    """N ``mesh.node`` processes, one :class:`~bench.balance_agents.Replica` each (r1..rN)."""

    def __init__(self, n: int) -> None:
        self.names = [f"r{i + 1}" for i in range(n)]
        self.children: dict[str, Child] = {}
        self.seed = ""

    @staticmethod
    def _argv(name: str, join: str | None) -> list[str]:
        argv = [sys.executable, "-m", "mesh.node", "--insecure", "--id", name, "--bind", "tcp://127.0.0.1:*",
                "--agent", f"bench.balance_agents:Replica={name}", "--log-level", "warning"]
        return argv + (["--join", join] if join else [])

    def start(self) -> None:
        first, *rest = self.names
        self.children[first] = Child(self._argv(first, None), f"replica {first}").start()
        self.seed = self.children[first].ready[1]
        for name in rest:   # the others start side by side, all through the first
            self.children[name] = Child(self._argv(name, self.seed), f"replica {name}").spawn()
        for name in rest:
            self.children[name].wait_ready()

    def stop(self) -> None:
        for child in self.children.values():
            child.stop()


# -- the client ------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    strategy: str
    round: int
    latencies_us: list[float]
    targets: Counter
    errors: Counter
    wall_s: float


Call = Callable[[], Awaitable[Any]]


def strategy_calls(node: Any, names: Sequence[str], seed: int) -> dict[str, Call]:
    """One zero-argument coroutine function per strategy; each makes one ``work`` call."""
    rr = itertools.count()
    rng = random.Random(seed)
    n = len(names)

    def call_any() -> Awaitable[Any]:
        return node.call_any("work", "work", PAYLOAD, timeout=CALL_TIMEOUT_S)

    def round_robin() -> Awaitable[Any]:
        return node.call(names[next(rr) % n], "work", PAYLOAD, timeout=CALL_TIMEOUT_S)

    def uniform() -> Awaitable[Any]:
        return node.call(names[rng.randrange(n)], "work", PAYLOAD, timeout=CALL_TIMEOUT_S)

    return {"call_any": call_any, "round-robin": round_robin, "random": uniform}


async def closed_loop(call: Call, calls: int, concurrency: int,
                      record: bool = True) -> tuple[list[float], Counter, Counter, float]:
    """``concurrency`` callers, each with one call in flight, until ``calls`` calls were made.
    Returns the latencies (µs) of the calls that succeeded, who answered, errors by class, wall time."""
    latencies: list[float] = []
    targets: Counter = Counter()
    errors: Counter = Counter()
    left = [calls]
    clock = time.perf_counter_ns

    async def caller() -> None:
        while left[0] > 0:
            left[0] -= 1
            t0 = clock()
            try:
                who = await call()
            except MeshError as exc:
                errors[type(exc).__name__] += 1
                continue
            if record:
                latencies.append((clock() - t0) / 1e3)
                targets[who] += 1

    t_start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, targets, errors, time.perf_counter() - t_start


async def wait_for_providers(node: Any, names: Sequence[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {a for a, (_, caps) in node.directory().items() if "work" in caps}
        if seen >= set(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the client sees providers {sorted(seen)}, expected {list(names)}")
        await asyncio.sleep(0.05)


async def configure(node: Any, names: Sequence[str], case: str, sick: str, s: Settings) -> None:
    for i, name in enumerate(names):
        mode = "healthy" if name != sick or case == "equal" else case
        await node.call(name, "configure", service_ms=s.service_ms, workers=s.workers, mode=mode,
                        factor=s.factor, stall_ms=s.stall_ms, period_ms=s.period_ms, seed=s.seed + i,
                        timeout=5.0)


async def drive(seed_address: str, names: Sequence[str], s: Settings, progress) -> dict[str, Any]:
    """Run every case; return the results by case (summaries, per-round figures, CDFs)."""
    sick = names[-1]
    results: dict[str, Any] = {}
    node = mesh.Node("bench-client", seeds=[seed_address], join_timeout=20.0, seed=s.seed)
    async with node:
        await wait_for_providers(node, names)
        calls = strategy_calls(node, names, s.seed)
        for case in s.cases:
            await configure(node, names, case, sick, s)
            rounds: list[RoundResult] = []
            for r in range(s.rounds):
                order = STRATEGIES[r % len(STRATEGIES):] + STRATEGIES[:r % len(STRATEGIES)]
                for strategy in order:
                    # Warm-up: call_any learns the scores; the sick replica's queue drains or fills.
                    await closed_loop(calls[strategy], s.warmup, s.concurrency, record=False)
                    lat, targets, errors, wall = await closed_loop(calls[strategy], s.calls, s.concurrency)
                    rounds.append(RoundResult(strategy, r, lat, targets, errors, wall))
                    lat.sort()
                    progress(f"{case}, round {r + 1}/{s.rounds}, {strategy:<11}: p50 {fmt_us(percentile(lat, 50))}, "
                             f"p99 {fmt_us(percentile(lat, 99))}, {len(lat) / wall:,.0f} calls/s, "
                             f"{share(targets, sick):.1%} to {sick}"
                             + (f", errors {dict(errors)}" if errors else ""))
            served = {n: (await node.call(n, "counters", timeout=5.0)) for n in names}
            results[case] = summarize(case, rounds, sick if case != "equal" else None, served, node.members(), s)
    return results


def share(targets: Counter, who: str | None) -> float:
    total = sum(targets.values())
    return targets.get(who, 0) / total if total and who else 0.0


def over(ordered: list[float], limit: float) -> float:
    """The fraction of ``ordered`` (sorted) above ``limit``."""
    return (len(ordered) - bisect.bisect_right(ordered, limit)) / len(ordered) if ordered else math.nan


def summarize(case: str, rounds: list[RoundResult], sick: str | None, served: dict[str, Any],
              members: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    slow_us = SLOW_CALL_SERVICES * s.service_ms * 1e3
    by: dict[str, Any] = {}
    for strategy in STRATEGIES:
        rs = [r for r in rounds if r.strategy == strategy]
        lat = sorted(x for r in rs for x in r.latencies_us)
        targets = sum((r.targets for r in rs), Counter())
        errors = sum((r.errors for r in rs), Counter())
        by[strategy] = {
            "calls": len(lat) + sum(errors.values()), "ok": len(lat), "errors": dict(errors),
            "p50_us": percentile(lat, 50), "p90_us": percentile(lat, 90), "p99_us": percentile(lat, 99),
            "p999_us": percentile(lat, 99.9), "max_us": lat[-1] if lat else math.nan,
            "mean_us": sum(lat) / len(lat) if lat else math.nan,
            "calls_per_s": len(lat) / sum(r.wall_s for r in rs),
            "sick_share": share(targets, sick), "targets": dict(sorted(targets.items())),
            "over_share": over(lat, slow_us), "over_us": slow_us,
            "rounds": [{"round": r.round, "p50_us": percentile(sorted(r.latencies_us), 50),
                        "p99_us": percentile(sorted(r.latencies_us), 99),
                        "calls_per_s": len(r.latencies_us) / r.wall_s, "sick_share": share(r.targets, sick),
                        "over_share": over(sorted(r.latencies_us), slow_us)}
                       for r in rs],
            "cdf_us": [[q, percentile(lat, q)] for q in CDF_QUANTILES],
        }
    base = by["call_any"]
    ratios: dict[str, Any] = {}
    for other in ("round-robin", "random"):
        per_round = [o["p99_us"] / a["p99_us"] for o, a in zip(by[other]["rounds"], base["rounds"])]
        ratios[other] = {"p99": by[other]["p99_us"] / base["p99_us"],
                         "p999": by[other]["p999_us"] / base["p999_us"],
                         "p50": by[other]["p50_us"] / base["p50_us"],
                         "p99_per_round": per_round}
    loads = {m["id"]: m["load"] for m in members if not m["self"]}
    return {"case": case, "sick": sick, "strategies": by, "ratios": ratios, "replicas": served,
            "gossiped_load": loads}


# -- report ----------------------------------------------------------------------------------------


def fmt_us(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:,.0f} µs" if x < 10_000 else f"{x / 1e3:,.1f} ms"


def table(results: dict[str, Any]) -> str:
    first = next(iter(results.values()), None)
    limit = fmt_us(first["strategies"]["call_any"]["over_us"]) if first else "?"
    lines = ["| case | strategy | p50 | p99 | p99.9 | max | calls/s | to the sick replica "
             f"| calls over {limit} | errors | p99 ÷ call_any's (all rounds; per round) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for case, res in results.items():
        for strategy in STRATEGIES:
            st = res["strategies"][strategy]
            if strategy == "call_any":
                rel = "1 (baseline)"
            else:
                rt = res["ratios"][strategy]
                rel = f"**{rt['p99']:.2f}×**; " + " · ".join(f"{x:.2f}" for x in rt["p99_per_round"])
            sick = f"{st['sick_share']:.1%}" if res["sick"] else "–"
            errors = sum(st["errors"].values())
            lines.append(f"| {CASE_TITLES[case]} | {strategy} | {fmt_us(st['p50_us'])} | {fmt_us(st['p99_us'])} "
                         f"| {fmt_us(st['p999_us'])} | {fmt_us(st['max_us'])} | {st['calls_per_s']:,.0f} | {sick} "
                         f"| {st['over_share']:.2%} "
                         f"| {errors} of {st['calls']:,} | {rel} |")
    return "\n".join(lines)


def report(results: dict[str, Any], s: Settings, command: str, started: str, host: str, version: str) -> str:
    notes = [
        f"`{command}` — {started}; {version}; {host}.",
        f"{s.replicas} replica processes (`python -m mesh.node --agent bench.balance_agents:Replica`), each a pool "
        f"of {s.workers} workers holding {s.service_ms:g} ms per call (`asyncio.sleep`: uvloop sleeps in whole ms, "
        f"so about {s.service_ms + 0.1:g} ms); the client, a `mesh.Node` in the benchmark process, keeps "
        f"{s.concurrency} calls in flight (closed loop), payload a 10-field order.",
        f"Per case and strategy: {s.rounds} rounds × {s.calls:,} counted calls, each after {s.warmup:,} warm-up "
        "calls; the strategies' order rotates from round to round. Percentiles over all rounds.",
        f"*slow*: one replica takes {s.factor:g}× the service time with the same {s.workers} workers "
        f"({1 / s.factor:.0%} of a healthy replica's capacity). *stall*: one replica's event loop freezes for "
        f"{s.stall_ms:g} ms every {s.period_ms:g} ms on average (exponential gaps), like stop-the-world GC pauses.",
        "*call_any*: `node.call_any(\"work\", ...)` (power of two choices over the compiled scores); *round-robin* "
        "and *random*: `node.call(name, ...)` over the replica names. Ratio above 1×: call_any's p99 is lower.",
        f"*calls over {fmt_us(SLOW_CALL_SERVICES * s.service_ms * 1e3)}*: the share of calls slower than "
        f"{SLOW_CALL_SERVICES} healthy service times, steadier than a p99 that sits on the edge of the slow calls. "
        "In a closed loop one pause catches at most as many calls as are in flight, so in the *stall* case only "
        "about 1% of the calls can be delayed and its p99 flips between healthy and stalled from round to round.",
    ]
    text = "\n".join(["# Load balancing: call_any vs round-robin vs random (same run)", "",
                      *[f"- {n}" for n in notes], "", table(results), ""])
    extra = []
    for case, res in results.items():
        served = ", ".join(f"{n} {c['served']:,}" + (f" ({c['stalls']} stalls)" if c.get("stalls") else "")
                           for n, c in res["replicas"].items())
        extra.append(f"- {case}: calls served by each replica over the case (warm-ups included): {served}.")
        loads = "; ".join(f"{n} {', '.join(f'{k} {v:g}' for k, v in load.items())}"
                          for n, load in sorted(res["gossiped_load"].items()))
        extra.append(f"- {case}: load summaries the replicas gossiped, as the client held them at the end: {loads}.")
    if extra:
        text += "\n" + "\n".join(extra) + "\n"
    return text


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(results)
    fig, axes = plt.subplots(1, len(cases), figsize=(5.2 * len(cases), 4.4), squeeze=False)
    styles = {"call_any": ("C0", "-"), "round-robin": ("C3", "--"), "random": ("C2", ":")}
    for ax, case in zip(axes[0], cases):
        res = results[case]
        for strategy in STRATEGIES:
            st = res["strategies"][strategy]
            qs = [(q, v) for q, v in st["cdf_us"] if q < 100 and v == v]
            xs = [v / 1e3 for _, v in qs]
            ys = [1 - q / 100 for q, _ in qs]
            color, ls = styles[strategy]
            label = f"{strategy}: p99 {fmt_us(st['p99_us'])}"
            if res["sick"]:
                label += f", {st['sick_share']:.1%} to sick"
            ax.step(xs, ys, where="post", color=color, linestyle=ls, label=label)
        for q in (0.01, 0.001):
            ax.axhline(q, color="gray", lw=0.5, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-4, 1.05)
        ax.set_xlabel("call latency (ms)")
        ax.set_ylabel("fraction of calls slower (1 − CDF)")
        ax.set_title(CASE_TITLES[case], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.balance", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK.calls:,} calls per strategy and round (about 40 s)")
    p.add_argument("--plot", action="store_true", help="also write balance.png (needs matplotlib)")
    p.add_argument("--replot", action="store_true", help="only redraw balance.png from balance.json")
    p.add_argument("--cases", help=f"comma-separated, of {', '.join(CASES)} (default all)")
    p.add_argument("--calls", type=int, help="counted calls per strategy and round (default 20,000; quick 2,000)")
    p.add_argument("--warmup", type=int, help="warm-up calls per strategy and round (default 1,000; quick 300)")
    p.add_argument("--rounds", type=int, help="rounds per case (default 3)")
    p.add_argument("--replicas", type=int, help="replica processes (default 4)")
    p.add_argument("--concurrency", type=int, help="calls in flight (default 16)")
    p.add_argument("--service-ms", type=float, help="service time of a healthy replica (default 1 ms)")
    p.add_argument("--workers", type=int, help="workers per replica (default 4)")
    p.add_argument("--factor", type=float, help="slow case: service-time factor of the sick replica (default 10)")
    p.add_argument("--stall-ms", type=float, help="stall case: length of a pause (default 30 ms)")
    p.add_argument("--period-ms", type=float, help="stall case: mean time from one pause to the next (default 300 ms)")
    p.add_argument("--seed", type=int, help="seed of the client's picks (default 1)")
    p.add_argument("--out", type=Path, default=OUT, help="folder for balance.md/.json/.png (default bench/out)")
    args = p.parse_args(argv)
    out: Path = args.out
    if args.replot:
        saved = json.loads((out / "balance.json").read_text())
        plot(saved["results"], out / "balance.png", f"{saved['command']} — {saved['date']}")
        print(f"plot: {out / 'balance.png'}")
        return 0
    s = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("calls", "warmup", "rounds", "replicas", "concurrency", "service_ms",
                                               "workers", "factor", "stall_ms", "period_ms", "seed")
                 if getattr(args, k) is not None}
    if args.cases:
        overrides["cases"] = tuple(dict.fromkeys(c.strip() for c in args.cases.split(",") if c.strip()))
        unknown = set(overrides["cases"]) - set(CASES)
        if unknown:
            p.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    s = replace(s, **overrides)
    if s.replicas < 2 or s.calls < 1 or s.rounds < 1 or s.concurrency < 1:
        p.error("need --replicas >= 2, --calls >= 1, --rounds >= 1, --concurrency >= 1")

    t_start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"  [{time.monotonic() - t_start:5.0f} s] {msg}", file=sys.stderr, flush=True)

    command = "python -m bench.balance" + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    host = machine()
    version = mesh_version()
    replicas = Replicas(s.replicas)
    progress(f"starting {s.replicas} replicas")
    try:
        replicas.start()
        results = uvloop.run(drive(replicas.seed, replicas.names, s, progress))
    finally:
        replicas.stop()
        Child.kill_all()

    text = report(results, s, command, started, host, version)
    data = {"command": command, "date": started, "machine": host, "mesh": version,
            "settings": s.__dict__ | {"cases": list(s.cases)}, "results": results}
    return publish(out, "balance", text, data,
                   (lambda png: plot(results, png, f"{command} — {started}")) if args.plot else None)


if __name__ == "__main__":
    run_main(main)
