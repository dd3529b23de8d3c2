"""``python -m bench.sharding``: how much of a shard map moves when the providers change, how
even it is, and what a lookup costs.

    python -m bench.sharding                      # sizes 2..64; 256, 1024 and 4096 partitions (two minutes)
    python -m bench.sharding --sizes 2,4,8 --partitions 256 --trials 3

For each partition count, size n and each of ``--trials`` sets of agent names, the shard map
(128 virtual nodes per agent) is computed the way :mod:`mesh.patterns.sharding` does, then again
after one agent joins (n -> n+1) and after each agent in turn leaves (n -> n-1). The fraction
of partitions whose owner changed is compared with the least any scheme can move, 1/(n+1) on a
join and 1/n on a leave; "keys" is the same for 100,000 keys hashed straight onto the ring (no
partitions). Balance is the largest owner's partitions over the mean. Rows for plain
consistent hashing (load factor 0) and for bounded loads (1.25, the default). Placement does
not depend on the machine: these numbers are exact for the names used.

The last table times ``partition_of`` and ``HashRing.owner_of`` (16 owners), compiled and pure.
Writes bench/out/sharding.md and bench/out/sharding.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import mesh._core._pure.router as pure_router
from mesh._core import compiled_twin
compiled_router = compiled_twin("router")

OUT = Path(__file__).resolve().parent / "out"
VNODES = 128
LOAD_FACTORS = (0.0, 1.25)


def assign(names: list[str], partitions: int, c: float) -> tuple[str, ...]:
    ring = compiled_router.HashRing(VNODES)
    for name in names:
        ring.add(name)
    return ring.assign(partitions, c)


def moved(a: tuple[str, ...] | list[str], b: tuple[str, ...] | list[str]) -> float:
    return sum(x != y for x, y in zip(a, b)) / len(a)


def measure(n: int, partitions: int, trials: int, keys: list[str]) -> list[dict]:
    rows = []
    for c in LOAD_FACTORS:
        joins, leaves, balance, key_joins, key_leaves = [], [], [], [], []
        for t in range(trials):
            names = [f"agent-{t}-{i}" for i in range(n + 1)]
            base = assign(names[:n], partitions, c)
            joins.append(moved(base, assign(names, partitions, c)))
            for gone in range(n) if n > 1 else ():
                leaves.append(moved(base, assign(names[:gone] + names[gone + 1:n], partitions, c)))
            balance.append(max(base.count(a) for a in names[:n]) / (partitions / n))
            if c == 0.0 and t < 2 and keys:                  # keys straight on the ring: slower, fewer trials
                ring = compiled_router.HashRing(VNODES)
                for name in names[:n]:
                    ring.add(name)
                before = [ring.owner_of(k) for k in keys]
                ring.add(names[n])
                key_joins.append(moved(before, [ring.owner_of(k) for k in keys]))
                ring.remove(names[n])
                ring.remove(names[0])
                if n > 1:
                    key_leaves.append(moved(before, [ring.owner_of(k) for k in keys]))
        rows.append({
            "n": n, "partitions": partitions, "load_factor": c, "trials": trials,
            "join": statistics.mean(joins), "join_max": max(joins), "join_ideal": 1 / (n + 1),
            "leave": statistics.mean(leaves) if leaves else None,
            "leave_max": max(leaves) if leaves else None, "leave_ideal": 1 / n,
            "balance": statistics.mean(balance), "balance_max": max(balance),
            "keys_join": statistics.mean(key_joins) if key_joins else None,
            "keys_leave": statistics.mean(key_leaves) if key_leaves else None,
        })
    return rows


def ns_per_call(fn, arg, *rest, number: int) -> float:
    best = float("inf")
    for _ in range(15):                     # best of many short runs: the machine may be shared
        t0 = time.perf_counter_ns()
        for _ in range(number):
            fn(arg, *rest)
        best = min(best, (time.perf_counter_ns() - t0) / number)
    return best


def lookup_costs() -> list[dict]:
    out = []
    for label, impl, number in (("compiled", compiled_router, 50_000), ("pure", pure_router, 5_000)):
        ring = impl.HashRing(VNODES)
        for i in range(16):
            ring.add(f"agent-{i}")
        key = "user:1234567890"
        t0 = time.perf_counter()
        impl.HashRing(VNODES).add("agent-x")
        build_us = (time.perf_counter() - t0) * 1e6
        out.append({"impl": label, "call_ns": ns_per_call(len, key, number=number),
                    "partition_of_ns": ns_per_call(impl.partition_of, key, 256, number=number),
                    "owner_of_ns": ns_per_call(ring.owner_of, key, number=number),
                    "hash64_ns": ns_per_call(impl.hash64, key, number=number),
                    "add_owner_us": build_us})
    return out


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(rows: list[dict], costs: list[dict], keys: int) -> str:
    lines = [f"Shard map movement: {VNODES} vnodes per agent, mean over name sets (worst in brackets); "
             f"'keys': {keys:,} keys straight on the ring (plain consistent hashing, 2 name sets).", "",
             "| partitions | n | load factor | join n→n+1: moved (max) | ideal 1/(n+1) | leave n→n-1: moved (max) "
             "| ideal 1/n | keys moved join · leave | balance max/mean (worst) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        keys_col = f"{fmt(r['keys_join'])} · {fmt(r['keys_leave'])}" if r["keys_join"] is not None else "–"
        lines.append(f"| {r['partitions']} | {r['n']} | {r['load_factor']:g} | {fmt(r['join'])} ({fmt(r['join_max'])}) | "
                     f"{fmt(r['join_ideal'])} | {fmt(r['leave'])} ({fmt(r['leave_max'])}) | {fmt(r['leave_ideal'])} | "
                     f"{keys_col} | {fmt(r['balance'], 2)} ({fmt(r['balance_max'], 2)}) |")
    lines += ["", "Lookup cost (best of 15 runs; 16 agents on the ring; 'len(key)' is the cost of any call "
              "from a Python loop, for scale):", "",
              "| hot path | len(key) | partition_of | owner_of | hash64 | add one agent (128 points) |",
              "|---|---:|---:|---:|---:|---:|"]
    for c in costs:
        lines.append(f"| {c['impl']} | {c['call_ns']:.0f} ns | {c['partition_of_ns']:.0f} ns | {c['owner_of_ns']:.0f} ns | "
                     f"{c['hash64_ns']:.0f} ns | {c['add_owner_us']:.0f} µs |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sharding", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="2,3,4,5,8,10,16,32,64",
                   help="comma-separated numbers of agents before the change (default 2,3,4,5,8,10,16,32,64)")
    p.add_argument("--partitions", default="256,1024,4096",
                   help="comma-separated partition counts (default 256,1024,4096; a map's default is 1024)")
    p.add_argument("--trials", type=int, default=4, help="name sets per size (default 4)")
    p.add_argument("--keys", type=int, default=100_000, help="keys for the straight-on-the-ring column")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    counts = [int(s) for s in args.partitions.split(",") if s]
    if not sizes or not counts or min(sizes + counts) < 1 or args.trials < 1:
        p.error("sizes, partitions and trials must be positive")
    keys = [f"user:{i}" for i in range(args.keys)]
    rows = []
    for partitions in counts:
        for n in sizes:
            print(f"  partitions={partitions} n={n} ...", file=sys.stderr, flush=True)
            rows += measure(n, partitions, args.trials, keys if partitions == counts[0] else [])
    costs = lookup_costs()
    text = render(rows, costs, args.keys)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sharding.md").write_text(text + "\n")
    (OUT / "sharding.json").write_text(json.dumps({"movement": rows, "lookup": costs}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
