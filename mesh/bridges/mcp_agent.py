"""``McpToolsAgent``: an external MCP server's tools, callable from the mesh.

    node.add(McpToolsAgent("fs", command=["npx", "-y", "@modelcontextprotocol/server-filesystem", "/data"]))
    node.add(McpToolsAgent("search", url="http://127.0.0.1:8000/mcp"))
    await node.start()
    await node.call("fs", "read_file", path="/data/a.txt")           # keyword arguments
    await node.call("fs", "read_file", {"path": "/data/a.txt"})      # or one dict of them
    await node.call_any("mcp.read_file", "read_file", path="/data/a.txt")

Theory of operation. The agent opens one MCP session (the official SDK's ``Client``: a
subprocess over stdio for ``command=``, streamable HTTP for ``url=``) when it starts, lists the
server's tools and installs one rpc method per tool, named as the tool, in its own copy of the
rpc table (the node looks handlers up there on every call, so no class is made per server). It
offers the capability ``mcp.<tool>`` for each tool besides its own ``capabilities``, so
``call_any("mcp.<tool>", "<tool>", ...)`` reaches any agent fronting a server with that tool.
A tool's input and output schemas travel with its method, so the MCP bridge
(:mod:`mesh.bridges.mcp_server`) can serve them again unchanged.

A call's answer is the tool's structured content, unwrapped when the tool's output schema is
the ``{"result": ...}`` wrapper MCP servers use for values that are not objects; a tool
without structured content answers its text (one text block) or its content blocks as dicts.
A tool error (``isError``) raises :class:`~mesh.errors.ToolError` in the handler, so the
caller sees ``RemoteError`` with ``type == "ToolError"``; a server that cannot be reached, or
a JSON-RPC error, raises :class:`~mesh.errors.BridgeError` the same way.

The session is held by one task of its own, because the SDK's context managers (anyio) must
be left by the task that entered them; calls only send on it. When the server says its tools
changed (``notifications/tools/list_changed`` on a handshake-era connection, a
``subscriptions/listen`` event on a 2026-07-28 one) the tools are listed again; a call that
finds the session gone opens a new one first.

Capabilities changed after the agent was added reach the node's directory and gossip by
adding the agent again (:meth:`Node.remove` then :meth:`Node.add`: the node reads an agent's
capabilities when it is added); the lifecycle hooks that causes are recognised and skipped.
So tools known before ``node.add`` (``await agent.connect()`` first) avoid that step.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Iterable, Mapping, Sequence

from mesh.agent import Agent, HandlerSpec, rpc
from mesh.bridges.schema import SCHEMA_ATTR, MethodSchema, is_result_wrapper
from mesh.errors import BridgeError, ToolError

log = logging.getLogger(__name__)

CAPABILITY_PREFIX = "mcp."
MAX_PAGES = 64                   # tools/list pages read (a server that never ends its listing)
_TOOL_ATTR = "_mcp_tool:"        # instance attribute holding a tool's handler (not an identifier: no clash)


class McpToolsAgent(Agent):
    """A mesh agent whose rpc methods are an MCP server's tools (see the module docstring).

    ``command``: argv of a server to run over stdio (``env``, ``cwd`` for it: the SDK passes
    only a minimal environment, so give ``env`` what the server needs); ``url``: a streamable
    HTTP endpoint. ``capabilities`` are offered besides
    ``mcp.<tool>``. ``connect_timeout`` bounds opening the session and listing the tools;
    ``call_timeout`` one tool call (None: the SDK's default). At most ``max_tools`` tools.
    Not for ``node.add(..., singleton=True)``: it announces new tools by being added again."""

    def __init__(self, name: str, *, command: Sequence[str] | None = None, url: str | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | None = None, capabilities: Iterable[str] = (),
                 connect_timeout: float = 30.0, call_timeout: float | None = 30.0, max_tools: int = 256) -> None:
        super().__init__(name)
        if (command is None) == (url is None):
            raise ValueError("McpToolsAgent needs command=[...] or url=..., not both")
        if command is not None and (isinstance(command, str) or not command):
            raise ValueError("command must be a non-empty list of arguments")
        self.command = list(command) if command is not None else None
        self.url = url
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.connect_timeout = connect_timeout
        self.call_timeout = call_timeout
        self.max_tools = max_tools
        self.rpc_table = dict(type(self).rpc_table)      # this instance's own: tools are added here
        self._base_capabilities = tuple(dict.fromkeys(tuple(type(self).capabilities) + tuple(capabilities)))
        self.capabilities = self._base_capabilities
        self.tools: dict[str, Any] = {}                  # tool name -> the SDK's Tool
        self.description = f"Tools of the MCP server at {url}" if url else f"Tools of the MCP server {self.command[0]}"
        self._client: Any = None
        self._runner: asyncio.Task | None = None
        self._closing: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._refresher: asyncio.Task | None = None

    # -- rpc ---------------------------------------------------------------------------------

    @rpc(name="list_tools")
    def list_tools_rpc(self) -> list[dict[str, Any]]:
        """The server's tools as listed last: name, description, input and output schema."""
        return [{"name": t.name, "description": t.description or "", "input_schema": t.input_schema,
                 "output_schema": t.output_schema} for t in self.tools.values()]

    @rpc(name="refresh_tools", eager=False)
    async def refresh_tools(self) -> list[str]:
        """List the server's tools again (reconnecting if the session is gone); their names."""
        return await self.connect()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._client is not None and self._runner is not None and not self._runner.done()

    async def connect(self) -> list[str]:
        """Open the session if it is not open, list the tools, install them; their names.
        Raises BridgeError when the server cannot be reached or listed in time."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self.connected:
                await self._open()
            try:
                tools = await asyncio.wait_for(self._list_all(), self.connect_timeout)
            except asyncio.TimeoutError:
                raise BridgeError(f"MCP server of {self.name} did not list its tools "
                                  f"within {self.connect_timeout:g} s") from None
            except BridgeError:
                raise
            except Exception as exc:
                raise BridgeError(f"MCP server of {self.name} failed to list its tools: {exc!r}") from exc
            self._install(tools)
        self._sync_registration()
        return sorted(self.tools)

    async def close(self) -> None:
        """Close the session (a stdio server process is stopped by the SDK)."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        runner, self._runner = self._runner, None
        if runner is not None:
            if self._closing is not None:
                self._closing.set()
            try:
                await asyncio.wait_for(asyncio.shield(runner), 10.0)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                runner.cancel()
        self._client = None

    async def on_start(self) -> None:
        if self.connected and self.tools:
            self._sync_registration()   # connected before (or the add of a re-add): nothing to list
            return
        try:
            await self.connect()
        except BridgeError as exc:
            # the agent stays, without tools: refresh_tools (or a later call) tries again
            log.error("agent %s: %s", self.name, exc)

    async def on_stop(self) -> None:
        node = self.node
        if node is not None and node.agents.get(self.name) is self and not node.stopping:
            return                      # the remove of a re-add (see _sync_registration): still on
        await self.close()

    # -- the session -------------------------------------------------------------------------

    def _server(self) -> Any:
        if self.command is not None:
            from mcp import StdioServerParameters

            return StdioServerParameters(command=self.command[0], args=self.command[1:], env=self.env, cwd=self.cwd)
        return self.url

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._closing = asyncio.Event()
        self._runner = loop.create_task(self._hold(ready, self._closing))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
        except asyncio.TimeoutError:
            self._runner.cancel()
            raise BridgeError(f"MCP server of {self.name} did not answer within {self.connect_timeout:g} s") from None
        except Exception as exc:
            raise BridgeError(f"cannot reach the MCP server of {self.name}: {_reason(exc)}") from exc

    async def _hold(self, ready: asyncio.Future, closing: asyncio.Event) -> None:
        """The task that owns the session: open it, keep it until closed, listen for changes."""
        import anyio
        from mcp import Client
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        try:
            async with Client(self._server(), cache=None, message_handler=self._on_message) as client:
                caps = client.server_capabilities
                listen = (client.protocol_version in MODERN_PROTOCOL_VERSIONS and caps.tools is not None
                          and bool(caps.tools.list_changed))
                async with anyio.create_task_group() as group:
                    if listen:
                        group.start_soon(self._listen, client)
                    self._client = client
                    info = client.server_info
                    if info is not None:
                        self.description = f"Tools of the MCP server {info.title or info.name}"
                    if not ready.done():
                        ready.set_result(None)
                    await closing.wait()
                    group.cancel_scope.cancel()
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("agent %s: MCP session ended: %s", self.name, _reason(exc))
        finally:
            self._client = None

    async def _listen(self, client: Any) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _ in subscription:
                    self._refresh_soon()
        except Exception as exc:        # the session goes on without change events
            log.info("agent %s: no tool change events: %s", self.name, _reason(exc))

    async def _on_message(self, message: Any) -> None:
        import mcp_types as types

        if isinstance(message, types.ToolListChangedNotification):
            self._refresh_soon()

    def _refresh_soon(self) -> None:
        if self._refresher is not None and not self._refresher.done():
            return                      # one pending refresh covers every change so far
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _refresh_quietly(self) -> None:
        try:
            await self.connect()
        except BridgeError as exc:
            log.warning("agent %s: %s", self.name, exc)

    async def _list_all(self) -> list[Any]:
        client = self._client
        if client is None:
            raise BridgeError(f"the MCP session of {self.name} is closed")
        tools: list[Any] = []
        cursor = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    # -- tools as rpc methods ----------------------------------------------------------------

    def _install(self, tools: list[Any]) -> None:
        static = type(self).rpc_table
        for name in [n for n, spec in self.rpc_table.items() if spec.attr.startswith(_TOOL_ATTR)]:
            del self.rpc_table[name]
            with contextlib.suppress(AttributeError):
                delattr(self, _TOOL_ATTR + name)
        kept: dict[str, Any] = {}
        for tool in tools:
            if tool.name in static:
                log.warning("agent %s: tool %r has the name of a method of the agent; left out", self.name, tool.name)
                continue
            if len(kept) >= self.max_tools:
                log.warning("agent %s: more than %d tools; the rest are left out", self.name, self.max_tools)
                break
            kept[tool.name] = tool
            attr = _TOOL_ATTR + tool.name
            setattr(self, attr, self._handler(tool))
            # eager=False: the SDK's cancel scopes must be left by the task that entered them,
            # and an eager handler starts on the caller's stack and resumes in a task
            self.rpc_table[tool.name] = HandlerSpec(attr, True, eager=False)
        self.tools = kept
        self.capabilities = self._base_capabilities + tuple(CAPABILITY_PREFIX + name for name in kept)

    def _handler(self, tool: Any) -> Any:
        name = tool.name

        async def call_tool(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, args, kwargs)

        call_tool.__name__ = name
        setattr(call_tool, SCHEMA_ATTR, MethodSchema(
            name, tool.description or tool.title or "", dict(tool.input_schema or {"type": "object"}),
            tool.output_schema, (), is_result_wrapper(tool.output_schema) or not tool.output_schema).to_dict())
        return call_tool

    async def _call(self, tool: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        if args:
            if len(args) != 1 or not isinstance(args[0], dict) or kwargs:
                raise TypeError(f"MCP tool {tool!r} takes keyword arguments, or one dict of them")
            kwargs = dict(args[0])
        if not self.connected:
            await self.connect()
        client = self._client
        if client is None:
            raise BridgeError(f"the MCP session of {self.name} is closed")
        from mcp.shared.exceptions import MCPError

        try:
            result = await client.call_tool(tool, kwargs, read_timeout_seconds=self.call_timeout)
        except MCPError as exc:
            raise BridgeError(f"MCP server of {self.name} refused {tool}: {exc.message} (code {exc.code})") from None
        except Exception as exc:
            raise BridgeError(f"MCP call {self.name}.{tool} failed: {_reason(exc)}") from exc
        if result.is_error:
            raise ToolError(_text(result.content) or f"tool {tool} failed")
        return self._value(tool, result)

    def _value(self, tool: str, result: Any) -> Any:
        structured = result.structured_content
        if structured is not None:
            known = self.tools.get(tool)
            if (known is not None and is_result_wrapper(known.output_schema) and isinstance(structured, dict)
                    and set(structured) == {"result"}):
                return structured["result"]
            return structured
        blocks = list(result.content)
        if len(blocks) == 1 and getattr(blocks[0], "type", None) == "text":
            return blocks[0].text
        return [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in blocks]

    # -- the node's view of our capabilities -------------------------------------------------

    def _sync_registration(self) -> None:
        """Make the node's directory (and so gossip) carry our current capabilities. The node
        reads them when an agent is added, so a change means adding the agent again."""
        node = self.node
        if node is None or node.agents.get(self.name) is not self or node.stopping:
            return
        listed = node.directory().get(self.name)
        if listed is not None and tuple(listed[1]) == tuple(self.capabilities):
            return
        node.remove(self.name)          # on_stop of this sees us back on the node and keeps the session
        node.add(self)                  # on_start of this finds the session open and the tools listed


def _text(content: Iterable[Any]) -> str:
    return "\n".join(getattr(block, "text", "") for block in content if getattr(block, "type", None) == "text")


def _reason(exc: BaseException) -> str:
    """The first real cause inside (possibly nested) exception groups, as text."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
