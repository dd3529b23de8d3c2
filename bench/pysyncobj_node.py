"""One PySyncObj process for ``python -m bench.raft``: a voter of a 3-node group, or a read-only
member used as a client, driven by JSON lines on standard input.

    python -m bench.pysyncobj_node --self 127.0.0.1:7101 --partners 127.0.0.1:7102,127.0.0.1:7103 --conf tuned
    python -m bench.pysyncobj_node --partners 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103   # client

It prints ``ready <address>`` once the group has a leader, then answers each request line with
one JSON line (see :func:`serve`). A request runs to its end before the next one is read; the
failover writer runs in its own thread between ``writer_start`` and ``writer_stop``.

PySyncObj keeps its log in memory here (no ``journalFile``): that is its default, and even its
file journal is an mmap that is never flushed per entry, so it never waits for a disk. A voter
restarted after a kill -9 comes back empty and catches up from the leader.

A read-only member (``selfNode=None``) takes no part in elections or commits but learns the
leader and forwards commands to it: the closest thing PySyncObj has to a client process, and
the analogue of a ``mesh.Node`` that is not a voter.

This module imports nothing from mesh: the baseline stands on its own.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjException, replicated

# Same shape of write as the mesh side (bench/raft_load.py): 1,000 keys, a 64-byte value.
KEYS = 1_000
VALUE = "x" * 64

CONFIGS = {
    # PySyncObj's defaults: entries leave on the next append tick (appendEntriesPeriod = 0.1 s).
    "default": {},
    # Its documented knob for single-request latency: send each entry at once.
    "tuned": {"appendEntriesUseBatch": False},
}


class Store(SyncObj):
    def __init__(self, self_addr: str | None, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf)
        self._data: dict[str, str] = {}

    @replicated
    def set(self, key: str, value: str) -> int:
        self._data[key] = value
        return len(self._data)


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    if not samples_ns:
        return {"p50_us": float("nan"), "p99_us": float("nan")}
    s = sorted(samples_ns)
    return {"p50_us": s[len(s) // 2] / 1e3, "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] / 1e3}


def latency(store: Store, n: int, seconds: float) -> dict[str, Any]:
    """One write at a time (``sync=True``): at most ``n`` writes or ``seconds``."""
    samples: list[int] = []
    errors = 0
    clock = time.perf_counter_ns
    end = time.monotonic() + seconds
    for i in range(n):
        t0 = clock()
        try:
            store.set(f"bench/{i % KEYS}", VALUE, sync=True, timeout=5.0)
        except SyncObjException:
            errors += 1
            continue
        samples.append(clock() - t0)
        if time.monotonic() > end:
            break
    return {"samples_ns": samples, "errors": errors, **percentiles_us(samples)}


def throughput(store: Store, concurrency: int, seconds: float, warmup_s: float) -> dict[str, Any]:
    """``concurrency`` writes in flight (callbacks); completions counted after ``warmup_s``."""
    slots = threading.BoundedSemaphore(concurrency)
    lock = threading.Lock()
    lat_ns: list[int] = []
    counted = [0, 0]                 # ok, errors
    slowest = [0]                    # ns, any write of the run (a stall shows even if nothing is counted)
    total = [0]                      # ok, warm-up and drain included
    clock = time.perf_counter_ns
    t_begin = time.monotonic()
    t_count, t_end = t_begin + warmup_s, t_begin + warmup_s + seconds

    def done(t0: int, _result: Any, err: int) -> None:
        t1 = clock()
        now = time.monotonic()
        slots.release()
        with lock:
            slowest[0] = max(slowest[0], t1 - t0)
            total[0] += err == 0
            if t_count <= now <= t_end:
                if err == 0:
                    counted[0] += 1
                    lat_ns.append(t1 - t0)
                else:
                    counted[1] += 1

    i = 0
    while time.monotonic() < t_end:
        if not slots.acquire(timeout=1.0):
            continue
        t0 = clock()
        store.set(f"bench/{i % KEYS}", VALUE, callback=lambda r, e, t0=t0: done(t0, r, e))
        i += 1
    drain_end = time.monotonic() + 10.0     # let the last writes finish before the next phase
    for _ in range(concurrency):
        if not slots.acquire(timeout=max(drain_end - time.monotonic(), 0.001)):
            break
    with lock:
        return {"writes": counted[0], "errors": counted[1], "seconds": seconds, "max_us": slowest[0] / 1e3,
                "total_writes": total[0],
                "writes_per_s": counted[0] / seconds, **percentiles_us(lat_ns)}


class FailoverWriter:
    """Writes one at a time until stopped, keeping (start, end, ok) in time.monotonic() seconds,
    a clock shared with the orchestrator's process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.records: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                # A write stuck on the dead leader is given up after 1 s; PySyncObj fails it
                # sooner by itself when it notices the leader changed.
                self.store.set(f"bench/{i % KEYS}", VALUE, sync=True, timeout=1.0)
                ok = True
            except SyncObjException:
                ok = False
                time.sleep(0.005)
            self.records.append((t0, time.monotonic(), ok))
            i += 1

    def first_new_ack(self, t_kill: float) -> float | None:
        """When the first write the dead leader cannot have answered was acknowledged."""
        for t0, t1, ok in list(self.records):
            if ok and (t0 > t_kill or t1 > t_kill + 0.01):
                return t1
        return None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5.0)


def status(store: Store) -> dict[str, Any]:
    st = store.getStatus()
    leader = st.get("leader")
    return {"state": st.get("state"), "leader": str(leader) if leader is not None else None,
            "term": st.get("raft_term"), "commit": st.get("commit_idx"), "applied": st.get("last_applied")}


def serve(store: Store) -> None:
    """Requests: {"op": "status" | "latency" | "throughput" | "writer_start" | "failover" | "writer_stop"}."""
    writer: FailoverWriter | None = None
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        if op == "status":
            out: Any = status(store)
        elif op == "latency":
            out = latency(store, req["n"], req["seconds"])
        elif op == "throughput":
            out = throughput(store, req["concurrency"], req["seconds"], req.get("warmup_s", 0.5))
        elif op == "writer_start":
            writer = FailoverWriter(store)
            writer.start()
            out = {"ok": True}
        elif op == "failover":
            # Wait (bounded) for the first write a new leader acknowledged after the kill.
            deadline = time.monotonic() + req["timeout_s"]
            t_ack = None
            while t_ack is None and time.monotonic() < deadline:
                t_ack = writer.first_new_ack(req["t_kill"])
                if t_ack is None:
                    time.sleep(0.01)
            out = {"write_s": None if t_ack is None else t_ack - req["t_kill"], "leader": status(store)["leader"]}
            writer.records = [r for r in writer.records if r[1] > time.monotonic() - 1.0]
        elif op == "writer_stop":
            if writer is not None:
                writer.stop()
            writer = None
            out = {"ok": True}
        else:
            out = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pysyncobj_node", description=__doc__.split("\n\n")[0])
    p.add_argument("--self", dest="self_addr", help="this voter's host:port (omit for a read-only client)")
    p.add_argument("--partners", required=True, help="the other voters' host:port, comma-separated")
    p.add_argument("--conf", choices=sorted(CONFIGS), default="default")
    p.add_argument("--ready-timeout", type=float, default=30.0)
    args = p.parse_args(argv)
    partners = [a for a in args.partners.split(",") if a]
    store = Store(args.self_addr, partners, SyncObjConf(**CONFIGS[args.conf]))
    deadline = time.monotonic() + args.ready_timeout
    while store._getLeader() is None:      # ready = part of a group that has a leader
        if time.monotonic() > deadline:
            print(f"no leader within {args.ready_timeout:g} s", file=sys.stderr)
            return 1
        time.sleep(0.02)
    print(f"ready {args.self_addr or 'client'}", flush=True)
    serve(store)
    return 0


if __name__ == "__main__":
    sys.exit(main())
