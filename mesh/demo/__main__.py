"""``python -m mesh.demo``: start three node processes, run an order flow between their
agents, and show a live line of messages/s and call latency p50/p99."""
from __future__ import annotations

import argparse
import asyncio
import select
import signal
import subprocess
import sys
import time

import mesh

AGENTS = "mesh.demo.agents"
LAYOUT = [  # node id, agents
    ("n1", [f"{AGENTS}:Pricer=pricer-1", f"{AGENTS}:Risk=risk-1"]),
    ("n2", [f"{AGENTS}:Pricer=pricer-2", f"{AGENTS}:Blotter=blotter"]),
    ("n3", [f"{AGENTS}:Trader=trader"]),
]


def start_node(node_id: str, agents: list[str], join: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "mesh.node", "--insecure", "--id", node_id, "--bind", "tcp://127.0.0.1:*",
           "--log-level", "warning"]
    for seed in join:
        cmd += ["--join", seed]
    for agent in agents:
        cmd += ["--agent", agent]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"node {node_id} failed to start ({line.strip() or 'no output'})")
    return proc, line.split()[2]


async def watch(seed: str, duration: float) -> dict:
    node = mesh.Node("console", seeds=[seed])
    await node.start()
    tty = sys.stdout.isatty()
    last_calls = last_fills = 0
    last_t = time.monotonic()
    t_end = last_t + duration
    stats: dict = {}
    try:
        while time.monotonic() < t_end:
            await asyncio.sleep(1.0)
            stats = await node.call("trader", "stats", timeout=2.0)
            fills = await node.call("blotter", "count", timeout=2.0)
            now = time.monotonic()
            # Each call is two messages (request, reply); each fill one publish.
            calls_s = (stats["calls"] - last_calls) / (now - last_t)
            msgs_s = calls_s * 2 + (stats["fills"] - last_fills) / (now - last_t)
            last_calls, last_fills, last_t = stats["calls"], stats["fills"], now
            line = (f"{msgs_s:10,.0f} msg/s  {calls_s:9,.0f} calls/s   call latency p50 {stats['p50_us']:7.1f} µs"
                    f"  p99 {stats['p99_us']:7.1f} µs   fills {fills:,}  errors {stats['errors']}")
            print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)
        await node.call("trader", "pause", timeout=2.0)
        await asyncio.sleep(0.5)            # let the last publishes land
        stats = await node.call("trader", "stats", timeout=2.0)
        stats["blotter_fills"] = await node.call("blotter", "count", timeout=2.0)
    finally:
        if tty:
            print()
        await node.stop()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mesh.demo", description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of traffic to show (default 10)")
    args = parser.parse_args(argv)
    print(f"mesh {mesh.__version__} demo ({mesh.IMPLEMENTATION} hot path): starting 3 node processes")
    procs: list[subprocess.Popen] = []
    try:
        seed = ""
        for node_id, agents in LAYOUT:
            proc, address = start_node(node_id, agents, [seed] if seed else [])
            procs.append(proc)
            seed = seed or address
            print(f"  {node_id} pid {proc.pid} at {address}: {', '.join(a.split('=')[1] for a in agents)}")
        print("traffic: trader (n3) -> call_any pricing (n1, n2) -> call_any risk (n1) -> publish fills.* (n2)")
        try:
            import uvloop
            stats = uvloop.run(watch(seed, args.duration))
        except ImportError:
            stats = asyncio.run(watch(seed, args.duration))
        print(f"done: {stats['calls']:,} calls, {stats['fills']:,} fills published, "
              f"{stats['blotter_fills']:,} received by the blotter, {stats['errors']} errors")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
