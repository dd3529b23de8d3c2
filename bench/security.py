"""``python -m bench.security``: what security costs. Call round trips over CURVE against
plaintext, measured in the same run, and the cost of signing and checking a gossip record.

    python -m bench.security               # 5 rounds x 4,000 calls per mode
    python -m bench.security --quick       # 3 rounds x 1,000
    python -m bench.security --plot        # also bench/out/security.png (latency CDFs)

Round trips: a server process (this module with ``serve``) hosts :class:`bench.agents.Echo`
on a node with or without keys; a client node in this process calls ``echo`` with the
10-field order payload, one call in flight, after a warm-up. The two modes alternate round by
round, so drift of the machine (other jobs, frequency) lands on both. Reported: p50/p99 per
mode over all rounds, and the ratio CURVE/plaintext of each (the goal is <= 1.3x).

Records: a node's membership record with 10 agents (its real metadata encoding), signed with
Ed25519 (:class:`mesh.security.records.RecordSigner`) and checked against a trust store
(:class:`~mesh.security.records.RecordVerifier`), first uncached, then as the repeats of a
gossiped record are (cached). Writes bench/out/security.md. Nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def serve(mode: str, keydir: str) -> None:
    import uvloop

    import mesh
    from bench.agents import Echo

    async def main() -> None:
        kw = {"insecure": True} if mode == "plain" else {"keys": f"{keydir}/srv.key", "trust": f"{keydir}/trust"}
        node = mesh.Node("srv", **kw)
        node.add(Echo("echo"))
        await node.start()
        print(f"ready {node.address}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)   # until stdin closes
        await node.stop()
    uvloop.run(main())


def make_keys(keydir: str) -> None:
    from mesh.security.keys import write_keys, generate

    os.makedirs(f"{keydir}/trust")
    for name in ("srv", "cli"):
        keys = generate(name)
        write_keys(keys, keydir)
        os.link(f"{keydir}/{name}.pub", f"{keydir}/trust/{name}.pub")


class Server:
    def __init__(self, mode: str, keydir: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.security", "serve", mode, keydir],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(f"server ({mode}) did not start")
        self.address = line[1]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


async def rtt_round(mode: str, keydir: str, address: str, calls: int) -> list[int]:
    import mesh
    from bench.baselines import PAYLOAD

    kw = {"insecure": True} if mode == "plain" else {"keys": f"{keydir}/cli.key", "trust": f"{keydir}/trust"}
    node = mesh.Node("cli", seeds=[address], **kw)
    await node.start()
    try:
        deadline = time.monotonic() + 10
        while "echo" not in node.directory():
            if time.monotonic() > deadline:
                raise RuntimeError("the server's agent never showed up")
            await asyncio.sleep(0.05)
        for _ in range(500):
            await node.call("echo", "echo", PAYLOAD)
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            await node.call("echo", "echo", PAYLOAD)
            samples.append(clock() - t0)
        return samples
    finally:
        await node.stop()


def pct(samples: list[int], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000


def record_costs() -> dict[str, float]:
    from mesh.node.membership import NodeMeta
    from mesh.security.keys import generate
    from mesh.security.records import RecordSigner, RecordVerifier, record_bytes
    from mesh.security.trust import TrustStore

    keys = generate("n1")
    trust = TrustStore([keys.public])
    meta = NodeMeta(agents={f"agent-{i}": ("pricing", "risk") for i in range(10)}).to_bytes()
    sign = RecordSigner(keys)
    sig = sign("n1", 7, "tcp://10.0.0.1:7001", meta)
    n = 2000
    out = {"record_bytes": len(record_bytes("n1", 7, "tcp://10.0.0.1:7001", meta)) + len(sig)}
    out["sign_us"] = min(timeit.repeat(lambda: sign("n1", 7, "tcp://10.0.0.1:7001", meta), number=n, repeat=5)) / n * 1e6
    out["verify_us"] = min(timeit.repeat(
        lambda: RecordVerifier(trust)("n1", 7, "tcp://10.0.0.1:7001", meta, sig), number=n, repeat=5)) / n * 1e6
    cached = RecordVerifier(trust)
    out["verify_cached_us"] = min(timeit.repeat(
        lambda: cached("n1", 7, "tcp://10.0.0.1:7001", meta, sig), number=n * 10, repeat=5)) / (n * 10) * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["serve"]:
        serve(argv[1], argv[2])
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 rounds x 1,000 calls per mode")
    p.add_argument("--plot", action="store_true", help="also write bench/out/security.png")
    args = p.parse_args(argv)
    rounds, calls = (3, 1000) if args.quick else (5, 4000)

    import uvloop

    keydir = tempfile.mkdtemp(prefix="mesh-bench-keys-")
    make_keys(keydir)
    samples: dict[str, list[int]] = {"plain": [], "curve": []}
    servers = {mode: Server(mode, keydir) for mode in samples}
    try:
        for r in range(rounds):
            for mode in (("plain", "curve") if r % 2 == 0 else ("curve", "plain")):
                got = uvloop.run(rtt_round(mode, keydir, servers[mode].address, calls))
                samples[mode] += got
                print(f"round {r + 1}/{rounds} {mode:5s}: p50 {pct(got, .5):7.1f} µs  p99 {pct(got, .99):7.1f} µs",
                      flush=True)
    finally:
        for s in servers.values():
            s.close()
    costs = record_costs()
    p50 = {m: pct(s, .5) for m, s in samples.items()}
    p99 = {m: pct(s, .99) for m, s in samples.items()}
    lines = [
        "# Security costs (`python -m bench.security" + (" --quick" if args.quick else "") + "`)", "",
        f"Call round trip, 1 in flight, {rounds} alternating rounds x {calls} calls per mode:", "",
        "| mode | p50 µs | p99 µs |", "|---|---|---|",
        f"| plaintext | {p50['plain']:.1f} | {p99['plain']:.1f} |",
        f"| CURVE | {p50['curve']:.1f} | {p99['curve']:.1f} |",
        f"| ratio CURVE/plaintext | {p50['curve'] / p50['plain']:.2f}x | {p99['curve'] / p99['plain']:.2f}x |", "",
        f"Membership record ({costs['record_bytes']} bytes signed, 10 agents): sign {costs['sign_us']:.1f} µs, "
        f"verify {costs['verify_us']:.1f} µs, verify of a repeat (cached) {costs['verify_cached_us']:.2f} µs.", ""]
    text = "\n".join(lines)
    print("\n" + text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "security.md").write_text(text)
    (OUT / "security.json").write_text(json.dumps({"p50_us": p50, "p99_us": p99, **costs}, indent=1))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for mode, s in samples.items():
            xs = sorted(v / 1000 for v in s)
            ax.plot(xs, [i / len(xs) for i in range(len(xs))], label=mode)
        ax.set_xscale("log")
        ax.set_xlabel("round trip (µs)")
        ax.set_ylabel("fraction of calls")
        ax.set_title("mesh call round trip: CURVE vs plaintext")
        ax.legend()
        fig.tight_layout()
        fig.savefig(OUT / "security.png", dpi=120)
        print(f"wrote {OUT / 'security.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
