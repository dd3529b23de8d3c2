"""Security on real sockets: CURVE links with a ZAP allow-list, signed membership records,
and the ACL with its audit log. Nodes run in this process, each with its own ZeroMQ context,
keys and trust folder; the loopback capture reads the bytes the kernel carried."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import time
from dataclasses import replace

import pytest
import zmq

import mesh
from mesh._core import codec
from mesh._core.wire import Kind
from mesh.errors import Unauthorized, Unreachable
from mesh.security.keys import generate, write_keys
from mesh.security.settings import InsecureConfig
from mesh.swim.messages import Gossip, Send, State
from tests.conftest import run_async

pytestmark = pytest.mark.integration

MARKER = "confidential-order-7f3a9c"


class Calc(mesh.Agent):
    @mesh.rpc
    def add(self, a, b):
        return a + b

    @mesh.rpc
    def secret(self):
        return "the plans"

    @mesh.rpc
    def echo(self, x):
        return x


class Listener(mesh.Agent):
    def __init__(self, name):
        super().__init__(name)
        self.got = []

    @mesh.on("signals.#")
    async def on_signal(self, topic, payload):
        self.got.append(topic)

    @mesh.on("orders.#")
    async def on_order(self, topic, payload):
        self.got.append(topic)

    @mesh.on("secret.#")
    async def on_secret(self, topic, payload):
        self.got.append(topic)


@pytest.fixture
def keyring(tmp_path):
    """Keys for n1..n3 (trusted) and evil (not), and the cluster's trust folder."""
    trust = tmp_path / "trust"
    trust.mkdir()
    keys = {}
    for name in ("n1", "n2", "n3", "evil"):
        keys[name] = generate(name)
        _, pub = write_keys(keys[name], tmp_path / "keys" / name)
        if name != "evil":
            shutil.copy(pub, trust / f"{name}.pub")
    return keys, trust


async def eventually(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def secure(name, keyring, **kw):
    keys, trust = keyring
    return mesh.Node(name, keys=keys[name], trust=trust, join_timeout=5, **kw)


def test_a_key_off_the_allow_list_cannot_join_call_gossip_or_vote(keyring, tmp_path):
    keys, trust = keyring
    # evil knows every public key (they are public) and trusts them; the cluster does not trust evil
    evil_trust = tmp_path / "evil-trust"
    shutil.copytree(trust, evil_trust)
    shutil.copy(tmp_path / "keys" / "evil" / "evil.pub", evil_trust)
    voters = ["n1", "n2", "n3"]

    async def main():
        n1 = secure("n1", keyring, data_dir=tmp_path / "n1", raft_voters=voters)
        n1.add(Calc("calc"))
        await n1.start()
        n2 = secure("n2", keyring, seeds=[n1.address], data_dir=tmp_path / "n2", raft_voters=voters)
        n3 = secure("n3", keyring, seeds=[f"n1@{n1.address}"], data_dir=tmp_path / "n3", raft_voters=voters)
        await n2.start()
        await n3.start()
        nodes = [n1, n2, n3]
        try:
            await n2.kv.put("k", 1, timeout=10)
            assert await n3.call("calc", "add", 2, 3) == 5       # trusted nodes talk
            term = max(n._raft.status()["term"] for n in nodes)
            # evil also claims to be a Raft voter: it campaigns, with ever higher terms
            evil = mesh.Node("evil", seeds=[n1.address, n2.address], keys=keys["evil"], trust=evil_trust,
                             join_timeout=2, data_dir=tmp_path / "evil", raft_voters=voters + ["evil"])
            with pytest.raises(Unreachable):
                await evil.start()
            evil2 = mesh.Node("evil", keys=keys["evil"], trust=evil_trust, data_dir=tmp_path / "evil2",
                              raft_voters=voters + ["evil"])
            await evil2.start()                 # alone; now it tries to reach the members by itself
            for n in nodes:
                evil2._transport.connect(n.node_id, n.address)
            await asyncio.sleep(3.0)            # several election timeouts of evil's
            assert evil2._raft.status()["term"] > term or evil2._raft.status()["role"] != "follower"
            with pytest.raises((Unreachable, mesh.errors.UnknownAgent)):
                await evil2.call("calc", "add", 1, 1, timeout=1)
            await evil2.stop()
            for n in nodes:
                assert "evil" not in {m["id"] for m in n.members()}           # no gossip got in
                assert max(x._raft.status()["term"] for x in nodes) == term      # no vote request got in
            refused = sum(n.security.links.refused["unknown-key"] for n in nodes)
            assert refused >= 2, refused
            assert await n2.kv.get("k", timeout=10) == 1
        finally:
            for n in reversed(nodes):
                await n.stop()
    run_async(main)


def test_a_plaintext_client_gets_nothing(keyring):
    async def main():
        n1 = secure("n1", keyring)
        n1.add(Calc("calc"))
        await n1.start()
        ctx = zmq.Context()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.ROUTING_ID, b"n2")        # even with a trusted node's name
        raw.setsockopt(zmq.LINGER, 0)
        try:
            raw.connect(n1.address)
            frame = codec.encode(int(Kind.REQUEST), 1, 0, "n2", "calc", "add", [[1, 2], {}])
            for _ in range(5):
                raw.send(frame)
            await asyncio.sleep(1.0)
            assert raw.poll(200) == 0                # no answer, no error: nothing
            assert n1.stats()["calls_in"] == 0       # and nothing reached the node
        finally:
            raw.close(0)
            ctx.term()
            await n1.stop()
    run_async(main)


class LoopbackCapture:
    """Every byte the kernel carries on ``lo`` while running (needs CAP_NET_RAW)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self.data = bytearray()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            try:
                self.data += self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()


def _capture_or_skip():
    try:
        return LoopbackCapture()
    except PermissionError:
        pytest.skip("capturing on lo needs CAP_NET_RAW (root); the kernel refused the packet socket")


def test_traffic_on_the_wire_is_not_readable(keyring):
    """The same call with a marker payload: visible on the loopback link in plaintext (so the
    capture works), absent from it under CURVE."""
    async def exchange(make):
        a, b = make("n1"), None
        a.add(Calc("calc"))
        await a.start()
        b = make("n2", seeds=[a.address])
        await b.start()
        try:
            await eventually(lambda: "calc" in b.directory())
            cap = _capture_or_skip()
            try:
                for _ in range(3):
                    assert await b.call("calc", "echo", MARKER) == MARKER
                await asyncio.sleep(0.2)
            finally:
                cap.close()
            return bytes(cap.data)
        finally:
            await b.stop()
            await a.stop()

    async def main():
        plain = await exchange(lambda name, **kw: mesh.Node(name, insecure=True, **kw))
        assert MARKER.encode() in plain
        wire = await exchange(lambda name, **kw: secure(name, keyring, **kw))
        assert len(wire) > 1000                      # the calls did cross the link
        assert MARKER.encode() not in wire
    run_async(main)


def test_forged_and_replayed_membership_records_are_rejected(keyring):
    async def main():
        n1 = secure("n1", keyring)
        await n1.start()
        n2 = secure("n2", keyring, seeds=[n1.address])
        n3 = secure("n3", keyring, seeds=[n1.address])
        await n2.start()
        await n3.start()
        nodes = [n1, n2, n3]
        try:
            await eventually(lambda: {"n1", "n2", "n3"} <= {m["id"] for m in n2.members()})
            genuine = n2._gossip.core._nodes["n1"].as_update()
            assert genuine.sig and genuine.state is State.ALIVE

            def relay(update):      # n3, a trusted member, passes a record to n2
                n3._gossip._send(Send("n2", n2.address, Gossip((update,))))

            forged = [replace(genuine, incarnation=genuine.incarnation + 5, address="tcp://127.0.0.1:1"),
                      replace(genuine, incarnation=genuine.incarnation + 5, meta=b"\x90"),
                      replace(genuine, incarnation=genuine.incarnation + 5, sig=bytes(64)),
                      replace(genuine, incarnation=genuine.incarnation + 5,
                              sig=n3.security.links.keys.sign(b"anything"))]
            for u in forged:
                relay(u)
            await eventually(lambda: n2.stats()["gossip_forged"] >= len(forged))
            view = n2._gossip.member("n1")
            assert (view.incarnation, view.address) == (genuine.incarnation, n1.address)

            # n1 moves on (a new agent: a new incarnation, re-signed), then the old record comes back
            n1.add(Calc("late"))
            await eventually(lambda: "late" in n2.directory())
            newer = n2._gossip.member("n1")
            assert newer.incarnation > genuine.incarnation
            relay(genuine)
            await asyncio.sleep(0.5)
            now = n2._gossip.member("n1")
            assert (now.incarnation, now.meta) == (newer.incarnation, newer.meta)
            assert "late" in n2.directory()
        finally:
            for n in reversed(nodes):
                await n.stop()
    run_async(main)


POLICY = """
[[allow]]
principal = "node:n2"
call = ["calc.add", "calc.echo"]
publish = ["signals.*"]
kv_read = ["limits/"]
kv_write = ["limits/"]

[[allow]]
principal = ["node:n1", "node:n3"]
subscribe = ["signals.#", "orders.#"]
publish = ["signals.#", "orders.#", "secret.#"]
call = ["*"]

[[deny]]
principal = "node:n2/agent:intruder"
call = ["*"]
"""


class Intruder(mesh.Agent):
    @mesh.rpc
    async def try_add(self):
        return await self.call("calc", "add", 1, 1)


def test_acl_allows_and_denies_calls_topics_and_kv_with_audit(keyring, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)

    def node(name, **kw):
        return secure(name, keyring, acl=policy, audit_log=tmp_path / f"audit-{name}.jsonl", **kw)

    async def main():
        n1 = node("n1", data_dir=tmp_path / "n1", raft_voters=["n1"])
        n1.add(Calc("calc"))
        await n1.start()
        n2 = node("n2", seeds=[n1.address])
        n3 = node("n3", seeds=[n1.address])
        listener = Listener("listener")
        n3.add(listener)
        n2.add(Intruder("intruder"))
        await n2.start()
        await n3.start()
        nodes = [n1, n2, n3]
        try:
            await eventually(lambda: "calc" in n2.directory() and "listener" in n1.directory())
            # calls
            assert await n2.call("calc", "add", 2, 2) == 4
            with pytest.raises(Unauthorized, match="n2.*calc.secret"):
                await n2.call("calc", "secret")
            with pytest.raises(Unauthorized, match="intruder"):
                await n2.call("intruder", "try_add")       # its agent is denied, though n2 may call add
            assert await n3.call("calc", "secret") == "the plans"
            # KV: n2 may read and write limits/ only (n1 is the voter that checks)
            await n2.kv.put("limits/AAPL", 100, timeout=10)
            assert await n2.kv.get("limits/AAPL", timeout=10) == 100
            with pytest.raises(Unauthorized):
                await n2.kv.put("secrets/key", "x", timeout=10)
            with pytest.raises(Unauthorized):
                await n2.kv.get("secrets/key", timeout=10)
            with pytest.raises(Unauthorized):
                await n3.kv.get("limits/AAPL", timeout=10)     # n3 has no KV rule at all
            # topics: n3 subscribes signals.#, orders.# and secret.#, but may not subscribe secret.#
            await n1.publish("signals.AAPL", 1)
            await n1.publish("orders.AAPL", 2)
            await n1.publish("secret.AAPL", 3)
            await eventually(lambda: {"signals.AAPL", "orders.AAPL"} <= set(listener.got))
            # n2 may publish signals.* but not orders.*: checked by the subscriber's node
            await n2.publish("signals.MSFT", 3)
            await n2.publish("orders.MSFT", 4)
            await eventually(lambda: "signals.MSFT" in listener.got)
            await asyncio.sleep(0.3)
            assert "secret.AAPL" not in listener.got and "orders.MSFT" not in listener.got
        finally:
            for n in reversed(nodes):
                await n.stop()
        audit = {name: [json.loads(line) for line in (tmp_path / f"audit-{name}.jsonl").read_text().splitlines()]
                 for name in ("n1", "n2", "n3")}
        seen = {(e["node"], e["agent"], e["action"], e["resource"]) for log in audit.values() for e in log}
        assert ("n2", None, "call", "calc.secret") in seen
        assert ("n2", "intruder", "call", "calc.add") in seen
        assert ("n2", None, "kv_write", "secrets/key") in seen
        assert ("n2", None, "kv_read", "secrets/key") in seen
        assert ("n3", None, "subscribe", "secret.#") in seen       # n1 never routes secret.* to n3
        assert ("n2", None, "publish", "orders.MSFT") in seen      # n3 drops it on arrival
        assert all(e["rule"] for e in audit["n1"])
    run_async(main)


def test_plaintext_off_loopback_is_refused(keyring):
    with pytest.raises(InsecureConfig, match="not a loopback address"):
        mesh.Node("n1", bind="tcp://0.0.0.0:*")
    with pytest.raises(InsecureConfig, match="loopback"):
        mesh.Node("n1", seeds=["tcp://10.1.2.3:7000"], insecure=True)
    keys, trust = keyring
    with pytest.raises(InsecureConfig, match="does not match its key"):
        mesh.Node("n2", keys=keys["n1"], trust=trust)
    mesh.Node("n1", bind="tcp://0.0.0.0:*", keys=keys["n1"], trust=trust)   # with keys: fine
    assert os.path.exists(trust / "n1.pub")


def test_key_rotation_without_downtime(keyring, tmp_path):
    """n2 gets a new key: its new .pub joins the trust folder (both accepted), n2 restarts
    with the new key and is reached again, the old .pub goes, n1 never stopped serving."""
    keys, trust = keyring

    async def main():
        n1 = secure("n1", keyring)
        n1.add(Calc("calc"))
        await n1.start()
        n2 = secure("n2", keyring, seeds=[n1.address])
        await n2.start()
        try:
            await eventually(lambda: "calc" in n2.directory())
            assert await n2.call("calc", "add", 1, 1) == 2
            new = generate("n2")
            _, pub = write_keys(new, tmp_path / "keys" / "n2-new")
            shutil.copy(pub, trust / "n2.new.pub")              # step 1: both keys accepted
            await eventually(lambda: len(n1.security.links.trust.identities("n2")) == 2)
            await n2.stop()                                      # step 2: restart with the new key
            n2 = mesh.Node("n2", seeds=[n1.address], keys=new, trust=trust, join_timeout=5)
            n2.add(Calc("calc2"))
            await n2.start()
            await eventually(lambda: "calc" in n2.directory() and "calc2" in n1.directory())
            assert await n2.call("calc", "add", 2, 2) == 4
            await eventually(lambda: n1._transport.is_up("n2"))     # n1 dials n2 with its new key
            assert await n1.call("calc2", "add", 3, 3) == 6      # n1 dials n2 with its new key
            os.remove(trust / "n2.pub")                          # step 3: the old key goes
            await eventually(lambda: len(n1.security.links.trust.identities("n2")) == 1)
            assert await n2.call("calc", "add", 4, 4) == 8
            assert await n1.call("calc2", "add", 5, 5) == 10
        finally:
            await n2.stop()
            await n1.stop()
    run_async(main)


def test_meshctl_with_an_operator_key(keyring, tmp_path):
    """meshctl joins a secure mesh with a trusted operator key, and gets nowhere without it."""
    import subprocess
    import sys

    from tests.integration.cluster import ROOT

    keys, trust = keyring
    ops = generate("ops")
    secret, pub = write_keys(ops, tmp_path / "keys" / "ops")
    shutil.copy(pub, trust / "ops.pub")

    async def main():
        n1 = secure("n1", keyring)
        n1.add(Calc("calc"))
        await n1.start()
        try:
            await eventually(lambda: len(n1.security.links.trust.identities("ops")) == 1)

            def meshctl(*args):
                return subprocess.run([sys.executable, "-m", "mesh.tools.meshctl", "--join", n1.address,
                                       "--timeout", "3", *args], cwd=ROOT, capture_output=True, text=True,
                                      timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
            ok = await asyncio.to_thread(meshctl, "--keys", str(secret), "--trust", str(trust), "--json",
                                         "call", "calc", "add", "2", "3")
            assert ok.returncode == 0 and json.loads(ok.stdout) == {"result": 5}, ok.stderr
            denied = await asyncio.to_thread(meshctl, "call", "calc", "add", "2", "3")   # plaintext
            assert denied.returncode == 1 and "Unreachable" in denied.stderr
            assert n1.stats()["links_refused"] >= 1
        finally:
            await n1.stop()
    run_async(main)
