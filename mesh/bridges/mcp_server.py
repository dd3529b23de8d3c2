"""An MCP server whose tools are mesh agents' ``@rpc`` methods (official ``mcp`` SDK).

Theory of operation. :class:`McpBridge` wraps the SDK's low-level ``Server``: its
``tools/list`` handler answers from a :class:`~mesh.bridges.catalog.Catalog` (the chosen
agents and capabilities, resolved against the bridge node's directory, described by the nodes
that host them), and its ``tools/call`` handler calls the mesh. A tool is named
``<agent or capability>__<method>``; its input schema comes from the method's type hints and
docstring, its output schema from the return annotation. The answer is the result as
structured content (an object as is, anything else as ``{"result": value}``) and as JSON text.
A mesh error becomes a tool error (``isError``): text ``"<ErrorClass>: <message>"`` and
structured content ``{"error": {"class", "type", "message"}}`` (``type`` is the handler's
exception class for a ``RemoteError``). An unknown tool is a JSON-RPC error, as the spec says.

Why the low-level ``Server`` and not ``MCPServer`` (FastMCP): ``MCPServer`` builds each tool
from a Python function through pydantic and keeps a static registry; our tools are methods of
agents that may live on other nodes, known only by the JSON Schemas their nodes send, and they
come and go with the mesh. The low-level server lets ``tools/list`` answer from the mesh at the
moment it is asked, with our schemas as they are.

The list follows the mesh: a watcher looks at the directory every ``poll_s`` seconds and,
when the tools changed, tells clients: on 2026-07-28 connections through the SDK's
``subscriptions/listen`` bus (``ToolsListChanged``), on handshake-era connections (2025-11-25
and earlier) with ``notifications/tools/list_changed`` sent to every session that listed tools
(at most ``MAX_SESSIONS`` remembered; a session that fails to take it is forgotten).

Transports: :meth:`McpBridge.run_stdio` (stdin/stdout until the client closes them) and
:meth:`McpBridge.serve_http` (streamable HTTP at ``/mcp`` with uvicorn, on the same event loop
as the mesh node). The CLI is :mod:`mesh.bridges.mcp`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import OrderedDict
from typing import Any, Callable, Iterable

import mcp_types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from mesh.bridges.catalog import Catalog, Route
from mesh.errors import MeshError, RemoteError

log = logging.getLogger(__name__)

MAX_SESSIONS = 256              # handshake-era sessions remembered for list_changed
NOTIFY_TIMEOUT_S = 2.0          # one session's notification; a stuck client is dropped


def error_payload(exc: BaseException) -> dict[str, Any]:
    """``{"class", "type", "message"}`` of a mesh error: ``type`` is the remote handler's
    exception class for a RemoteError, else the error's own class."""
    if isinstance(exc, RemoteError):
        return {"class": "RemoteError", "type": exc.type, "message": exc.message}
    return {"class": type(exc).__name__, "type": type(exc).__name__, "message": str(exc)}


def result_text(value: Any) -> str:
    """A result as the text content of a tool answer: strings as they are, else JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def _structured(value: Any) -> Any:
    """The value as JSON has it (bytes as hex, tuples as lists), for structured content."""
    return json.loads(json.dumps(value, default=_json_default))


class McpBridge:
    """An MCP server exposing mesh methods as tools (see the module docstring).

    ``expose``: agent names, capabilities, or either with ``.METHOD``. ``timeout``: seconds a
    tool call may take in the mesh (None: the node's default). ``poll_s``: how often the
    directory is looked at for tools that came or went."""

    def __init__(self, node: Any, expose: Iterable[str], *, name: str = "mesh", timeout: float | None = None,
                 poll_s: float = 0.5, instructions: str | None = None) -> None:
        self.node = node
        self.catalog = Catalog(node, expose)
        self.timeout = timeout
        self.poll_s = poll_s
        self._bus = InMemorySubscriptionBus()
        self._sessions: OrderedDict[int, tuple[Any, Any]] = OrderedDict()
        self._watcher: asyncio.Task | None = None
        self.server: Server = Server(
            name, version=_version(), instructions=instructions or
            "Each tool is a method of an agent in a mesh of agents: the tool named A__M calls method M "
            "of the agent named A, or of any agent offering capability A.",
            on_list_tools=self._list_tools, on_call_tool=self._call_tool,
            on_subscriptions_listen=ListenHandler(self._bus, max_subscriptions=MAX_SESSIONS))

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, settle_s: float = 3.0) -> None:
        """Resolve the tools once the directory has settled after the join (at most
        ``settle_s``), then watch the mesh for tools that come and go."""
        await self.catalog.settle(settle_s)
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                if await self.catalog.refresh():
                    await self.notify_tools_changed()
            except asyncio.CancelledError:
                raise
            except Exception:                   # the watcher must outlive one bad round
                log.exception("refreshing the exposed tools failed")

    async def notify_tools_changed(self) -> None:
        """Tell every client the tool list changed (both protocol eras)."""
        await self._bus.publish(ToolsListChanged())
        for key, (_, session) in list(self._sessions.items()):
            try:
                await asyncio.wait_for(session.send_tool_list_changed(), NOTIFY_TIMEOUT_S)
            except Exception as exc:            # closed or stuck: that client is gone
                log.debug("dropping an MCP session that could not be notified: %r", exc)
                self._sessions.pop(key, None)

    # -- handlers ----------------------------------------------------------------------------

    def _remember(self, ctx: Any) -> None:
        """Keep a handshake-era session to notify later. Sessions are per request; the
        initialize params are per connection, so they identify the client."""
        if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return
        params = ctx.session.client_params
        if params is None:
            return
        key = id(params)                        # stays unique: we hold the params
        self._sessions[key] = (params, ctx.session)
        self._sessions.move_to_end(key)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)

    def tools(self) -> list[types.Tool]:
        """The tools as listed now."""
        return [self._tool(route) for route in self.catalog.routes.values()]

    @staticmethod
    def _tool(route: Route) -> types.Tool:
        schema = route.schema
        where = f"agent {route.target}" if route.kind == "agent" else f"any agent offering {route.target!r}"
        description = f"{schema.description} ({where}, method {route.method})".strip()
        return types.Tool(name=route.name, description=description, input_schema=schema.input_schema,
                          output_schema=schema.output_schema)

    async def _list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        self._remember(ctx)
        await self.catalog.refresh()
        return types.ListToolsResult(tools=self.tools())

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        self._remember(ctx)
        route = self.catalog.routes.get(params.name)
        if route is None and await self.catalog.refresh(force=True):
            route = self.catalog.routes.get(params.name)
        if route is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        try:
            value = await self.catalog.call(route, params.arguments, self.timeout)
        except MeshError as exc:
            err = error_payload(exc)
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"{err['class']}: {exc}")],
                                        structured_content={"error": err}, is_error=True)
        structured = _structured(value)
        if route.schema.result_wrapped or not isinstance(structured, dict):
            structured = {"result": structured}
        return types.CallToolResult(content=[types.TextContent(type="text", text=result_text(value))],
                                    structured_content=structured)

    # -- transports --------------------------------------------------------------------------

    def _init_options(self) -> Any:
        return self.server.create_initialization_options(NotificationOptions(tools_changed=True))

    async def run_stdio(self) -> None:
        """Serve one client on stdin/stdout until it closes them."""
        from mcp.server.stdio import stdio_server

        async with stdio_server() as (read_stream, write_stream):
            await self.server.run(read_stream, write_stream, self._init_options())

    def http_app(self, host: str = "127.0.0.1", path: str = "/mcp") -> Any:
        """The Starlette app for streamable HTTP (its lifespan runs the SDK's session manager)."""
        return self.server.streamable_http_app(streamable_http_path=path, host=host)

    async def serve_http(self, host: str = "127.0.0.1", port: int = 0, path: str = "/mcp",
                         ready: Callable[[str], None] | None = None,
                         stop: asyncio.Event | None = None) -> None:
        """Serve streamable HTTP on ``host:port`` (0: any free port) until ``stop`` is set;
        ``ready`` gets the endpoint URL once the socket listens."""
        await serve_asgi(self.http_app(host, path), listening_socket(host, port),
                         lambda p: ready(f"http://{host}:{p}{path}") if ready else None, stop)


def _version() -> str:
    import mesh

    return mesh.__version__


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket (port 0: the kernel picks), so the URL is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


async def serve_asgi(app: Any, sock: socket.socket, ready: Callable[[int], Any] | None = None,
                     stop: asyncio.Event | None = None) -> None:
    """Run ``app`` with uvicorn on the running loop, on the bound socket ``sock`` (see
    :func:`listening_socket`; closed at the end), until ``stop`` is set (or forever);
    ``ready`` gets the port once it listens. uvicorn's ``serve()`` is not used because
    it takes over SIGINT/SIGTERM and re-raises them at the end: the caller owns the process's
    signals, and must leave the mesh before it exits."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)

    async def watch_stop() -> None:
        await stop.wait()
        server.should_exit = True

    watcher = asyncio.ensure_future(watch_stop()) if stop is not None else None
    try:
        await server.startup(sockets=[sock])
        if ready is not None:
            ready(sock.getsockname()[1])
        await server.main_loop()
    finally:
        if watcher is not None:
            watcher.cancel()
        if server.started:
            await server.shutdown(sockets=[sock])
        sock.close()
