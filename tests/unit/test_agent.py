"""Agent class scanning, the eager runner and node-level argument checks (no sockets)."""
from __future__ import annotations

import asyncio

import pytest

import mesh
from mesh.eager import SYNC_DONE, Resume, run_eager
from tests.conftest import run_async


class Base(mesh.Agent):
    capabilities = ("base",)

    @mesh.rpc
    async def ping(self):
        return "pong"

    @mesh.on("a.*", "b.#")
    async def on_ab(self, topic, payload):
        pass


class Child(Base):
    capabilities = ("child", "base")

    @mesh.rpc(name="add", idempotent=True)
    def plus(self, a, b):
        return a + b

    @mesh.rpc(eager=False)
    async def lazy(self):
        return 1


def test_rpc_and_topic_tables_are_built_once_per_class():
    assert set(Base.rpc_table) == {"ping"}
    assert set(Child.rpc_table) == {"ping", "add", "lazy"}
    add = Child.rpc_table["add"]
    assert (add.attr, add.is_async, add.idempotent, add.eager) == ("plus", False, True, True)
    assert Child.rpc_table["lazy"].eager is False
    assert [p for p, _ in Child.topic_table] == ["a.*", "b.#"]
    assert Child.capabilities == ("child", "base")


def test_default_name_and_string_capabilities_rejected():
    assert Child().name == "child"
    assert Child("c-1").name == "c-1"
    with pytest.raises(TypeError):
        class Bad(mesh.Agent):
            capabilities = "oops"
    with pytest.raises(TypeError):
        mesh.on()


def test_agent_shortcuts_need_a_node():
    with pytest.raises(RuntimeError):
        asyncio.run(Child().call("x", "y"))


def test_run_eager_finishes_synchronous_work_without_a_task():
    async def quick(x):
        return x * 2

    assert run_eager(quick, (21,), {}, True) == (SYNC_DONE, 42)
    assert run_eager(lambda x: x + 1, (1,), {}, False) == (SYNC_DONE, 2)


def test_run_eager_hands_a_suspended_coroutine_to_a_task():
    steps = []

    async def suspends(n):
        steps.append("before")
        await asyncio.sleep(0)
        steps.append("after")
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, n)
        return await fut

    async def main():
        state, rest = run_eager(suspends, (7,), {}, True)
        assert state is None and isinstance(rest, Resume)
        assert steps == ["before"]
        async def finish():
            return await rest
        return await asyncio.create_task(finish())

    assert asyncio.run(main()) == 7
    assert steps == ["before", "after"]


def test_run_eager_propagates_exceptions_and_cancellation():
    async def boom():
        raise KeyError("k")

    with pytest.raises(KeyError):
        run_eager(boom, (), {}, True)

    async def forever():
        await asyncio.Event().wait()

    async def main():
        _, rest = run_eager(forever, (), {}, True)
        async def finish():
            return await rest
        task = asyncio.create_task(finish())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_node_rejects_bad_ids_and_duplicate_agents():
    for bad in ("", "x" * 256, "\x00a", "seed:x"):
        with pytest.raises(ValueError):
            mesh.Node(bad)
    node = mesh.Node("n")
    node.add(Child("c"))
    with pytest.raises(ValueError):
        node.add(Child("c"))
    with pytest.raises(TypeError):
        node.add(object())


def test_an_overridden_subscription_replaces_the_parents():
    class Base(mesh.Agent):
        @mesh.on("a.*")
        def tick(self, topic, payload): ...

    class Child(Base):
        @mesh.on("b.*", queue=8, overflow="drop_oldest")
        async def tick(self, topic, payload): ...

    assert [(p, s.attr, s.is_async, s.queue, s.overflow) for p, s in Child.topic_table] == \
        [("b.*", "tick", True, 8, "drop_oldest")]
    assert [p for p, _ in Base.topic_table] == ["a.*"]


@pytest.mark.parametrize("kw", [dict(queue=0), dict(overflow="spill")])
def test_bad_delivery_options_are_refused(kw):
    with pytest.raises(ValueError):
        mesh.on("a.*", **kw)


def test_eager_handlers_awaiting_one_future_both_finish():
    """Two eagerly started handlers suspended on the same future: the second task must not
    find the future's 'blocking' flag cleared by the first ('await wasn't used with future')."""
    class Gate(mesh.Agent):
        def __init__(self):
            super().__init__("gate")
            self.gate = None

        @mesh.rpc
        async def wait(self):
            return await self.gate

    async def main():
        node = mesh.Node("eager")
        g = node.add(Gate())
        await node.start()
        try:
            g.gate = asyncio.get_running_loop().create_future()
            calls = [asyncio.ensure_future(node.call("gate", "wait")) for _ in range(3)]
            await asyncio.sleep(0.01)
            g.gate.set_result(7)
            assert await asyncio.gather(*calls) == [7, 7, 7]
        finally:
            await node.stop()
    run_async(main)
