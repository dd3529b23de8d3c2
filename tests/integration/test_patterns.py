"""The multi-agent patterns on real node processes: a supervisor restarts a crashing worker
that a peer on another node then calls, and gives up (escalating) once its restart intensity
is exceeded; a publish crosses the network once per subscribing node; and each example in
examples/patterns runs and says what it should."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mesh
from mesh.errors import CircuitOpen, Unavailable, UnknownAgent, Unreachable
from tests.conftest import run_async
from tests.integration.cluster import NodeProcess

pytestmark = pytest.mark.integration

AGENTS = "tests.integration.agents_patterns"
INSPECTOR = "tests.integration.agents:Inspector"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "patterns"

# between two instances of a worker, or before gossip has told us where it is
_IN_FLUX = (Unreachable, UnknownAgent, Unavailable, CircuitOpen)


async def eventually(check, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await check()
            if last:
                return last
        except _IN_FLUX as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time; last: {last!r}")
        await asyncio.sleep(interval)


def generation(node: mesh.Node, agent: str, want: int, via: str | None = None):
    """A check: ``agent`` answers (directly, or through the Peer ``via``) as instance ``want``."""
    async def check():
        who = await (node.call(via, "ask", agent) if via else node.call(agent, "whoami"))
        return who if who["generation"] == want else None
    return check


def test_supervisor_restarts_a_crashing_worker_and_a_peer_on_another_node_calls_it():
    n1 = NodeProcess("n1", [f"{AGENTS}:Plant=plant"]).start()
    n2 = NodeProcess("n2", [f"{AGENTS}:Peer=peer"], join=[n1.address]).start()

    async def main():
        async with mesh.Node("client", seeds=[n1.address], default_timeout=3.0) as node:
            who = await eventually(generation(node, "w1", 1, via="peer"))   # n2's peer -> n1's worker
            assert who["node"] == "n1"
            await node.call("w1", "crash")
            who = await eventually(generation(node, "w1", 2, via="peer"))   # the restarted instance
            assert who == {"name": "w1", "node": "n1", "generation": 2}
            assert (await node.call("w2", "whoami"))["generation"] == 1      # one_for_one: w2 untouched
            status = await node.call("plant", "status")
            team = status["children"][0]
            assert (status["state"], team["state"], team["restarts"]) == ("running", "running", 0)
            assert [(c["name"], c["restarts"], c["last_exit"]) for c in team["children"]] == [
                ("w1", 1, "RuntimeError: w1 was told to crash"), ("w2", 0, "")]
    try:
        run_async(main)
    finally:
        n2.terminate()
        n1.terminate()


def test_supervisor_gives_up_after_its_intensity_is_exceeded_and_escalates():
    n1 = NodeProcess("n1", [f"{AGENTS}:Plant=plant", INSPECTOR]).start()

    async def main():
        async with mesh.Node("client", seeds=[n1.address], default_timeout=3.0) as node:
            await eventually(generation(node, "w1", 1))
            await node.call("w1", "crash")
            await eventually(generation(node, "w1", 2))          # team: 1st restart, allowed
            await node.call("w1", "crash")                        # team: 2nd in 60 s -> gives up
            await eventually(generation(node, "w1", 3))          # plant restarted the team, fresh
            await eventually(generation(node, "w2", 2))          # (started after w1)
            team = (await node.call("plant", "status"))["children"][0]
            assert team["restarts"] == 1 and team["last_exit"].startswith("GaveUp: supervisor team: more than 1")

            await node.call("w1", "crash")
            await eventually(generation(node, "w1", 4))          # the new team's 1st restart
            await node.call("w1", "crash")                        # the new team gives up; plant's 2nd restart
            status = await eventually(lambda: _failed(node))
            assert status["failure"].startswith("more than 1 restart in 60 s (last: team, GaveUp")
            assert [(c["name"], c["state"]) for c in status["children"]] == [("team", "stopped")]
            # the workers are off their node, and gossip has told the client
            await eventually(lambda: _absent(node, {"team", "w1", "w2"}))
            with pytest.raises((UnknownAgent, Unreachable)):
                await node.call("w1", "whoami")
            # the node itself lives on; only the supervision tree gave up
            assert (await node.call("inspector", "stats"))["members_live"] >= 2
    try:
        run_async(main)
        assert n1.proc.poll() is None
    finally:
        n1.terminate()


async def _failed(node):
    status = await node.call("plant", "status")
    return status if status["state"] == "failed" else None


async def _absent(node, names):
    return not (names & set(node.directory()))


def test_a_publish_crosses_the_network_once_per_subscribing_node():
    sinks = lambda prefix: [f"{AGENTS}:TickSink={prefix}-{i}" for i in range(3)]   # noqa: E731
    n1 = NodeProcess("n1", [*sinks("a"), f"{INSPECTOR}=insp-1"]).start()
    n2 = NodeProcess("n2", [*sinks("b"), f"{INSPECTOR}=insp-2"], join=[n1.address]).start()
    n3 = NodeProcess("n3", [f"{INSPECTOR}=insp-3"], join=[n1.address]).start()     # no subscribers
    ticks = 200

    async def main():
        async with mesh.Node("client", seeds=[n1.address], default_timeout=3.0) as node:
            async def subscribed():
                topics = {m["id"]: m["topics"] for m in node.members()}
                return "ticks.*" in topics.get("n1", ()) and "ticks.*" in topics.get("n2", ()) \
                    and "n3" in topics
            await eventually(subscribed)
            inspectors = {"n1": "insp-1", "n2": "insp-2", "n3": "insp-3"}
            before = {n: await node.call(i, "stats") for n, i in inspectors.items()}
            mine = node.stats()
            for seq in range(ticks):
                await node.publish("ticks.AAPL", {"seq": seq})
                await asyncio.sleep(0)       # one publish per loop turn: no two share a frame
            out = node.stats()
            frames = out["frames_out"] - mine["frames_out"]
            gossip = out["gossip_out"] - mine["gossip_out"]
            # one frame per tick per subscribing node (2); gossip frames are the only others
            assert 2 * ticks - gossip <= frames <= 2 * ticks + gossip, (frames, gossip)
            assert frames < 3 * ticks             # nowhere near once per subscriber (6 per tick)
            for prefix in ("a", "b"):
                for i in range(3):
                    assert await eventually(lambda: _received(node, f"{prefix}-{i}", ticks)) == ticks
            after = {n: await node.call(i, "stats") for n, i in inspectors.items()}
            arrived = {n: after[n]["publishes_in"] - before[n]["publishes_in"] for n in inspectors}
            assert arrived == {"n1": ticks, "n2": ticks, "n3": 0}   # each once per node, for its 3 sinks
    try:
        run_async(main)
    finally:
        for n in (n3, n2, n1):
            n.terminate()


async def _received(node, sink, n):
    got = await node.call(sink, "received")
    return got if got >= n else None


# -- the examples ---------------------------------------------------------------------------

def run_example(name: str) -> str:
    out = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True, text=True,
                         timeout=60, cwd=EXAMPLES.parents[1])
    assert out.returncode == 0, f"{name}.py exited {out.returncode}\n{out.stdout}\n{out.stderr}"
    assert out.stdout.rstrip().endswith("done"), out.stdout
    return out.stdout


def test_example_peer_to_peer():
    out = run_example("peer_to_peer")
    assert "every agent reachable from every node: pricer-a@n2, pricer-b@n3, risk@n2, trader@n1" in out
    assert re.search(r"trade 100 AAPL: quote 187.25 from pricer-[ab]@n[23], .* checked by risk@n2 -> filled", out)
    assert "trade 5000 NVDA" in out and "-> rejected by risk" in out
    picks = re.search(r"call_any\('price'\), 50 quotes at once, picked by load score: (.*)", out).group(1)
    assert sum(int(n) for n in re.findall(r"pricer-[ab]@n[23] x(\d+)", picks)) == 50, picks
    assert "pricer-b 903.5 vs pricer-a@n2 903.5: agree" in out


def test_example_pubsub():
    out = run_example("pubsub")
    per_tick = float(re.search(r"-> ([\d.]+) frames per tick = one per subscribing node \(2\)", out).group(1))
    assert 1.9 <= per_tick <= 2.1, out
    assert out.count("300 ticks arrived once for its 3 subscribers") == 2
    for fast in ("fast-1", "fast-2", "fast-3", "fast-4"):
        assert re.search(rf"{fast}\s+got 300/300", out), out
    for slow, overflow in (("slow-drop", "drop"), ("slow-latest", "drop_oldest")):
        m = re.search(rf"{slow}\s+queue=8 overflow={overflow}: handled (\d+), dropped (\d+)", out)
        assert m and int(m.group(1)) + int(m.group(2)) == 300 and int(m.group(2)) > 0, out
    assert re.search(r"slow-latest .* last tick handled 299 ", out), out     # drop_oldest keeps the newest
    assert "the publisher never waited for the slow subscribers" in out


def test_example_mediator():
    out = run_example("mediator")
    assert re.search(r"route order AAPL 100 lit\s+-> exec-[12] filled 100 AAPL", out)
    assert "-> risk-desk will review 50000 AAPL (priority high)" in out
    assert "-> dark-pool filled 300 MSFT" in out
    assert "blotter got {'type': 'cancel', 'id': 7}" in out
    assert "blotter heard {'topic': 'news.NVDA', 'symbol': 'NVDA', 'headline': 'beats'}" in out
    assert "-> NoRoute: no rule matched; kept as a dead letter" in out
    assert re.search(r"call_any spread them: exec-1 \d+, exec-2 \d+", out)
    assert "dead letters: [('quote', 'no rule matched')]" in out


def test_example_hierarchical():
    out = run_example("hierarchical")
    assert "pricer-1 is now pricer-1#2, pricer-2 untouched (pricer-2#1)" in out
    assert "feed (rest_for_one) restarted reader and the workers after it: reader#2, normalizer#2" in out
    assert "pricing gave up (GaveUp: supervisor pricing: more than 1 restart in 30 s" in out
    assert "master restarted pricing with fresh workers: pricer-1#3, pricer-2#2; feed untouched (reader#2)" in out
    assert "master gave up: more than 1 restart in 30 s (last: pricing, GaveUp" in out
    assert "agents left in the operator's directory: ['master']" in out
