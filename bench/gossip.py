"""``python -m bench.gossip``: SWIM in the simulator, against cluster size.

    python -m bench.gossip                       # sizes 10, 50, 200, 1000 (a few minutes)
    python -m bench.gossip --sizes 10,50 --seeds 5 --plot

For each size and seed, one simulated cluster (1 ms + exp(1 ms) one-way latency, no loss,
default SwimConfig) goes through:

1. **join**: every node starts at t=0 and joins through one seed; time until every node
   holds the same full view;
2. **quiet**: 30 periods later, 20 periods of steady state: messages and bytes sent per node
   per period;
3. **spread**: one node publishes new metadata; time until every node has it (epidemic
   dissemination: should grow like log n);
4. **crash**: one node stops; time until every other node holds it DEAD, and the traffic
   per node per period meanwhile.

Times are virtual (protocol periods of 500 ms), so they do not depend on this machine.
Writes bench/out/gossip.md (the table), bench/out/gossip.json (the runs; ``--replot`` redraws
from it) and, with --plot, bench/out/gossip.png.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mesh.sim.swim import SwimCluster
from mesh.swim.config import SwimConfig
from mesh.swim.formulas import retransmit_limit, suspicion_timeout_ms

OUT = Path(__file__).resolve().parent / "out"
PERIOD_MS = SwimConfig().probe_interval_ms


@dataclass
class Run:
    n: int
    seed: int
    join_ms: int
    spread_ms: int
    detect_ms: int
    quiet_msgs: float
    quiet_bytes: float
    busy_msgs: float
    busy_bytes: float
    cpu_s: float


def measure(n: int, seed: int) -> Run:
    t_cpu = time.process_time()
    c = SwimCluster(seed=seed, n=n)
    join = c.run_until_converged(120 * PERIOD_MS, check_every_ms=10)
    if join is None:
        raise RuntimeError(f"n={n} seed={seed}: no convergence within 120 periods")
    c.run_for(30 * PERIOD_MS)   # the join storm's broadcasts drain (up to 16 retransmits each)
    mark = c.mark()
    c.run_for(20 * PERIOD_MS)
    quiet = c.traffic_since(mark)

    rng = random.Random(seed)
    speaker = rng.choice(c.live_ids())
    c.set_meta(speaker, b"v2")
    t0 = c.now_ms
    spread = c.run_until_true(lambda: all(c.nodes[o].core.member(speaker).meta == b"v2"
                                          for o in c.live_ids()), 40 * PERIOD_MS, check_every_ms=5)
    if spread is None:
        raise RuntimeError(f"n={n} seed={seed}: metadata did not spread within 40 periods")
    c.run_for(10 * PERIOD_MS)   # let the broadcast queues drain before the next phase

    victim = rng.choice([i for i in c.live_ids() if i != speaker][1:])
    t1 = c.now_ms
    mark = c.mark()
    c.crash(victim)
    detected = c.run_until_true(lambda: c.detection_ms(victim, t1) is not None, 80 * PERIOD_MS,
                                check_every_ms=10)
    if detected is None:
        raise RuntimeError(f"n={n} seed={seed}: crash of {victim} not detected within 80 periods")
    busy = c.traffic_since(mark)
    return Run(n, seed, join, spread - t0, c.detection_ms(victim, t1), quiet.msgs_per_node_period,
               quiet.bytes_per_node_period, busy.msgs_per_node_period, busy.bytes_per_node_period,
               time.process_time() - t_cpu)


def periods(ms: float) -> str:
    return f"{ms / PERIOD_MS:.1f}"


def table(runs: list[Run]) -> str:
    lines = [
        "| nodes | seeds | join → one view | metadata spread | crash → DEAD everywhere "
        "| (min suspicion) | msgs / node / period quiet · during detection "
        "| bytes / node / period quiet · detection | retransmits | sim CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r.n for r in runs}):
        rs = [r for r in runs if r.n == n]
        med = lambda f: statistics.median(f(r) for r in rs)   # noqa: E731
        lines.append(
            f"| {n} | {len(rs)} | {periods(med(lambda r: r.join_ms))} | {periods(med(lambda r: r.spread_ms))} "
            f"| {periods(med(lambda r: r.detect_ms))} (max {periods(max(r.detect_ms for r in rs))}) "
            f"| {periods(suspicion_timeout_ms(4, n, PERIOD_MS))} "
            f"| {med(lambda r: r.quiet_msgs):.1f} · {med(lambda r: r.busy_msgs):.1f} "
            f"| {med(lambda r: r.quiet_bytes):,.0f} · {med(lambda r: r.busy_bytes):,.0f} "
            f"| {retransmit_limit(4, n)} | {sum(r.cpu_s for r in rs):.0f} s |")
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r.n for r in runs})

    def series(f):
        return [statistics.median(f(r) for r in runs if r.n == n) / PERIOD_MS for n in sizes]

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    a.plot(sizes, series(lambda r: r.join_ms), "o-", label="join storm → one view")
    a.plot(sizes, series(lambda r: r.spread_ms), "s-", label="metadata update reaches all")
    a.plot(sizes, series(lambda r: r.detect_ms), "^-", label="crash → DEAD everywhere")
    a.plot(sizes, [suspicion_timeout_ms(4, n, PERIOD_MS) / PERIOD_MS for n in sizes], "k:",
           label="min suspicion timeout (formula)")
    a.set_xscale("log")
    a.set_xlabel("nodes")
    a.set_ylabel("protocol periods (500 ms)")
    a.set_title("Convergence and detection (median over seeds)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    msgs_q = [statistics.median(r.quiet_msgs for r in runs if r.n == n) for n in sizes]
    msgs_b = [statistics.median(r.busy_msgs for r in runs if r.n == n) for n in sizes]
    bytes_q = [statistics.median(r.quiet_bytes for r in runs if r.n == n) / 1024 for n in sizes]
    b.plot(sizes, msgs_q, "o-", label="messages, steady state")
    b.plot(sizes, msgs_b, "^-", label="messages, during a detection")
    b.set_xscale("log")
    b.set_xlabel("nodes")
    b.set_ylabel("messages per node per period")
    b.set_ylim(0, max(msgs_b + msgs_q) * 1.3)
    b2 = b.twinx()
    b2.plot(sizes, bytes_q, "s--", color="gray", label="KiB, steady state")
    b2.set_ylabel("KiB per node per period")
    b2.set_ylim(0, max(bytes_q) * 3)
    b.set_title("Load per node per protocol period")
    h1, l1 = b.get_legend_handles_labels()
    h2, l2 = b2.get_legend_handles_labels()
    b.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gossip", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,50,200,1000", help="comma-separated cluster sizes")
    p.add_argument("--seeds", type=int, default=3, help="seeds per size up to 200 nodes (default 3)")
    p.add_argument("--big-seeds", type=int, default=1, help="seeds per size above 200 nodes (default 1)")
    p.add_argument("--plot", action="store_true", help="also write bench/out/gossip.png")
    p.add_argument("--replot", action="store_true", help="redraw the table and plot from bench/out/gossip.json")
    args = p.parse_args(argv)
    runs: list[Run] = []
    sizes = [] if args.replot else [int(s) for s in args.sizes.split(",")]
    if args.replot:
        runs = [Run(**r) for r in json.loads((OUT / "gossip.json").read_text())]
        args.plot = True
    for n in sizes:
        for seed in range(args.seeds if n <= 200 else args.big_seeds):
            print(f"  n={n:<5} seed={seed} ...", end="", flush=True, file=sys.stderr)
            r = measure(n, seed)
            runs.append(r)
            print(f" join {periods(r.join_ms)}, spread {periods(r.spread_ms)}, detect "
                  f"{periods(r.detect_ms)} periods; {r.quiet_msgs:.1f} msgs/node/period ({r.cpu_s:.0f} s)",
                  file=sys.stderr)
    text = table(runs)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gossip.md").write_text(text + "\n")
    (OUT / "gossip.json").write_text(json.dumps([asdict(r) for r in runs], indent=1))
    print(text)
    if args.plot:
        plot(runs, OUT / "gossip.png")
        print(f"\nplot: {OUT / 'gossip.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
