"""A node facing bad input over a real socket: garbage frames, wrong frame shapes, requests
for unknown agents, oversized payloads, calls while stopped. It answers with clear errors,
counts what it drops, and keeps serving."""
from __future__ import annotations

import asyncio

import pytest
import zmq

import mesh
from mesh._core import codec
from mesh._core.wire import Kind
from mesh.errors import EncodeError, Unavailable, UnknownAgent
from tests.conftest import run_async
from tests.integration.agents import Calc


@pytest.fixture
def rogue():
    """A raw DEALER that speaks to a node without the mesh's manners."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, b"rogue")
    yield sock
    sock.close(0)
    ctx.term()


def test_garbage_frames_are_counted_and_dropped(rogue):
    raw = rogue

    async def main():
        async with mesh.Node("victim") as node:
            node.add(Calc("calc"))
            raw.connect(node.address)
            garbage = [b"", b"\x00", b"\x01" * 43, b"\xff" * 100, bytes(range(256)) * 40]
            env = codec.encode(Kind.REQUEST, 1, 0, "rogue", "calc", "add", [[1, 2], {}])
            garbage.append(env[:-3])                       # truncated body
            garbage.append(env[:44] + b"\xc1")             # header fine, rest cut
            for g in garbage:
                raw.send(g)
            raw.send_multipart([b"a", b"b"])               # wrong frame shape
            # A well-formed request from the same rogue peer still gets its answer.
            raw.send(env)
            for _ in range(200):
                await asyncio.sleep(0.01)
                if raw.poll(0):
                    break
            reply, body = codec.decode(raw.recv())
            assert (reply.kind, reply.corr_id, body) == (Kind.REPLY, 1, 3)
            stats = node.stats()
            assert stats["malformed"] == len(garbage)          # envelopes that did not decode
            assert stats["malformed_frames"] == 1              # the two-part message
    run_async(main)


def test_bad_request_bodies_get_error_replies(rogue):
    raw = rogue

    async def main():
        async with mesh.Node("victim") as node:
            node.add(Calc("calc"))
            raw.connect(node.address)
            cases = {
                1: codec.encode(Kind.REQUEST, 1, 0, "rogue", "nobody", "add", [[1, 2], {}]),
                2: codec.encode(Kind.REQUEST, 2, 0, "rogue", "calc", "nope", [[], {}]),
                3: codec.encode(Kind.REQUEST, 3, 0, "rogue", "calc", "add", "not [args, kwargs]"),
                4: codec.encode_raw(Kind.REQUEST, 4, 0, "rogue", "calc", "add", b"\x91" * 100 + b"\xc0"),
            }
            for data in cases.values():
                raw.send(data)
            answers = {}
            for _ in range(300):
                await asyncio.sleep(0.01)
                while raw.poll(0):
                    for env in codec.decode_frame(raw.recv()):   # replies of one read come batched
                        answers[env.corr_id] = (env.kind, codec.load_body(env.body)[0])
                if len(answers) == len(cases):
                    break
            assert answers == {1: (Kind.ERROR, "UnknownAgent"), 2: (Kind.ERROR, "UnknownMethod"),
                               3: (Kind.ERROR, "ProtocolError"), 4: (Kind.ERROR, "DecodeError")}
    run_async(main)


def test_oversized_payload_is_refused_before_sending():
    async def main():
        limits = codec.Limits(max_frame_bytes=64 * 1024, max_body_bytes=64 * 1024)
        async with mesh.Node("a", limits=limits) as a:
            a.add(Calc("calc-a"))
            async with mesh.Node("b", seeds=[a.address], limits=limits) as b:
                with pytest.raises(EncodeError):
                    await b.call("calc-a", "add", b"x" * 100_000, b"")
                with pytest.raises(EncodeError):
                    await b.call("calc-a", "add", object(), 1)
                assert await b.call("calc-a", "add", 1, 2) == 3
    run_async(main)


def test_calls_on_a_stopped_node_fail_fast():
    async def main():
        node = mesh.Node("solo")
        node.add(Calc("calc"))
        with pytest.raises(Unavailable):
            await node.call("calc", "add", 1, 2)
        await node.start()
        assert await node.call("calc", "add", 1, 2) == 3      # local: no sockets involved
        with pytest.raises(UnknownAgent):
            await node.call("ghost", "add", 1, 2)
        await node.stop()
        with pytest.raises(Unavailable):
            await node.send("calc", "add", 1, 2)
    run_async(main)


def test_a_peer_that_stops_reading_makes_senders_overloaded_not_memory_grow():
    """A node whose peer stops reading: ZeroMQ's high-water marks fill, then the bounded
    outbox; further sends fail with Overloaded instead of queueing without limit."""
    from mesh.errors import Overloaded
    from mesh.transport import TransportConfig

    async def main():
        cfg = TransportConfig(hwm=10, batch_bytes=4096, max_outbox_bytes=256 * 1024)
        async with mesh.Node("slowpoke", transport=cfg) as stuck:
            stuck.add(Calc("calc"))
            async with mesh.Node("sender", seeds=[stuck.address], transport=cfg) as sender:
                # The receiving node stops reading its socket (as if its loop were wedged).
                router = stuck._transport._router
                asyncio.get_running_loop().remove_reader(router.getsockopt(zmq.FD))
                payload = b"x" * 1000
                sent = 0
                with pytest.raises(Overloaded):
                    for _ in range(1_000_000):
                        await sender.send("calc", "record", payload)
                        sent += 1
                        if sent % 100 == 0:
                            await asyncio.sleep(0)     # let batches flush into the kernel/HWM
                # What was accepted is what the bounds hold: both high-water marks (10 frames
                # of <= 4 KiB each side), the 256 KiB outbox, and the kernel's socket buffers.
                assert 0 < sent < 20_000
                assert sender.stats()["bytes_out"] < 16 * 1024 * 1024
    run_async(main)


def test_a_peer_that_keeps_sending_garbage_is_banned_and_others_are_served(rogue):
    """Past the guard's limit of bad frames the rogue is banned: its frames are dropped unread,
    even well-formed ones, while a well-behaved node's calls go on."""
    from mesh.security.guard import GuardConfig

    async def main():
        async with mesh.Node("victim", insecure=True, guard=GuardConfig(bad_limit=20)) as node:
            node.add(Calc("calc"))
            rogue.connect(node.address)
            for _ in range(30):
                rogue.send(b"\xff" * 50)
            deadline = asyncio.get_running_loop().time() + 5
            while node.stats()["peers_banned"] == 0:
                assert asyncio.get_running_loop().time() < deadline, node.stats()
                await asyncio.sleep(0.02)
            malformed = node.stats()["malformed"]
            assert 20 <= malformed <= 21                      # decoding stopped at the ban
            good = codec.encode(Kind.REQUEST, 9, 0, "rogue", "calc", "add", [[1, 2], {}])
            rogue.send(good)
            await asyncio.sleep(0.3)
            assert rogue.poll(100) == 0                       # no answer: banned
            assert node.stats()["frames_banned"] >= 10 and node.stats()["malformed"] == malformed
            other = mesh.Node("other", seeds=[node.address], insecure=True)
            await other.start()
            try:
                assert await other.call("calc", "add", 2, 3) == 5
            finally:
                await other.stop()
    run_async(main)


def test_a_gossiped_address_zeromq_cannot_dial_is_counted_not_raised(rogue):
    """A member record whose address is garbage (plaintext mesh: nobody signs it) must not
    break the gossip event that carries it (found by tests/fuzz)."""
    from mesh.swim.messages import SwimKind

    async def main():
        async with mesh.Node("victim", insecure=True) as node:
            node.add(Calc("calc"))
            rogue.connect(node.address)
            rogue.send(codec.encode(int(SwimKind.GOSSIP), 1, 0, "rogue", "", "",
                                    [[[0, "liar", 1, "garbage", b"", "", b""]]]))
            deadline = asyncio.get_running_loop().time() + 5
            while node.stats()["bad_addresses"] == 0:
                assert asyncio.get_running_loop().time() < deadline, node.stats()
                await asyncio.sleep(0.02)
            assert node.stats()["internal_errors"] == 0
            other = mesh.Node("other", seeds=[node.address], insecure=True)
            await other.start()
            try:
                assert await other.call("calc", "add", 1, 2) == 3
            finally:
                await other.stop()
    run_async(main)
