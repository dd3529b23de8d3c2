"""The MCP bridge with the official SDK on both sides, on loopback:

- our server (``python -m mesh.bridges.mcp``) driven by the SDK's own clients: over stdio
  (``stdio_client`` launches it; the 2025-11-25 handshake) and over streamable HTTP (the SDK's
  ``streamable_http_client``, and its ``Client``, which picks the 2026-07-28 protocol): tools and
  their schemas from type hints and docstrings, calls, mesh errors as tool errors, and the tool
  list following the mesh (list_changed in both protocol eras);
- our ``McpToolsAgent`` against servers built with the SDK (MCPServer/FastMCP, stdio and HTTP):
  mesh ``call`` and ``call_any("mcp.<tool>")`` from another node reach them.

Real processes and sockets; conditions are polled with deadlines, no timing is asserted."""
from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("mcp")

import mcp_types as types  # noqa: E402
from mcp import Client, ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS  # noqa: E402

import mesh  # noqa: E402
from mesh.errors import RemoteError  # noqa: E402
from mesh.bridges.mcp_agent import McpToolsAgent  # noqa: E402
from tests.conftest import run_async  # noqa: E402
from tests.integration.agents_bridges import Late, Pricer  # noqa: E402
from tests.integration.bridge_processes import WAIT_S, child_env, eventually, ready_process  # noqa: E402
from tests.integration.cluster import ROOT  # noqa: E402

pytestmark = pytest.mark.integration

PRICER_TOOLS = {"pricer-1__add", "pricer-1__ask", "pricer-1__fail", "pricer-1__quote", "pricer-1__whoami"}


def pricers() -> mesh.Node:
    """The mesh the bridges join: a node (in the test's process and loop) with two Pricers."""
    node = mesh.Node("mcp-n1")
    node.add(Pricer("pricer-1"))
    node.add(Pricer("pricer-2"))
    return node


async def late_node(seed: str, agent: mesh.Agent) -> mesh.Node:
    node = mesh.Node(f"late-{agent.name}", seeds=[seed])
    node.add(agent)
    await node.start()
    return node


def check_pricer_tools(tools: dict[str, types.Tool], prefix: str) -> None:
    add = tools[f"{prefix}__add"]
    assert add.description.startswith("Add two integers.")
    assert add.input_schema["properties"] == {"a": {"type": "integer", "description": "the first addend."},
                                              "b": {"type": "integer", "description": "the second addend.",
                                                    "default": 1}}
    assert add.input_schema["required"] == ["a"] and add.input_schema["additionalProperties"] is False
    assert add.output_schema["properties"]["result"] == {"type": "integer"}
    quote = tools[f"{prefix}__quote"].input_schema["properties"]
    assert quote["order"]["properties"] == {"symbol": {"type": "string"}, "qty": {"type": "integer"}}
    assert quote["order"]["description"] == "what to price"
    assert quote["side"] == {"enum": ["buy", "sell"], "type": "string", "description": "buy or sell", "default": "buy"}
    assert quote["note"]["anyOf"] == [{"type": "string"}, {"type": "null"}]


def test_stdio_server_tools_calls_errors_and_a_tool_that_joins_later():
    async def main() -> None:
        async with pricers() as mesh_node:
            await stdio_session(mesh_node)

    run_async(main)


async def stdio_session(mesh_node: mesh.Node) -> None:
    params = StdioServerParameters(
        command=sys.executable, env=child_env(), cwd=str(ROOT),
        args=["-m", "mesh.bridges.mcp", "--join", mesh_node.address, "--expose", "pricer-1",
              "--expose", "pricing.add", "--expose", "late-1", "--stdio"])
    changed = asyncio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    async with stdio_client(params) as (read, write), ClientSession(read, write, message_handler=on_message) as s:
        init = await s.initialize()
        assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS and init.capabilities.tools.list_changed
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == PRICER_TOOLS | {"pricing__add"}       # late-1 is not in the mesh yet
        check_pricer_tools(tools, "pricer-1")
        assert "any agent offering 'pricing'" in tools["pricing__add"].description

        added = await s.call_tool("pricer-1__add", {"a": 2, "b": 3})
        assert not added.is_error and added.structured_content == {"result": 5}
        assert added.content[0].text == "5"
        assert (await s.call_tool("pricing__add", {"a": 41})).structured_content == {"result": 42}
        quoted = await s.call_tool("pricer-1__quote", {"order": {"symbol": "X", "qty": 3}, "side": "sell"})
        assert quoted.structured_content == {"notional": 28.5}              # an object: not wrapped
        assert (await s.call_tool("pricer-1__whoami", {})).structured_content == {"result": "pricer-1"}

        failed = await s.call_tool("pricer-1__fail", {"message": "no luck"})
        assert failed.is_error
        assert failed.content[0].text == "RemoteError: ValueError in pricer-1.fail: no luck"
        assert failed.structured_content == {"error": {"class": "RemoteError", "type": "ValueError",
                                                       "message": "no luck"}}
        with pytest.raises(MCPError):
            await s.call_tool("nobody__nothing", {})

        # the mesh grows: the bridge notices, tells the client, and lists the new tool
        late = await late_node(mesh_node.address, Late("late-1"))
        try:
            await asyncio.wait_for(changed.wait(), WAIT_S)
            tools = {t.name for t in (await s.list_tools()).tools}
            assert "late-1__hello" in tools
            hello = await s.call_tool("late-1__hello", {"who": "stdio"})
            assert hello.structured_content == {"result": "hello stdio"}
        finally:
            await late.stop()


def test_http_server_with_the_sdk_clients_in_both_protocol_eras():
    async def main() -> None:
        async with pricers() as mesh_node, ready_process(
                "-m", "mesh.bridges.mcp", "--join", mesh_node.address, "--expose", "pricing",
                "--expose", "late", "--http-port", "0") as url:
            await http_sessions(mesh_node, url)

    run_async(main)


async def http_sessions(mesh_node: mesh.Node, url: str) -> None:
    # the SDK's streamable HTTP transport under a ClientSession: the 2025-11-25 handshake
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert {n.split("__")[1] for n in tools} == {"add", "ask", "fail", "quote", "whoami"}
        check_pricer_tools(tools, "pricing")
        seen = {(await s.call_tool("pricing__whoami", {})).structured_content["result"] for _ in range(12)}
        assert seen <= {"pricer-1", "pricer-2"} and seen                    # call_any over both
        failed = await s.call_tool("pricing__fail", {})
        assert failed.is_error and failed.structured_content["error"]["type"] == "ValueError"
        # a wrong argument is the handler's TypeError, reported the same way
        wrong = await s.call_tool("pricing__add", {"a": 1, "nope": 2})
        assert wrong.is_error and wrong.structured_content["error"]["type"] == "TypeError"

    # the SDK's high-level Client picks the newest protocol; changes come on subscriptions/listen
    async with Client(url) as client:
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
        assert (await client.call_tool("pricing__add", {"a": 1, "b": 2})).structured_content == {"result": 3}
        async with client.listen(tools_list_changed=True) as subscription:
            late = await late_node(mesh_node.address, Late("late-2"))
            try:
                event = await asyncio.wait_for(anext(aiter(subscription)), WAIT_S)
                assert type(event).__name__ == "ToolsListChanged"
                names = await eventually(lambda: _tool_names(client, "late__hello"))
                assert "late__hello" in names
                hello = await client.call_tool("late__hello", {"who": "http"})
                assert hello.structured_content == {"result": "hello http"}
            finally:
                await late.stop()


async def _tool_names(client: Client, wanted: str) -> set[str] | None:
    names = {t.name for t in (await client.list_tools(cache_mode="refresh")).tools}
    return names if wanted in names else None


def test_mcp_tools_agent_reaches_sdk_servers_over_stdio_and_http():
    async def main() -> None:
        async with ready_process("-m", "tests.integration.agents_bridges", "mcp-http", "0", clean_exit=False) as url:
            await tools_agents(url)

    run_async(main)


async def tools_agents(url: str) -> None:
    host = mesh.Node("tools-host")
    stdio_agent = host.add(McpToolsAgent(
        "sdk-stdio", command=[sys.executable, "-m", "tests.integration.agents_bridges", "mcp-stdio"],
        env=child_env(), cwd=str(ROOT), capabilities=("calc",)))
    host.add(McpToolsAgent("sdk-http", url=url))
    host.add(McpToolsAgent("not-mcp", command=[sys.executable, "-c", "raise SystemExit(3)"]))
    await host.start()                              # on_start: sessions open, tools listed
    caller = mesh.Node("tools-caller", seeds=[host.address])
    await caller.start()
    try:
        assert sorted(stdio_agent.tools) == ["echo", "explode", "multiply"]
        assert host.directory()["sdk-stdio"][1] == ("calc", "mcp.multiply", "mcp.echo", "mcp.explode")
        # the capabilities reach the other node by gossip
        await eventually(lambda: "mcp.echo" in caller.directory().get("sdk-http", ("", ()))[1])
        await eventually(lambda: "mcp.echo" in caller.directory().get("sdk-stdio", ("", ()))[1])

        assert await caller.call("sdk-stdio", "multiply", x=6, y=7) == 42
        assert await caller.call("sdk-http", "multiply", {"x": 2, "y": 21}) == 42     # one dict of arguments
        assert await caller.call("sdk-http", "echo", text="over http") == "over http"
        results = {await caller.call_any("mcp.multiply", "multiply", x=3, y=3) for _ in range(4)}
        assert results == {9}
        assert await caller.call_any("calc", "echo", text="by capability") == "by capability"
        with pytest.raises(RemoteError) as failed:
            await caller.call("sdk-http", "explode", reason="on purpose")
        assert failed.value.type == "ToolError" and "exploded: on purpose" in failed.value.message
        with pytest.raises(RemoteError) as bad:
            await caller.call("sdk-stdio", "multiply", 1, 2)
        assert bad.value.type == "TypeError"

        # the tools' own schemas travel with them (what the MCP bridge would serve again)
        described = await caller.call("_ops.tools-host", "describe", "sdk-http")
        multiply = described["methods"]["multiply"]
        assert multiply["description"] == "Multiply two integers."
        assert set(multiply["input_schema"]["properties"]) == {"x", "y"}
        assert [t["name"] for t in await caller.call("sdk-http", "list_tools")] == ["multiply", "echo", "explode"]

        # a server that is not there: the agent stays, without tools, and says why when asked
        assert host.directory()["not-mcp"][1] == ()
        with pytest.raises(RemoteError) as gone:
            await caller.call("not-mcp", "refresh_tools")
        assert gone.value.type == "BridgeError" and "not-mcp" in gone.value.message
    finally:
        await caller.stop()
        await host.stop()
    assert not stdio_agent.connected            # on_stop closed the session (and the server process)
