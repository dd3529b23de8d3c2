"""``python -m bench.raft``: mesh's replicated store against PySyncObj, in the same run.

    python -m bench.raft --quick          # about 2 minutes on 2 cores
    python -m bench.raft --plot           # full run (about 3 minutes) and bench/out/raft.png
    python -m bench.raft --replot         # redraw the plot from bench/out/raft.json

Three voters on loopback, one process each, for each system in turn:

* **mesh**: ``python -m mesh.node --raft-voters v1,v2,v3 --data-dir ...`` (fsync on, the
  default), each hosting a :class:`bench.raft_load.RaftLoad` agent;
* **PySyncObj default** and **PySyncObj tuned** (``appendEntriesUseBatch=False``):
  ``python -m bench.pysyncobj_node``, a ``SyncObj`` with one ``@replicated set(key, value)``;
  its log is in memory and it never fsyncs.

Writes (1,000 keys, a 64-byte value) come from two places, both reported:

* **client**: a fourth process that is not a voter (a ``mesh.Node`` calling ``node.kv.put``,
  which is an RPC to a voter; for PySyncObj a read-only member, which forwards to the leader);
* **on leader**: load generated inside the leader's own process (mesh: an agent calling
  ``self.node.kv.put``, answered by the node's ``_raft`` agent in-process; PySyncObj: calls on
  the leader's ``SyncObj``).

Measured: one writer, one write at a time (p50/p99 per write), then 64 and 256 writes in
flight (committed writes/s, p50/p99 per write). Then **failover**: a client writes one at a time
while the leader is killed with SIGKILL, again and again (the victim restarts from its data
folder before the next round, so there are always three); the time from the kill to the first
write a new leader acknowledged, and to the first status poll (every 10 ms) in
which a survivor says it leads a later term.

Writes bench/out/raft.md (the tables), bench/out/raft.json (every sample) and, with --plot,
bench/out/raft.png. Every process started here is in its own process group and is killed on
the way out (and by the kernel if this process dies first).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from bench.baselines import _LIBC, _die_with_parent
from bench.report import percentile, publish

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
VOTERS = ("v1", "v2", "v3")


@dataclass(frozen=True)
class Sizes:
    latency_n: int             # writes in the one-writer run (capped by latency_s)
    latency_s: float
    throughput_s: float        # counted seconds per concurrency (after 0.5 s of warm-up)
    concurrency: tuple[int, ...]
    mesh_failovers: int
    pso_failovers: int


QUICK = Sizes(latency_n=500, latency_s=3.0, throughput_s=2.0, concurrency=(64, 256), mesh_failovers=20,
              pso_failovers=5)
FULL = Sizes(latency_n=2000, latency_s=8.0, throughput_s=4.0, concurrency=(64, 256), mesh_failovers=40,
             pso_failovers=10)


# -- child processes -------------------------------------------------------------------------------


class ChildError(RuntimeError):
    """A child process did not start, died, or did not answer in time."""


class Child:
    """A child in its own process group, spoken to in JSON lines (stdin -> one line on stdout)."""

    live: set[Child] = set()

    def __init__(self, argv: Sequence[str], name: str) -> None:
        self.argv = list(argv)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.ready: list[str] = []
        self._stderr = None

    def start(self, timeout_s: float = 40.0) -> Child:
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> Child:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        self._stderr = tempfile.TemporaryFile()
        # Spawned from the main thread only: PR_SET_PDEATHSIG fires when the *thread* that
        # forked the child ends, not the process.
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, start_new_session=True,
                                     preexec_fn=_die_with_parent if _LIBC is not None else None)
        Child.live.add(self)
        return self

    def wait_ready(self, timeout_s: float = 40.0) -> Child:
        line = self._readline(timeout_s)
        if not line.startswith("ready"):
            self.kill()
            raise ChildError(f"{self.name} did not start: {line!r}\n{self.stderr_text()}")
        self.ready = line.split()[1:]
        return self

    def _readline(self, timeout_s: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return self.proc.stdout.readline().decode(errors="replace") if ready else ""

    def ask(self, req: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        self.send(req)
        return self.recv(req["op"], timeout_s)

    def send(self, req: dict[str, Any]) -> None:
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ChildError(f"{self.name} is gone:\n{self.stderr_text()}") from None

    def recv(self, op: str, timeout_s: float) -> dict[str, Any]:
        line = self._readline(timeout_s)
        if not line:
            raise ChildError(f"{self.name}: no answer to {op!r} within {timeout_s:g} s\n{self.stderr_text()}")
        return json.loads(line)

    def stderr_text(self, limit: int = 3_000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def kill(self) -> None:
        """SIGKILL to the whole group (kill -9: no goodbye), then reap."""
        self._signal(signal.SIGKILL)
        self._reap(10.0)

    def stop(self, grace_s: float = 5.0) -> None:
        self._signal(signal.SIGTERM)
        if not self._reap(grace_s):
            self.kill()

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def _reap(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return False
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        Child.live.discard(self)
        return True

    @classmethod
    def kill_all(cls) -> None:
        for child in list(cls.live):
            child.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the two clusters ------------------------------------------------------------------------------


class MeshCluster:
    """Three ``mesh.node`` voters and the ``bench.raft_load`` client."""

    system = "mesh"

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.voters: dict[str, Child] = {}
        self.address: dict[str, str] = {}
        self.client: Child | None = None

    def _voter(self, vid: str, bind: str, join: str | None) -> Child:
        argv = [sys.executable, "-m", "mesh.node", "--insecure", "--id", vid, "--bind", bind,
                "--data-dir", str(self.data_root / vid), "--raft-voters", ",".join(VOTERS),
                "--agent", f"bench.raft_load:RaftLoad=load.{vid}", "--log-level", "warning"]
        if join:
            argv += ["--join", join]
        return Child(argv, f"mesh voter {vid}")

    def start(self) -> None:
        seed = None
        for vid in VOTERS:
            child = self._voter(vid, "tcp://127.0.0.1:*", seed).start()
            self.voters[vid] = child
            self.address[vid] = child.ready[1]
            seed = seed or child.ready[1]
        self.client = Child([sys.executable, "-m", "bench.raft_load", "--seed", seed,
                             "--voters", ",".join(VOTERS)], "mesh client").start()

    def status(self) -> dict[str, Any]:
        return self.client.ask({"op": "status"}, 10)

    def leader(self, timeout_s: float = 15.0) -> tuple[str, int]:
        """The voter that says it leads (highest term), once one does."""
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            leaders = [(s["term"], v) for v, s in st.items() if s.get("role") == "leader"]
            if leaders:
                term, vid = max(leaders)
                return vid, term
            if time.monotonic() > deadline:
                raise ChildError(f"mesh: no leader within {timeout_s:g} s: {st}")
            time.sleep(0.05)

    def writes(self, where: str, op: dict[str, Any]) -> dict[str, Any]:
        """Run a load request from the client process (``where="client"``) or on the leader."""
        target = "client" if where == "client" else f"load.{self.leader()[0]}"
        out = self.client.ask({**op, "where": target}, op.get("seconds", 0) + 120)
        if "error" in out:
            raise ChildError(f"mesh {where} {op['op']}: {out['error']}")
        return out

    def counters(self) -> dict[str, dict[str, int]]:
        """Each voter's Raft counters and calls (from its RaftLoad agent)."""
        return self.client.ask({"op": "stats"}, 10)

    def failover_round(self, timeout_s: float = 20.0) -> dict[str, Any]:
        old, term = self.leader()
        t_kill = time.monotonic()
        self.voters[old].kill()
        out = self.client.ask({"op": "failover", "t_kill": t_kill, "old": old, "term": term,
                               "timeout_s": timeout_s}, timeout_s + 10)
        out["killed"] = old
        self.restart(old)
        return out

    def restart(self, vid: str) -> None:
        """Same bind address and data folder, joining through a survivor; back when caught up."""
        seed = next(self.address[v] for v in VOTERS if v != vid)
        self.voters[vid] = self._voter(vid, self.address[vid], seed).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            st = self.status()
            commits = [s["commit"] for s in st.values() if s.get("role") == "leader"]
            if commits and st[vid].get("applied", -1) >= commits[0] - 50 and st[vid].get("role") == "follower":
                return
            time.sleep(0.1)
        raise ChildError(f"mesh: restarted {vid} did not catch up within 20 s: {self.status()}")

    def stop(self) -> None:
        for child in [self.client, *self.voters.values()]:
            if child is not None:
                child.stop()


class PsoCluster:
    """Three ``bench.pysyncobj_node`` voters and a read-only member as the client."""

    def __init__(self, conf: str) -> None:
        self.conf = conf
        self.system = f"PySyncObj {conf}"
        self.addrs = [f"127.0.0.1:{free_port()}" for _ in VOTERS]
        self.voters: dict[str, Child] = {}
        self.client: Child | None = None

    def _voter(self, addr: str) -> Child:
        partners = ",".join(a for a in self.addrs if a != addr)
        return Child([sys.executable, "-m", "bench.pysyncobj_node", "--self", addr, "--partners", partners,
                      "--conf", self.conf], f"PySyncObj voter {addr}")

    def start(self) -> None:
        # All three first: none is ready (has a leader) before a majority runs.
        self.voters = {a: self._voter(a).spawn() for a in self.addrs}
        for child in self.voters.values():
            child.wait_ready()
        self.client = Child([sys.executable, "-m", "bench.pysyncobj_node", "--partners", ",".join(self.addrs),
                             "--conf", self.conf], "PySyncObj client").start()

    def leader(self, timeout_s: float = 15.0) -> tuple[str, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            for addr, child in self.voters.items():
                st = child.ask({"op": "status"}, 10)
                if st["state"] == 2:       # _RAFT_STATE.LEADER
                    return addr, st["term"]
            if time.monotonic() > deadline:
                raise ChildError(f"{self.system}: no leader within {timeout_s:g} s")
            time.sleep(0.05)

    def writes(self, where: str, op: dict[str, Any]) -> dict[str, Any]:
        child = self.client if where == "client" else self.voters[self.leader()[0]]
        return child.ask(op, op.get("seconds", 0) + 120)

    def failover_round(self, timeout_s: float = 30.0) -> dict[str, Any]:
        old, term = self.leader()
        t_kill = time.monotonic()
        self.voters[old].kill()
        # The client waits for its first new write; meanwhile we poll the survivors (every
        # 10 ms) for one that leads a later term, as the mesh client does for mesh.
        self.client.send({"op": "failover", "t_kill": t_kill, "timeout_s": timeout_s})
        t_leader = None
        while t_leader is None and time.monotonic() < t_kill + timeout_s:
            for addr, child in self.voters.items():
                if addr != old:
                    st = child.ask({"op": "status"}, 10)
                    if st["state"] == 2 and st["term"] > term:
                        t_leader = time.monotonic()
                        break
            time.sleep(0.01)
        out = self.client.recv("failover", timeout_s + 10)
        out["leader_s"] = None if t_leader is None else t_leader - t_kill
        out["killed"] = old
        self.restart(old)
        return out

    def restart(self, addr: str) -> None:
        """Same address; it comes back with an empty log (in memory) and catches up."""
        self.voters[addr] = child = self._voter(addr).start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lead = self.voters[self.leader()[0]].ask({"op": "status"})
            if child.ask({"op": "status"})["applied"] >= lead["commit"] - 50:
                return
            time.sleep(0.1)
        raise ChildError(f"{self.system}: restarted {addr} did not catch up within 30 s")

    def stop(self) -> None:
        for child in [self.client, *self.voters.values()]:
            if child is not None:
                child.stop()


# -- measurements ----------------------------------------------------------------------------------


def fsync_baseline(folder: Path, n: int = 200) -> dict[str, float]:
    """What the disk under the data folders costs: append 128 bytes + fdatasync (what a log
    append pays), and a 64-byte pwrite in place + fdatasync (what mesh's hard-state update pays)."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    append, inplace = [], []
    try:
        os.pwrite(fd, b"\0" * 4096, 0)
        os.fsync(fd)
        for _ in range(n):
            t0 = time.perf_counter_ns()
            os.write(fd, b"a" * 128)
            os.fdatasync(fd)
            append.append(time.perf_counter_ns() - t0)
            t0 = time.perf_counter_ns()
            os.pwrite(fd, b"h" * 64, 0)
            os.fdatasync(fd)
            inplace.append(time.perf_counter_ns() - t0)
    finally:
        os.close(fd)
        path.unlink()
    return {"append_p50_us": percentile(sorted(append), 50) / 1e3,
            "inplace_p50_us": percentile(sorted(inplace), 50) / 1e3}


def work_per_write(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], leader: str,
                   writes: int) -> dict[str, float]:
    """Counter deltas per committed write: on the leader, and the mean over the followers."""
    def d(v: str, k: str) -> float:
        return (after[v].get(k, 0) - before[v].get(k, 0)) / max(writes, 1)
    followers = [v for v in after if v != leader]
    out = {}
    for k in ("raft_fsyncs", "raft_readies", "raft_out", "calls_in"):
        out[f"leader_{k}"] = d(leader, k)
        out[f"follower_{k}"] = sum(d(v, k) for v in followers) / len(followers)
    # kv.put RPCs that a follower took and forwarded: the client is one hop further from the leader
    out["followers_calls_in_total"] = sum(d(v, "calls_in") for v in followers)
    return out


def measure_writes(cluster: Any, sizes: Sizes, progress) -> list[dict[str, Any]]:
    rows = []
    counters = getattr(cluster, "counters", None)      # mesh only: fsyncs and messages per write
    for where in ("client", "leader"):
        row: dict[str, Any] = {"system": cluster.system, "where": where, "throughput": {}, "work": {},
                               "leader_changes": []}
        for c in (1, *sizes.concurrency):
            progress(f"{cluster.system}, {where}: " + ("one writer" if c == 1 else f"{c} in flight"))
            # A leader change in the middle of a run skews it: record (leader, term) around each.
            lead_before = cluster.leader()
            before = counters() if counters else None
            if c == 1:
                out = cluster.writes(where, {"op": "latency", "n": sizes.latency_n, "seconds": sizes.latency_s})
                row.update(lat_p50_us=out["p50_us"], lat_p99_us=out["p99_us"], lat_n=len(out["samples_ns"]),
                           lat_errors=out["errors"], samples_ns=out["samples_ns"])
                writes = len(out["samples_ns"])
            else:
                out = cluster.writes(where, {"op": "throughput", "concurrency": c, "seconds": sizes.throughput_s,
                                             "warmup_s": 0.5})
                row["throughput"][c] = out
                writes = out["total_writes"]
            lead_after = cluster.leader()
            if lead_after != lead_before:
                row["leader_changes"].append(f"{'1 writer' if c == 1 else f'{c} in flight'}: "
                                             f"{lead_before[0]} (term {lead_before[1]}) -> "
                                             f"{lead_after[0]} (term {lead_after[1]})")
            if counters:
                row["work"][c] = work_per_write(before, counters(), lead_after[0], writes)
        rows.append(row)
        progress(f"{cluster.system}, {where}: p50 {row['lat_p50_us']:,.0f} µs, "
                 + ", ".join(f"{c}: {t['writes_per_s']:,.0f}/s" for c, t in row["throughput"].items())
                 + "".join(f"; leader changed during {x}" for x in row["leader_changes"]))
    return rows


def client_after_failovers(cluster: Any, sizes: Sizes) -> dict[str, Any]:
    """One writer from the client again, after the kills: which voters serve its RPCs now."""
    before = cluster.counters()
    lat = cluster.writes("client", {"op": "latency", "n": sizes.latency_n, "seconds": min(sizes.latency_s, 3.0)})
    leader = cluster.leader()[0]
    return {"p50_us": lat["p50_us"], "p99_us": lat["p99_us"], "leader": leader,
            **work_per_write(before, cluster.counters(), leader, len(lat["samples_ns"]))}


def measure_failover(cluster: Any, rounds: int, progress) -> list[dict[str, Any]]:
    out = []
    cluster.client.ask({"op": "writer_start"})
    try:
        for i in range(rounds):
            r = cluster.failover_round()
            out.append(r)
            lead = f", leader after {r['leader_s'] * 1e3:.0f} ms" if r.get("leader_s") is not None else ""
            write = f"{r['write_s'] * 1e3:.0f} ms" if r["write_s"] is not None else "none"
            progress(f"{cluster.system} failover {i + 1}/{rounds}: killed {r['killed']}, first write after "
                     f"{write}{lead}")
    finally:
        cluster.client.ask({"op": "writer_stop"})
    return out


# -- report ----------------------------------------------------------------------------------------


def ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1e3:,.0f}"


def us(x: float) -> str:
    return "–" if x != x else (f"{x:,.0f} µs" if x < 10_000 else f"{x / 1e3:,.1f} ms")


def ratio(a: float, b: float) -> str:
    return "–" if not (a == a and b == b and b) else f"{a / b:.2f}×"


def writes_table(rows: list[dict[str, Any]], concurrency: Sequence[int]) -> str:
    """One row per system and place; mesh rows end with their ratios to each PySyncObj config
    measured from the same place (latency: below 1× is faster; writes/s: above 1× is more)."""
    bases = [s for s in ("PySyncObj tuned", "PySyncObj default") if any(r["system"] == s for r in rows)]
    head = ("| system | writes from | 1 writer p50 | p99 | "
            + " | ".join(f"{c} in flight: writes/s | p50 | p99" for c in concurrency)
            + "".join(f" | mesh ÷ {b}: 1-writer p50 · " + " · ".join(f"writes/s @{c}" for c in concurrency)
                      for b in bases) + " |")
    lines = [head, "|---|---|" + "---:|" * (2 + 3 * len(concurrency) + len(bases))]
    for r in rows:
        tp = r["throughput"]
        via = r.get("work", {}).get(1, {}).get("followers_calls_in_total", 0) > 0.5
        cells = [r["system"], ("client process" + (" (via a follower)" if via else "")) if r["where"] == "client"
                 else "leader's process", us(r["lat_p50_us"]), us(r["lat_p99_us"])]
        for c in concurrency:
            t = tp[c]
            cells += [f"{t['writes_per_s']:,.0f}", us(t["p50_us"]), us(t["p99_us"])]
        for base in bases:
            b = next((x for x in rows if x["system"] == base and x["where"] == r["where"]), None)
            cells.append("" if b is None or r["system"] != "mesh" else
                         f"{ratio(r['lat_p50_us'], b['lat_p50_us'])} · "
                         + " · ".join(ratio(tp[c]["writes_per_s"], b["throughput"][c]["writes_per_s"])
                                      for c in concurrency))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def work_table(rows: list[dict[str, Any]]) -> str:
    """mesh's Raft work per committed write, from the voters' counters."""
    lines = ["| writes from | in flight | leader: fsync batches · Ready batches · Raft messages sent "
             "| each follower: fsync batches · Ready batches · Raft messages sent | RPCs served: leader · each follower |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        for c, w in r.get("work", {}).items():
            lines.append(
                f"| {'client process' if r['where'] == 'client' else 'leader' + chr(39) + 's process'} | {c} "
                f"| {w['leader_raft_fsyncs']:.2f} · {w['leader_raft_readies']:.2f} · {w['leader_raft_out']:.2f} "
                f"| {w['follower_raft_fsyncs']:.2f} · {w['follower_raft_readies']:.2f} · {w['follower_raft_out']:.2f} "
                f"| {w['leader_calls_in']:.2f} · {w['follower_calls_in']:.2f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def failover_table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| system | kills | first write by a new leader: p50 | p90 | max | no write within the limit "
             "| a survivor says it leads: p50 | p90 | max |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for system, rounds in results.items():
        w = sorted(r["write_s"] for r in rounds if r["write_s"] is not None)
        lead = sorted(r["leader_s"] for r in rounds if r.get("leader_s") is not None)
        missing = sum(r["write_s"] is None for r in rounds)
        pct = lambda xs, q: percentile(xs, q) if xs else None     # noqa: E731
        lines.append(f"| {system} | {len(rounds)} | {ms(pct(w, 50))} ms | {ms(pct(w, 90))} ms | "
                     f"{ms(w[-1] if w else None)} ms | {missing} | "
                     + (f"{ms(pct(lead, 50))} ms | {ms(pct(lead, 90))} ms | {ms(lead[-1])} ms |" if lead
                        else "– | – | – |"))
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], failovers: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for r in rows:
        xs = sorted(s / 1e3 for s in r["samples_ns"])
        if not xs:
            continue
        n = len(xs)
        a.plot(xs, [(k + 1) / n for k in range(n)], linewidth=1.5,
               label=f"{r['system']}, {'client' if r['where'] == 'client' else 'on leader'} "
                     f"(p50 {us(r['lat_p50_us'])}, n={n})")
    a.set_xscale("log")
    a.set_xlabel("latency of one write, one writer (µs, log)")
    a.set_ylabel("fraction of writes ≤ x")
    a.set_title("Commit latency, one write at a time")
    a.grid(True, which="both", alpha=0.3)
    a.legend(fontsize=7, loc="lower right")
    for system, rounds in failovers.items():
        xs = sorted(r["write_s"] * 1e3 for r in rounds if r["write_s"] is not None)
        if xs:
            b.plot(xs, [(k + 1) / len(xs) for k in range(len(xs))], "o-", markersize=3,
                   label=f"{system}: first write by a new leader")
        ls = sorted(r["leader_s"] * 1e3 for r in rounds if r.get("leader_s") is not None)
        if ls:
            b.plot(ls, [(k + 1) / len(ls) for k in range(len(ls))], "s--", markersize=3,
                   label=f"{system}: a survivor says it leads")
    b.set_xscale("log")
    b.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    b.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    b.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    b.set_xlabel("time after kill -9 of the leader (ms, log)")
    b.set_ylabel("fraction of kills ≤ x")
    b.set_title("Leader failover")
    b.grid(True, alpha=0.3)
    b.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, load average {load:.2f} at start; shared and noisy")


def mesh_version() -> str:
    """The commit the voters ran, and whether mesh/ had uncommitted changes (they count too)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "mesh"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "mesh at an unknown commit"
    changed = [line for line in dirty if line.strip()]
    return f"mesh at {head or '?'}" + (f" plus uncommitted changes in {len(changed)} files under mesh/" if changed else "")


def fs_type(path: Path) -> str:
    try:
        best = ("", "?")
        for line in Path("/proc/mounts").read_text().splitlines():
            _, mnt, kind, *_ = line.split()
            if str(path).startswith(mnt) and len(mnt) > len(best[0]):
                best = (mnt, kind)
        return best[1]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raft", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="shorter runs, 20 + 5 kills (about 2 minutes)")
    p.add_argument("--plot", action="store_true", help="also write bench/out/raft.png (needs matplotlib)")
    p.add_argument("--failovers", type=int, help="mesh leader kills (default 20 quick, 40 full)")
    p.add_argument("--pso-failovers", type=int, help="PySyncObj leader kills (default 5 quick, 10 full)")
    p.add_argument("--no-pysyncobj", action="store_true", help="mesh only")
    p.add_argument("--data-root", type=Path, help="where the voters' data folders go (default: a new temp folder)")
    p.add_argument("--replot", action="store_true", help="only redraw bench/out/raft.png from bench/out/raft.json")
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads((OUT / "raft.json").read_text())
        plot(saved["writes"], saved["failovers"], OUT / "raft.png", f"{saved['command']} — {saved['date']}")
        print(f"plot: {OUT / 'raft.png'}")
        return 0
    sizes = QUICK if args.quick else FULL
    mesh_kills = sizes.mesh_failovers if args.failovers is None else args.failovers
    pso_kills = sizes.pso_failovers if args.pso_failovers is None else args.pso_failovers
    t_start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"  [{time.monotonic() - t_start:5.0f} s] {msg}", file=sys.stderr, flush=True)

    if not args.no_pysyncobj:
        try:
            import pysyncobj   # noqa: F401
        except ImportError:
            print("PySyncObj is not installed (pip install pysyncobj, or pip install -e '.[bench]'); "
                  "running mesh only", file=sys.stderr)
            args.no_pysyncobj = True

    data_root = Path(tempfile.mkdtemp(prefix="mesh-raft-bench-", dir=args.data_root))
    command = "python -m bench.raft" + (" " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip()
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    host = machine()
    version = mesh_version()
    disk = fsync_baseline(data_root)
    progress(f"disk under {data_root} ({fs_type(data_root)}): append+fdatasync p50 "
             f"{disk['append_p50_us']:.0f} µs, in-place pwrite+fdatasync p50 {disk['inplace_p50_us']:.0f} µs")

    rows: list[dict[str, Any]] = []
    failovers: dict[str, list[dict[str, Any]]] = {}
    after: dict[str, Any] | None = None
    systems: list[Any] = [MeshCluster(data_root)]
    if not args.no_pysyncobj:
        systems += [PsoCluster("default"), PsoCluster("tuned")]
    try:
        for cluster in systems:
            progress(f"{cluster.system}: starting 3 voters and a client")
            cluster.start()
            try:
                rows += measure_writes(cluster, sizes, progress)
                kills = mesh_kills if cluster.system == "mesh" else pso_kills
                # PySyncObj's two configs differ only in batching, not in election timeouts:
                # the failover runs on the tuned one only.
                if kills and cluster.system != "PySyncObj default":
                    failovers[cluster.system] = measure_failover(cluster, kills, progress)
                    if cluster.system == "mesh":
                        after = client_after_failovers(cluster, sizes)
            finally:
                cluster.stop()
    finally:
        Child.kill_all()
        shutil.rmtree(data_root, ignore_errors=True)

    notes = [
        f"`{command}` — {started}; {version}; {host}.",
        f"Data folders on {fs_type(data_root)} (`{data_root.parent}`): append 128 B + fdatasync p50 "
        f"{disk['append_p50_us']:.0f} µs, in-place pwrite + fdatasync p50 {disk['inplace_p50_us']:.0f} µs "
        "(one process alone; the three voters share this disk).",
        "mesh fsyncs before it acknowledges (log, then hard state, per Raft batch, on every voter); "
        "PySyncObj keeps its log in memory and never fsyncs.",
        "*client process*: a 4th process, not a voter (mesh: `mesh.Node` + `node.kv.put`, an RPC to a "
        "voter's `_raft` agent — *via a follower* when that voter is not the leader and forwards; "
        "PySyncObj: a read-only member, which forwards to the leader and also receives the whole log). "
        "*leader's process*: the load runs inside the leader (mesh: an agent calling `self.node.kv.put`, "
        "served in-process; PySyncObj: calls on the leader's `SyncObj`).",
        f"One writer: up to {sizes.latency_n:,} writes or {sizes.latency_s:g} s, one at a time. "
        f"In flight: {sizes.throughput_s:g} s counted after 0.5 s warm-up; p50/p99 are per write. "
        "1,000 keys, 64-byte values.",
    ]
    text = "\n".join([
        "# Raft: committed writes, mesh vs PySyncObj (3 voters, loopback, same run)", "",
        *[f"- {n}" for n in notes], "",
        writes_table(rows, sizes.concurrency), "",
    ])
    text += ("\n- slowest single write of each in-flight run (warm-up and drain included): "
             + "; ".join(f"{r['system']} {'client' if r['where'] == 'client' else 'on leader'} "
                         + " / ".join(f"@{c} {us(r['throughput'][c].get('max_us', float('nan')))}"
                                      for c in sizes.concurrency) for r in rows) + "\n")
    changes = [f"{r['system']} {'client' if r['where'] == 'client' else 'on leader'}, {x}"
               for r in rows for x in r["leader_changes"]]
    text += ("- leadership changed during a run (no kill; that run's figures include an election): "
             + "; ".join(changes) if changes else "- no leadership change during any of these runs") + "\n\n"

    work = work_table(rows)
    if work:
        text += "\n".join([
            "mesh's Raft work per committed write (voter counters around each run; an fsync batch is "
            "one log fdatasync, plus one hard-state fdatasync when term, vote or commit moved):", "",
            work, "", ""])
    if failovers:
        text += "\n".join([
            "## Leader failover (kill -9 of the leader while a client writes one at a time)", "",
            "From the SIGKILL to the first write acknowledged by a new leader (one sent after the kill, "
            "or answered more than 10 ms after it), and to the first status poll (every 10 ms) in "
            "which a survivor says it leads a later term. The victim restarts from its data folder "
            "(PySyncObj: empty, in memory) and catches up before the next kill. PySyncObj runs its "
            "defaults' election timeouts (0.4–1.4 s), mesh its own (150–300 ms, pre-vote, check-quorum); "
            "the PySyncObj failover uses the tuned config (the two differ only in batching).", "",
            failover_table(failovers), "",
            *([f"- mesh client, one writer again after the kills: p50 {us(after['p50_us'])}, p99 "
               f"{us(after['p99_us'])}; RPCs served per write by the leader ({after['leader']}) "
               f"{after['leader_calls_in']:.2f}, by the followers {after['followers_calls_in_total']:.2f} "
               "(a follower forwards each of them to the leader: one more hop)."]
              if after else []),
            *[f"- {s} raw (ms, first write): "
              + ", ".join(ms(r["write_s"]) for r in rs) for s, rs in failovers.items()],
            *[f"- {s} raw (ms, a survivor leads): " + ", ".join(ms(r.get("leader_s")) for r in rs)
              for s, rs in failovers.items() if any(r.get("leader_s") is not None for r in rs)], "",
        ])
    if args.no_pysyncobj:
        text += "\nPySyncObj was not measured in this run (--no-pysyncobj or not installed).\n"
    data = {"command": command, "date": started, "machine": host, "mesh": version, "disk": disk,
            "writes": rows, "failovers": failovers, "client_after_failovers": after}
    return publish(OUT, "raft", text, data,
                   (lambda png: plot(rows, failovers, png, f"{command} — {started}")) if args.plot else None)


def run_main(main: Any) -> None:
    """Run a benchmark's ``main`` as a script: SIGTERM unwinds like Ctrl-C, so the finally
    blocks (and this one) kill every child process."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    finally:
        Child.kill_all()


if __name__ == "__main__":
    run_main(main)
