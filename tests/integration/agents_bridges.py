"""Agents (and external servers) the bridge tests use: typed mesh agents for our MCP and A2A
servers, and small servers built with the SDKs themselves for our client agents.

Run as a script it is one of those servers: ``python -m tests.integration.agents_bridges
mcp-stdio`` (FastMCP over stdio), ``mcp-http PORT`` and ``a2a-http PORT`` (print ``ready
<url>`` once listening)."""
from __future__ import annotations

import sys
from typing import Literal, TypedDict

import mesh
from mesh.bridges import text_entry


class Quote(TypedDict):
    symbol: str
    qty: int


class Pricer(mesh.Agent):
    """Prices orders for the bridge tests."""

    capabilities = ("pricing",)

    @mesh.rpc
    async def add(self, a: int, b: int = 1) -> int:
        """Add two integers.

        Args:
            a: the first addend.
            b: the second addend.
        """
        return a + b

    @mesh.rpc
    def quote(self, order: Quote, side: Literal["buy", "sell"] = "buy", note: str | None = None) -> dict[str, float]:
        """Price an order.

        :param order: what to price
        :param side: buy or sell
        """
        px = 10.0 if side == "buy" else 9.5
        return {"notional": order["qty"] * px}

    @mesh.rpc
    async def fail(self, message: str = "boom") -> None:
        """Always raises ValueError."""
        raise ValueError(message)

    @mesh.rpc
    @text_entry
    async def ask(self, text: str) -> str:
        """Answer a question in words."""
        return f"you asked: {text}"

    @mesh.rpc
    def whoami(self) -> str:
        """The agent's name."""
        return self.name


class Late(mesh.Agent):
    """Joins after the bridge started."""

    capabilities = ("late",)

    @mesh.rpc
    async def hello(self, who: str) -> str:
        """Say hello."""
        return f"hello {who}"


# -- servers built with the SDKs -------------------------------------------------------------

def fastmcp_server():
    """An MCP server made the SDK's high-level way (MCPServer, formerly FastMCP)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    server = MCPServer("sdk-tools")

    @server.tool()
    def multiply(x: int, y: int) -> int:
        """Multiply two integers."""
        return x * y

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def explode(reason: str) -> str:
        """Always fails (a failure the tool saw coming: its message reaches the client)."""
        raise ToolError(f"exploded: {reason}")

    return server


def a2a_app(url: str):
    """An A2A agent made with a2a-sdk: answers a text with its upper case, as a completed task
    with an artifact (submitted -> working -> completed)."""
    from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
    from a2a.server.agent_execution import AgentExecutor
    from a2a.server.request_handlers import DefaultRequestHandler
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
    from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
    from starlette.applications import Starlette

    class Upper(AgentExecutor):
        async def execute(self, context, event_queue):
            task = context.current_task or new_task_from_user_message(context.message)
            if context.current_task is None:
                await event_queue.enqueue_event(task)
            updater = TaskUpdater(event_queue, task.id, task.context_id)
            await updater.start_work()
            text = get_message_text(context.message)
            if text == "fail":
                await updater.failed()
                return
            await updater.add_artifact([new_text_part(text.upper())], name="upper")
            await updater.complete()

        async def cancel(self, context, event_queue):
            raise NotImplementedError

    card = AgentCard(name="upper", description="Upper-cases text", version="1.0",
                     supported_interfaces=[AgentInterface(url=url, protocol_binding="JSONRPC",
                                                          protocol_version="1.0")],
                     capabilities=AgentCapabilities(streaming=True), default_input_modes=["text/plain"],
                     default_output_modes=["text/plain"],
                     skills=[AgentSkill(id="upper", name="upper", description="upper-case", tags=["text"])])
    handler = DefaultRequestHandler(agent_executor=Upper(), task_store=InMemoryTaskStore(), agent_card=card)
    return Starlette(routes=create_agent_card_routes(card) + create_jsonrpc_routes(handler, "/"))


def main(argv: list[str]) -> int:
    import asyncio

    from mesh.bridges.mcp_server import listening_socket, serve_asgi

    kind = argv[0]
    if kind == "mcp-stdio":
        fastmcp_server().run("stdio")
        return 0
    port = int(argv[1]) if len(argv) > 1 else 0
    sock = listening_socket("127.0.0.1", port)
    port = sock.getsockname()[1]
    if kind == "mcp-http":
        server = fastmcp_server()
        app, url = server.streamable_http_app(), f"http://127.0.0.1:{port}/mcp"
    else:
        url = f"http://127.0.0.1:{port}"
        app = a2a_app(url + "/")
    asyncio.run(serve_asgi(app, sock, ready=lambda _: print(f"ready {url}", flush=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
