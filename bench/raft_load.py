"""Write load on mesh's replicated store for ``python -m bench.raft``.

Two places the load comes from:

* :class:`RaftLoad`, an agent each voter hosts (``--agent bench.raft_load:RaftLoad=load.<id>``):
  its writes go ``self.node.kv.put`` -> the node's own ``_raft.<id>`` agent, called in-process
  (no ZeroMQ, no codec) -> Raft. Run on the leader, that is the cost of Raft itself.
* the client process (``python -m bench.raft_load --seed ADDR --voters v1,v2,v3``): a plain
  ``mesh.Node`` that is not a voter; each ``kv.put`` is an RPC to a voter's ``_raft`` agent (the
  leader once the client has learnt which one it is), which answers once the entry is applied.

The client prints ``ready <id> <address>`` and then answers one JSON line per request line
on standard input (see :func:`serve`); it also runs the failover writer and asks the voters who
leads. Times that cross processes are ``time.monotonic()`` seconds (one clock per machine).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Awaitable, Callable

import mesh
from mesh.errors import MeshError

# Same shape of write as the PySyncObj side (bench/pysyncobj_node.py): 1,000 keys, a 64-byte value.
KEYS = 1_000
VALUE = "x" * 64
MAX_SAMPLES = 20_000        # what goes back over an RPC (the codec bounds arrays at 131,072)

Put = Callable[[str, Any], Awaitable[Any]]


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_us": float("nan"), "p99_us": float("nan")}
    s = sorted(samples_ns)
    return {"p50_us": s[len(s) // 2] / 1e3, "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] / 1e3}


async def latency(put: Put, n: int, seconds: float) -> dict[str, Any]:
    """One write at a time: at most ``n`` writes or ``seconds``."""
    samples: list[int] = []
    errors = 0
    clock = time.perf_counter_ns
    end = time.monotonic() + seconds
    for i in range(n):
        t0 = clock()
        try:
            await put(f"bench/{i % KEYS}", VALUE)
        except MeshError:
            errors += 1
            continue
        samples.append(clock() - t0)
        if time.monotonic() > end:
            break
    return {"samples_ns": samples[:MAX_SAMPLES], "errors": errors, **percentiles_us(samples)}


async def throughput(put: Put, concurrency: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """``concurrency`` writers, each one write in flight; completions counted after ``warmup_s``."""
    lat_ns: list[int] = []
    counted = [0, 0]             # ok, errors
    total = [0]                  # ok, warm-up and drain included (to divide counters by)
    slowest = [0]                # ns, any write of the run: a stall shows here even if nothing lands in the window
    clock = time.perf_counter_ns
    t_begin = time.monotonic()
    t_count, t_end = t_begin + warmup_s, t_begin + warmup_s + seconds

    async def writer(w: int) -> None:
        i = w
        while time.monotonic() < t_end:
            t0 = clock()
            try:
                await put(f"bench/{i % KEYS}", VALUE)
                ok = True
            except MeshError:
                ok = False
            t1 = clock()
            total[0] += ok
            slowest[0] = max(slowest[0], t1 - t0)
            if t_count <= time.monotonic() <= t_end:
                if ok:
                    counted[0] += 1
                    lat_ns.append(t1 - t0)
                else:
                    counted[1] += 1
            i += concurrency

    await asyncio.gather(*(writer(w) for w in range(concurrency)))
    return {"writes": counted[0], "errors": counted[1], "seconds": seconds, "total_writes": total[0],
            "max_us": slowest[0] / 1e3,
            "writes_per_s": counted[0] / seconds, **percentiles_us(lat_ns)}


class RaftLoad(mesh.Agent):
    """Load generated inside a voter's process (see the module docstring)."""

    @mesh.rpc(eager=False)
    async def latency(self, n: int, seconds: float) -> dict:
        return await latency(self._put, n, seconds)

    @mesh.rpc(eager=False)
    async def throughput(self, concurrency: int, seconds: float, warmup_s: float = 0.5) -> dict:
        return await throughput(self._put, concurrency, seconds, warmup_s)

    @mesh.rpc
    def stats(self) -> dict:
        """This node's Raft counters (fsyncs, Ready batches, messages) and calls, read around a run."""
        return {k: v for k, v in self.node.stats().items() if k.startswith("raft_") or k in ("calls_in", "calls_out")}

    async def _put(self, key: str, value: Any) -> Any:
        return await self.node.kv.put(key, value, timeout=10.0)


class FailoverWriter:
    """Writes one at a time until cancelled, keeping (start, end, ok) in time.monotonic() seconds."""

    def __init__(self, node: mesh.Node) -> None:
        self.node = node
        self.records: list[tuple[float, float, bool]] = []
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        i = 0
        while True:
            t0 = time.monotonic()
            try:
                await self.node.kv.put(f"bench/{i % KEYS}", VALUE, timeout=10.0)
                ok = True
            except MeshError:
                ok = False
            self.records.append((t0, time.monotonic(), ok))
            i += 1

    def first_new_ack(self, t_kill: float) -> float | None:
        """When the first write the dead leader cannot have answered was acknowledged: one
        sent after the kill, or one answered more than 10 ms after it (the old leader's last
        answers are on the wire for microseconds; an election takes at least 150 ms)."""
        for t0, t1, ok in self.records:
            if ok and (t0 > t_kill or t1 > t_kill + 0.01):
                return t1
        return None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass


async def voter_status(node: mesh.Node, voters: list[str], timeout: float = 0.5) -> dict[str, Any]:
    async def one(v: str) -> Any:
        try:
            return await node.call(f"_raft.{v}", "status", timeout=timeout)
        except MeshError as exc:
            return {"error": type(exc).__name__}
    return dict(zip(voters, await asyncio.gather(*(one(v) for v in voters))))


async def failover(node: mesh.Node, writer: FailoverWriter, voters: list[str], t_kill: float,
                   old: str, old_term: int, timeout_s: float) -> dict[str, Any]:
    """After the orchestrator killed ``old``: when a survivor first said it leads a later term
    (polled every 10 ms), and when the first write after the kill was acknowledged."""
    survivors = [v for v in voters if v != old]
    deadline = time.monotonic() + timeout_s
    t_leader: float | None = None
    new_leader = None
    t_ack = writer.first_new_ack(t_kill)
    while time.monotonic() < deadline and (t_leader is None or t_ack is None):
        if t_leader is None:
            for v, st in (await voter_status(node, survivors, timeout=0.2)).items():
                if st.get("role") == "leader" and st.get("term", 0) > old_term:
                    t_leader, new_leader = time.monotonic(), v
                    break
        t_ack = writer.first_new_ack(t_kill)
        await asyncio.sleep(0.01)
    writer.records = [r for r in writer.records if r[1] > time.monotonic() - 1.0]
    return {"leader_s": None if t_leader is None else t_leader - t_kill,
            "write_s": None if t_ack is None else t_ack - t_kill, "leader": new_leader}


async def serve(node: mesh.Node, voters: list[str]) -> None:
    """Requests, one JSON object per line: {"op": "status" | "stats"}; {"op": "latency", "n", "seconds",
    "where"}; {"op": "throughput", "concurrency", "seconds", "where"} (where: "client" or the
    name of a RaftLoad agent); {"op": "writer_start"}; {"op": "failover", "t_kill", "old",
    "term", "timeout_s"}; {"op": "writer_stop"}. Empty input ends the process."""
    loop = asyncio.get_running_loop()
    writer: FailoverWriter | None = None

    async def put(key: str, value: Any) -> Any:
        return await node.kv.put(key, value, timeout=10.0)

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "status":
                out: Any = await voter_status(node, voters)
            elif op == "latency":
                out = (await latency(put, req["n"], req["seconds"]) if req["where"] == "client" else
                       await node.call(req["where"], "latency", req["n"], req["seconds"],
                                       timeout=req["seconds"] + 60))
            elif op == "throughput":
                args = (req["concurrency"], req["seconds"], req.get("warmup_s", 0.5))
                out = (await throughput(put, *args) if req["where"] == "client" else
                       await node.call(req["where"], "throughput", *args, timeout=req["seconds"] + 60))
            elif op == "stats":
                out = dict(zip(voters, await asyncio.gather(
                    *(node.call(f"load.{v}", "stats", timeout=2.0) for v in voters))))
            elif op == "writer_start":
                writer = FailoverWriter(node)
                writer.start()
                out = {"ok": True}
            elif op == "failover":
                out = await failover(node, writer, voters, req["t_kill"], req["old"], req["term"], req["timeout_s"])
            elif op == "writer_stop":
                if writer is not None:
                    await writer.stop()
                writer = None
                out = {"ok": True}
            else:
                out = {"error": f"unknown op {op!r}"}
        except MeshError as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


async def run(seed: str, voters: list[str]) -> int:
    node = mesh.Node("bench-client", seeds=[seed])
    await node.start()
    try:
        # Ready once a write has gone through: the voters have elected a leader and the client
        # knows it (the first put also teaches the client which voter leads).
        await node.kv.put("bench/ready", 1, timeout=30.0)
        print(f"ready {node.node_id} {node.address}", flush=True)
        await serve(node, voters)
    finally:
        await node.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raft_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", required=True, help="address of a voter to join through")
    p.add_argument("--voters", default="v1,v2,v3", help="the voter ids, comma-separated")
    args = p.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run(args.seed, args.voters.split(",")))
    return uvloop.run(run(args.seed, args.voters.split(",")))


if __name__ == "__main__":
    sys.exit(main())
