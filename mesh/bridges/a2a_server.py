"""Mesh agents published as A2A agents (the official ``a2a-sdk``, A2A protocol 1.0).

Theory of operation. :class:`A2ABridge` serves, for each exposed agent (or capability: then
every call load-balances with ``call_any``), an A2A agent under ``/agents/<name>/``: its agent
card at ``/agents/<name>/.well-known/agent-card.json`` and its JSON-RPC endpoint at
``/agents/<name>/`` (the SDK's ``SendMessage``, ``SendStreamingMessage``, ``GetTask``... and,
on the same endpoint, the A2A 0.3 names ``message/send``, ``message/stream``...). With one
agent exposed it is also served at the root (``/.well-known/agent-card.json``, ``POST /``).

The card is made when asked, from the agent's description (:mod:`mesh.bridges.schema`, via the
hosting node): one skill per rpc method (id = method name, the docstring's first paragraph as
description), and the methods' JSON Schemas in the card's capabilities as the extension
:data:`RPC_EXTENSION` (``params.methods``: name -> ``{"input_schema", "output_schema"}``).

How a message maps onto a method:

- a data part ``{"method": "add", "args": {"a": 1, "b": 2}}`` calls ``add(a=1, b=2)`` (``args``
  may also be a list: positional arguments). Numbers arrive as doubles (protobuf ``Value``);
  whole numbers become ints where the method's schema wants an integer.
- otherwise its text (all text parts, joined by newlines) goes to the agent's text entry
  point: the method marked :func:`mesh.bridges.text_entry` (or named with ``text_methods``),
  as its first string parameter. An agent without one rejects text (task ``rejected``).

Every message makes a task that goes submitted -> working -> completed, with the result as an
artifact named ``result`` (a text part for a string, else a data part), or -> failed, with a
status message carrying ``"<ErrorClass>: <message>"`` as text and
``{"error": {"class", "type", "message"}}`` as data. ``message/stream`` streams those updates.
Tasks are kept in the SDK's in-memory store (per process; ``max_tasks`` bounds it).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote

from a2a.helpers import new_data_part, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import (AgentCapabilities, AgentCard, AgentExtension, AgentInterface, AgentProvider, AgentSkill,
                       Message, Part)
from google.protobuf.json_format import MessageToDict
from starlette.applications import Starlette
from starlette.routing import Mount

from mesh.bridges.catalog import Catalog, Route
from mesh.bridges.mcp_server import error_payload, listening_socket, serve_asgi
from mesh.errors import MeshError, UnknownMethod

log = logging.getLogger(__name__)

RPC_EXTENSION = "urn:mesh:a2a:rpc-methods:v1"
PROTOCOL_VERSION = "1.0"
MAX_TASKS = 10_000


class Rejected(Exception):
    """The message cannot be mapped onto a method (the task is rejected, not failed)."""


def plain_json(value: Any) -> Any:
    """``value`` as JSON has it (bytes as hex, tuples and sets as lists)."""
    def default(v: Any) -> Any:
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v).hex()
        if isinstance(v, (set, frozenset, tuple)):
            return list(v)
        return repr(v)
    return json.loads(json.dumps(value, default=default))


def part_data(part: Part) -> Any:
    """The value of a data part as plain Python data."""
    return MessageToDict(part.data)


class BoundedTaskStore(InMemoryTaskStore):
    """The SDK's in-memory task store, forgetting the oldest tasks beyond ``max_tasks``."""

    def __init__(self, max_tasks: int = MAX_TASKS) -> None:
        super().__init__()
        self.max_tasks = max_tasks
        self._order: OrderedDict[str, Any] = OrderedDict()     # task id -> the context it was saved in

    async def save(self, task: Any, context: Any) -> None:
        await super().save(task, context)
        self._order[task.id] = context
        self._order.move_to_end(task.id)
        while len(self._order) > self.max_tasks:
            old, old_context = self._order.popitem(last=False)
            await self.delete(old, old_context)     # tasks are kept per owner: delete as it was saved


class MeshAgentExecutor(AgentExecutor):
    """Runs one A2A message as one mesh call (see the module docstring)."""

    def __init__(self, bridge: A2ABridge, target: str) -> None:
        self.bridge = bridge
        self.target = target

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        message = context.message
        task = context.current_task
        if task is None:
            task = new_task_from_user_message(message)
            await event_queue.enqueue_event(task)            # submitted
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work()                           # working
        try:
            route, args = await self.bridge.route_message(self.target, message)
        except Rejected as exc:
            await updater.reject(updater.new_agent_message([new_text_part(str(exc))]))
            return
        try:
            value = await self.bridge.catalog.call(route, args, self.bridge.timeout)
        except MeshError as exc:
            err = error_payload(exc)
            await updater.failed(updater.new_agent_message(
                [new_text_part(f"{err['class']}: {exc}"), new_data_part({"error": err})]))
            return
        part = new_text_part(value) if isinstance(value, str) else new_data_part(plain_json(value))
        await updater.add_artifact([part], name="result")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        # The framework has cancelled execute() (and with it the mesh call's wait); say so.
        task = context.current_task
        await TaskUpdater(event_queue, context.task_id or (task.id if task else ""),
                          context.context_id or (task.context_id if task else "")).cancel()


class A2ABridge:
    """A2A agents for chosen mesh agents (see the module docstring).

    ``expose``: agent names or capabilities, optionally ``.METHOD`` to allow only that method
    (repeat for several). ``base_url``: the URL clients reach this server at (cards name it).
    ``text_methods``: agent -> method for text messages, overriding :func:`text_entry` marks."""

    def __init__(self, node: Any, expose: Iterable[str], *, base_url: str, timeout: float | None = None,
                 text_methods: Mapping[str, str] | None = None, max_tasks: int = MAX_TASKS) -> None:
        self.node = node
        self.catalog = Catalog(node, expose)
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.text_methods = dict(text_methods or {})
        self.max_tasks = max_tasks
        self._targets: list[str] = []

    async def start(self, settle_s: float = 3.0) -> None:
        """Resolve the exposed agents once the directory has settled after the join (at most
        ``settle_s``)."""
        await self.catalog.settle(settle_s)
        self._targets = self.names()

    def names(self) -> list[str]:
        """The exposed targets (agent names and capabilities). A spec that names nothing yet
        is served under its own text, so an agent that joins later has its URL from the start."""
        names = list(dict.fromkeys(t.name for t in self.catalog.targets()))
        for name in self._targets + [spec for spec in self.catalog.specs if not self.catalog.names_something(spec)]:
            if name not in names:
                names.append(name)      # a target that left keeps its URL (its calls fail meanwhile)
        return names

    def agent_url(self, target: str) -> str:
        return f"{self.base_url}/agents/{quote(target, safe='')}"

    # -- cards -------------------------------------------------------------------------------

    async def card(self, target: str, url: str | None = None) -> AgentCard:
        """The agent card of ``target`` as it is now (served at ``url``)."""
        await self.catalog.refresh()
        described = self.catalog.agents.get(target) or {}
        routes = self.routes_of(target)
        text = self._text_route(target)
        skills = []
        methods: dict[str, Any] = {}
        for route in routes:
            schema = route.schema
            modes = ["application/json"] + (["text/plain"] if text is route else [])
            args = {name: f"<{prop.get('type', 'value')}>" for name, prop in
                    (schema.input_schema.get("properties") or {}).items()}
            skills.append(AgentSkill(
                id=route.method, name=route.method, tags=["mesh", target],
                description=schema.description or f"method {route.method} of {target}",
                examples=[json.dumps({"method": route.method, "args": args})] + (["any text"] if text is route else []),
                input_modes=modes, output_modes=["application/json", "text/plain"]))
            methods[route.method] = {"input_schema": schema.input_schema, "output_schema": schema.output_schema,
                                     "text": text is route}
        kind = "capability" if routes and routes[0].kind == "capability" else "agent"
        description = described.get("description") or f"mesh {kind} {target}"
        return AgentCard(
            name=target, description=description, version=_version(),
            provider=AgentProvider(organization="mesh", url=self.base_url),
            supported_interfaces=[AgentInterface(url=(url or self.agent_url(target)) + "/", protocol_binding="JSONRPC",
                                                 protocol_version=PROTOCOL_VERSION)],
            capabilities=AgentCapabilities(streaming=True, push_notifications=False, extensions=[AgentExtension(
                uri=RPC_EXTENSION, required=False,
                description="JSON Schemas of the methods; a data part {method, args} calls one",
                params={"methods": plain_json(methods)})]),
            default_input_modes=["application/json"] + (["text/plain"] if text else []),
            default_output_modes=["application/json", "text/plain"], skills=skills)

    # -- messages ----------------------------------------------------------------------------

    def routes_of(self, target: str) -> list[Route]:
        return [r for r in self.catalog.routes.values() if r.target == target]

    def _text_route(self, target: str) -> Route | None:
        routes = self.routes_of(target)
        wanted = self.text_methods.get(target)
        for route in routes:
            if (route.method == wanted) if wanted else route.schema.text:
                return route
        return None

    async def route_message(self, target: str, message: Message) -> tuple[Route, dict[str, Any]]:
        """The method a message calls and its arguments (by name); Rejected if none fits."""
        await self.catalog.refresh()
        for part in message.parts:
            if not part.HasField("data"):
                continue
            data = part_data(part)
            if isinstance(data, dict) and isinstance(data.get("method"), str):
                return self._data_call(target, data)
        text = "\n".join(p.text for p in message.parts if p.HasField("text"))
        if not text:
            raise Rejected('send a data part {"method": ..., "args": {...}} or text')
        route = self._text_route(target)
        if route is None:
            raise Rejected(f"{target} takes no text: send a data part "
                           f'{{"method": ..., "args": {{...}}}} (methods: '
                           f"{', '.join(r.method for r in self.routes_of(target)) or 'none'})")
        props = route.schema.input_schema.get("properties") or {}
        param = next((n for n, p in props.items() if p.get("type") == "string"), None) or next(iter(props), None)
        if param is None:
            raise Rejected(f"text method {route.method} of {target} takes no parameter")
        return route, {param: text}

    def _data_call(self, target: str, data: dict[str, Any]) -> tuple[Route, dict[str, Any]]:
        method = data["method"]
        route = next((r for r in self.routes_of(target) if r.method == method), None)
        if route is None:
            raise Rejected(str(UnknownMethod(f"{target} has no method {method!r} here (methods: "
                                             f"{', '.join(r.method for r in self.routes_of(target)) or 'none'})")))
        args = data.get("args", {})
        if args is None:
            args = {}
        if isinstance(args, list):
            props = list((route.schema.input_schema.get("properties") or {}))
            if len(args) > len(props):
                raise Rejected(f"{method} takes at most {len(props)} arguments, {len(args)} given")
            args = dict(zip(props, args))
        if not isinstance(args, dict):
            raise Rejected('"args" must be an object (by name) or a list (by position)')
        return route, args

    # -- HTTP --------------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The Starlette app: one mount per exposed target (and the root with a single one)."""
        mounts = []
        names = self.names()
        for name in names:
            mounts.append(Mount(f"/agents/{quote(name, safe='')}", routes=self._routes(name, self.agent_url(name))))
        if len(names) == 1:
            mounts.append(Mount("", routes=self._routes(names[0], self.base_url)))
        return Starlette(routes=mounts)

    def _routes(self, target: str, url: str) -> list[Any]:
        placeholder = AgentCard(
            name=target, description=f"mesh agent {target}", version=_version(),
            supported_interfaces=[AgentInterface(url=url + "/", protocol_binding="JSONRPC",
                                                 protocol_version=PROTOCOL_VERSION)],
            capabilities=AgentCapabilities(streaming=True), default_input_modes=["application/json", "text/plain"],
            default_output_modes=["application/json", "text/plain"],
            skills=[AgentSkill(id="call", name="call", description="call a method", tags=["mesh"])])
        handler = DefaultRequestHandler(agent_executor=MeshAgentExecutor(self, target),
                                        task_store=BoundedTaskStore(self.max_tasks), agent_card=placeholder)

        async def current(_: AgentCard) -> AgentCard:
            return await self.card(target, url)

        return (create_agent_card_routes(placeholder, card_modifier=current)
                + create_jsonrpc_routes(handler, "/", enable_v0_3_compat=True))

    async def serve_http(self, host: str = "127.0.0.1", port: int = 0, ready: Callable[[str], None] | None = None,
                         stop: asyncio.Event | None = None) -> None:
        """Serve on ``host:port`` (0: any free port) until ``stop`` is set; ``ready`` gets the
        base URL once listening. ``base_url`` is set from the bound port."""
        sock = listening_socket(host, port)
        self.base_url = f"http://{host}:{sock.getsockname()[1]}"
        await serve_asgi(self.app(), sock, lambda _: ready(self.base_url) if ready else None, stop)


def _version() -> str:
    import mesh

    return mesh.__version__
