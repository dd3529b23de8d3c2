"""Three hosts, a cable cut and healed: membership, Raft and calls recover (issue 9, part 4).

Each node runs as ``python -m mesh.node`` in its own network namespace (``netns.py``), on its
own address (10.77.0.1-3), behind a switch; off loopback security is mandatory, so every link
is CURVE with a trust folder of the nodes' keys. The test talks to the mesh through two
clients (``stdio_client.py``) under an operator key, one beside n1 and one beside n3, so each
side of the partition can be asked what it sees. Each node also hosts an ``Inspector`` that
answers with that node's own membership view.

The scenario: the three form one mesh (every view all alive, a KV write read back through
another host, calls across hosts) and Raft leadership is moved to n3, so that the leader is
the one cut off; n3's cable is pulled at the switch (silent: no RST, no FIN); n1 and n2
must declare n3 dead, elect a leader among them and accept writes, while n3 steps down and,
alone, must neither commit nor serve a linearizable read, and its calls to n1 must fail with
Unreachable; the cable is plugged back and, within a bound, every view is all alive again,
n3 has applied the writes made without it, and calls work both ways. Timings are logged
(``-o log_cli=true --log-cli-level=INFO``) and recorded as properties, never asserted.
"""
from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from mesh.security.keys import generate, write_keys
from tests.integration.cluster import ROOT
from tests.integration.netns import Host, KernelRefused, Network, namespaces

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

VOTERS = ["n1", "n2", "n3"]
PORT = 7000
START_S = 40.0        # processes started and a mesh formed, on a loaded 2-core machine
DETECT_S = 25.0       # seen: n3 dead at n1/n2 after ~3-4 s; n1, n2 dead at n3 after ~8-10 s
RECOVER_S = 30.0      # seen: 1-3 s (the reconnect sync runs every 5 s, a re-dial within ~4 s)
POLL_S = 0.1


def _env() -> dict[str, str]:
    # MESH_* settings of the caller's shell must not leak into the nodes; MESH_PURE must
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_") or k == "MESH_PURE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env


def _read_ready(procs: dict[str, subprocess.Popen], deadline: float) -> dict[str, str]:
    """Wait for every process's ``ready <id> <address>`` line: name -> address."""
    found: dict[str, str] = {}
    while len(found) < len(procs):
        left = deadline - time.monotonic()
        waiting = {p.stdout: name for name, p in procs.items() if name not in found}
        ready, _, _ = select.select(list(waiting), [], [], max(0.0, left))
        if not ready:
            raise AssertionError(f"not ready within the deadline: {sorted(waiting.values())}")
        for stream in ready:
            name = waiting[stream]
            line = stream.readline()
            if not line.startswith("ready "):
                raise AssertionError(f"{name} did not start: {line!r} (exit {procs[name].poll()})")
            found[name] = line.split()[2]
    return found


class Client:
    """One ``stdio_client`` process in a host: a request per line, an answer per line."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def ask(self, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, "timeout": timeout, **fields}) + "\n")
        self.proc.stdin.flush()
        # the client bounds the operation by ``timeout``; the margin covers a loaded machine
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 15.0)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise AssertionError(f"client gave no answer to {op} {fields} (exit {self.proc.poll()})")
        return json.loads(line)

    def call(self, agent: str, method: str, *args: Any, timeout: float = 5.0) -> dict[str, Any]:
        return self.ask("call", timeout, agent=agent, method=method, args=list(args))

    def result(self, agent: str, method: str, *args: Any, timeout: float = 5.0) -> Any:
        answer = self.call(agent, method, *args, timeout=timeout)
        assert answer["ok"], (agent, method, args, answer)
        return answer["result"]


class Lab:
    """The hosts, the nodes on them and the clients; :meth:`close` stops every process
    before the namespaces go."""

    def __init__(self, net: Network, base: Path) -> None:
        self.net = net
        self.base = base
        self.hosts: dict[str, Host] = {n: net.add_host(f"h{i}", i) for i, n in enumerate(VOTERS, 1)}
        self.procs: list[subprocess.Popen] = []
        self.keys = base / "keys"
        self.trust = base / "trust"
        self.trust.mkdir()
        for ident in [*VOTERS, "ops"]:
            _, pub = write_keys(generate(ident), self.keys)
            (self.trust / Path(pub).name).write_bytes(Path(pub).read_bytes())

    def seed(self, node: str) -> str:
        return f"{node}@tcp://{self.hosts[node].address}:{PORT}"

    def _spawn(self, host: Host, argv: list[str], log_name: str) -> subprocess.Popen:
        with open(self.base / log_name, "ab") as err:
            proc = host.popen([sys.executable, *argv], cwd=ROOT, env=_env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=err, text=True)
        self.procs.append(proc)
        return proc

    def start_nodes(self) -> None:
        procs = {}
        for node, host in self.hosts.items():
            join = [] if node == "n1" else ["--join", self.seed("n1")]
            procs[node] = self._spawn(host, [
                "-m", "mesh.node", "--id", node, "--bind", f"tcp://{host.address}:{PORT}", *join,
                "--keys", str(self.keys / f"{node}.key"), "--trust", str(self.trust),
                "--raft-voters", ",".join(VOTERS), "--data-dir", str(self.base / "data" / node),
                "--agent", f"tests.integration.agents:Calc=calc-{node}",
                "--agent", f"tests.integration.agents:Inspector=insp-{node}",
                "--log-level", "warning", "--join-timeout", "30"], f"{node}.log")
        addresses = _read_ready(procs, time.monotonic() + START_S)
        assert addresses == {n: f"tcp://{h.address}:{PORT}" for n, h in self.hosts.items()}

    def start_clients(self, *beside: str) -> list[Client]:
        procs = {}
        for node in beside:
            host = self.hosts[node]
            procs[node] = self._spawn(host, [
                "-m", "tests.integration.stdio_client", "--name", f"c-{node}",
                "--keys", str(self.keys / "ops.key"), "--trust", str(self.trust),
                "--bind", f"tcp://{host.address}:*", "--join", self.seed(node)], f"client-{node}.log")
        _read_ready(procs, time.monotonic() + START_S)
        return [Client(procs[n]) for n in beside]

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for path in sorted(self.base.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            if tail:
                out.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def close(self) -> None:
        try:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()         # the test is not about graceful stops: be quick
            for proc in self.procs:
                proc.wait(10)
                for stream in (proc.stdin, proc.stdout):
                    if stream:
                        stream.close()
        finally:
            self.net.close()


@pytest.fixture
def network():
    try:
        net = Network()
    except KernelRefused as exc:
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def lab(network, tmp_path):
    lab = Lab(network, tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def wait_for(what: str, check: Callable[[], Any], timeout: float, lab: Lab) -> None:
    """Poll ``check`` until it returns something true. On the deadline fail with the last
    value and the tails of the processes' logs."""
    wait_all({what: check}, timeout, lab)


def wait_all(conditions: dict[str, Callable[[], Any]], timeout: float, lab: Lab,
             since: float | None = None) -> dict[str, float]:
    """Poll every condition until each has held once (one is not asked again after it held);
    the seconds after ``since`` (default: now) at which each first held, to the poll."""
    t0 = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    held: dict[str, float] = {}
    last: dict[str, Any] = {}
    while True:
        for what, check in conditions.items():
            if what not in held:
                last[what] = check()
                if last[what]:
                    held[what] = round(time.monotonic() - t0, 2)
        if len(held) == len(conditions):
            return held
        if time.monotonic() > deadline:
            missing = {w: last[w] for w in conditions if w not in held}
            raise AssertionError(f"not within {timeout:g} s: {missing!r} (held: {held})\n{lab.log_tails()}")
        time.sleep(POLL_S)


def view(client: Client, node: str) -> dict[str, str] | None:
    """``node``'s own membership view of the voters (id -> state); None if it cannot be asked."""
    answer = client.call(f"insp-{node}", "members", timeout=2.0)
    if not answer["ok"]:
        return None
    return {m["id"]: m["state"] for m in answer["result"] if m["id"] in VOTERS}


def raft_status(client: Client, node: str) -> dict[str, Any] | None:
    answer = client.call(f"_ops.{node}", "raft", timeout=2.0)
    return answer["result"] if answer["ok"] else None


def test_partition_and_heal_across_hosts(lab, record_property):
    lab.start_nodes()
    c1, c3 = lab.start_clients("n1", "n3")
    everyone_alive = dict.fromkeys(VOTERS, "alive")

    # -- one mesh across three hosts -------------------------------------------------------
    wait_for("every view all alive", lambda: all(view(c1, n) == everyone_alive for n in VOTERS), START_S, lab)
    hello = c1.ask("put", 20.0, key="mh/hello", value="world")       # the first election may be running
    assert hello["ok"], hello
    before = hello["result"]
    assert c3.ask("get", 10.0, key="mh/hello")["result"] == "world"
    assert c1.result("calc-n3", "whoami") == "n3"
    assert c3.result("calc-n1", "add", 2, 3) == 5
    assert c1.result("calc-n2", "relay", "calc-n3", 1, 2) == 3              # n2 calls n3
    # The hard case: the leader is the one cut off. It must step down (check-quorum) and the
    # other two elect a new one; a transfer makes that the case every run.
    assert c1.result("_raft.n1", "transfer", "n3", 5.0, timeout=6.0)[1] == "n3"
    wait_for("every voter follows n3", lambda: all((raft_status(c1, n) or {}).get("leader") == "n3"
                                                   for n in VOTERS), START_S, lab)

    # -- pull n3's cable -------------------------------------------------------------------
    lab.net.cut(lab.hosts["n3"])
    t_cut = time.monotonic()

    def majority_leader() -> str | None:
        s1, s2 = raft_status(c1, "n1"), raft_status(c1, "n2")
        if s1 and s2 and s1["leader"] == s2["leader"] and s1["leader"] in ("n1", "n2"):
            return s1["leader"]
        return None

    timings = wait_all({
        "n3_suspect_s": lambda: {(view(c1, n) or {}).get("n3") for n in ("n1", "n2")} & {"suspect", "dead"},
        "n3_dead_s": lambda: all((view(c1, n) or {}).get("n3") == "dead" for n in ("n1", "n2")),
        "majority_leader_s": majority_leader,
        "n3_stepped_down_s": lambda: (raft_status(c3, "n3") or {}).get("role") not in (None, "leader"),
        "others_dead_at_n3_s": lambda: view(c3, "n3") == {"n1": "dead", "n2": "dead", "n3": "alive"},
    }, DETECT_S, lab, since=t_cut)
    new_leader = majority_leader()
    during = {f"mh/during/{i}": i for i in range(5)}
    for key, value in during.items():
        put = c1.ask("put", 10.0, key=key, value=value)
        assert put["ok"], put                                        # the majority commits
    assert c1.ask("get", 5.0, key="mh/during/4")["result"] == 4

    lost = c3.ask("put", 3.0, key="mh/minority", value="x")          # n3 alone cannot commit
    assert not lost["ok"] and lost["error"] in ("Unavailable", "Timeout"), lost
    read = c3.call("_raft.n3", "get", "mh/hello", 2.0, timeout=3.0)  # nor serve a linearizable read
    assert not read["ok"] and read["error"] in ("Unavailable", "Timeout"), read
    assert c1.ask("get", 5.0, key="mh/minority")["result"] is None   # the majority never saw it

    relay = c3.call("calc-n3", "relay", "calc-n1", 1, 1, timeout=8.0)     # n3 calls n1
    assert not relay["ok"] and relay["error"] == "Unreachable", relay
    direct = c3.call("calc-n1", "add", 1, 1, timeout=5.0)
    assert not direct["ok"] and direct["error"] == "Unreachable", direct
    assert c1.call("calc-n3", "add", 1, 1, timeout=5.0)["error"] == "Unreachable"
    assert c1.result("calc-n2", "add", 1, 1) == 2                   # the majority still calls
    log.info("n3 alone: %s", raft_status(c3, "n3"))

    # -- plug it back in -------------------------------------------------------------------
    lab.net.heal(lab.hosts["n3"])
    t_heal = time.monotonic()

    def n3_applied_the_partition_writes() -> bool:
        # served from n3's own history, not forwarded: what n3 itself has applied
        answer = c3.call("_raft.n3", "changes", "mh/during/", before, 0.0, 2.0, timeout=3.0)
        if not answer["ok"]:
            return False
        _, (_, changes) = answer["result"]
        return changes is not None and {c[0]: c[1] for c in changes} == during

    healed = wait_all({
        "n3_alive_at_n1_n2_s": lambda: all(view(c1, n) == everyone_alive for n in ("n1", "n2")),
        "all_alive_at_n3_s": lambda: view(c3, "n3") == everyone_alive,
        "n3_caught_up_s": n3_applied_the_partition_writes,
    }, RECOVER_S, lab, since=t_heal)
    # Calls only now: polled while links were still down, they would trip circuit breakers
    # (a breaker counts Unreachable) and the test would time the breakers, not the links.
    healed.update(wait_all({
        "call_n1_to_n3_s": lambda: c1.call("calc-n1", "relay", "calc-n3", 2, 3, timeout=3.0).get("result") == 5,
        "call_n3_to_n1_s": lambda: c3.call("calc-n3", "relay", "calc-n1", 4, 5, timeout=3.0).get("result") == 9,
    }, RECOVER_S, lab, since=t_heal))
    timings.update({f"healed_{k}": v for k, v in healed.items()})
    # The client beside n1 is a member too, with its own link to n3 that comes back on its
    # own schedule: asking n3 from h1 may fail for a moment after the nodes have recovered.
    wait_for("every view all alive, n3's asked from h1",
             lambda: all(view(c1, n) == everyone_alive for n in VOTERS), RECOVER_S, lab)
    leader, value = c3.result("_raft.n3", "get", "mh/during/4", 5.0, timeout=6.0)   # linearizable, via n3
    assert value == 4 and leader in VOTERS
    after = c3.ask("put", 10.0, key="mh/after", value="healed")
    assert after["ok"], after
    assert c1.ask("get", 5.0, key="mh/after")["result"] == "healed"

    wait_for("the three voters follow one leader",
             lambda: len({(raft_status(c1, n) or {}).get("leader") for n in VOTERS} - {None}) == 1, RECOVER_S, lab)
    # pre-vote and check-quorum: n3 coming back does not depose the leader the majority chose
    # (logged, not asserted: on a starved machine a missed heartbeat may legitimately elect anew)
    log.info("leader before the heal: %s, after: %s", new_leader, raft_status(c1, "n1")["leader"])

    for name, seconds in timings.items():
        record_property(name, seconds)
    log.info("multihost timings (s after the cut; healed_*: after the heal): %s", timings)
    log.info("minority write: %s; relay from n3: %s", lost, relay)


def test_network_is_torn_down(network):
    host = network.add_host("solo", 9)
    assert {network.switch, host.netns} <= namespaces()
    network.cut(host)
    assert not network.link_up(host)
    network.heal(host)
    assert network.link_up(host)
    network.close()
    assert not ({network.switch, host.netns} & namespaces())
    network.close()                                    # idempotent
