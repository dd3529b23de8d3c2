"""``A2AClientAgent``: an external A2A agent, callable from the mesh.

    node.add(A2AClientAgent("travel", "https://agents.example.com/travel"))
    answer = await node.call("travel", "send", text="two nights in Lisbon")
    answer["state"], answer["result"]          # "completed", the first part of the result artifact

Theory of operation. The agent fetches the remote agent card (``<url>/.well-known/agent-card.json``)
and makes the official ``a2a-sdk`` client for it the first time it is called, then keeps both
(one ``httpx`` connection pool, closed in ``on_stop``). ``send`` makes one user message (a text
part for ``text``, a data part for ``data``), sends it, streaming when the card says the agent
streams, and turns what comes back into plain data a mesh caller can use:

    {"state": "completed" | "failed" | "rejected" | "input_required" | ... | None,
     "task_id", "context_id",
     "states": the states seen in order (submitted, working, completed when streamed),
     "artifacts": [{"artifact_id", "name", "parts": [part, ...]}, ...],
     "messages": the agent's messages (status messages, or its direct answer),
     "result": the first part of the artifact named "result" (else of the first artifact; for
               an agent that answers with a message and no task, of that message), as a str
               (text) or the data; None when there is none (a failed task: see "messages")}

A part is ``{"text": str}``, ``{"data": value}``, ``{"url": str}`` or ``{"raw": bytes}``, with
``media_type`` and ``filename`` when set. Data parts come through protobuf's ``Value``, so whole
numbers arrive as floats. Transport and protocol failures raise :class:`~mesh.errors.BridgeError`
in the handler (the caller sees ``RemoteError`` with ``type == "BridgeError"``); a task that
failed is an answer, not an error: look at ``state``.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from mesh.agent import Agent, rpc
from mesh.errors import BridgeError

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000              # streamed events read for one message (a stream that never ends)


class A2AClientAgent(Agent):
    """A mesh agent forwarding to the A2A agent at ``url`` (see the module docstring).
    ``timeout``: seconds one ``send`` may take (card, message and answer)."""

    def __init__(self, name: str, url: str, *, timeout: float = 60.0, streaming: bool = True,
                 capabilities: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.streaming = streaming
        if capabilities:
            self.capabilities = tuple(dict.fromkeys(tuple(type(self).capabilities) + tuple(capabilities)))
        self.card: Any = None
        self._client: Any = None
        self._http: Any = None
        self._lock: asyncio.Lock | None = None

    @rpc(eager=False)       # the SDK's HTTP client must run in one task from start to end
    async def send(self, text: str | None = None, data: Any = None, context_id: str | None = None,
                   task_id: str | None = None) -> dict[str, Any]:
        """Send a message (text and/or data) to the A2A agent; its answer as plain data.

        Args:
            text: a text part.
            data: a data part (any JSON value).
            context_id: continue this conversation.
            task_id: continue this task (one waiting for input).
        """
        if text is None and data is None:
            raise ValueError("send needs text or data")
        try:
            return await asyncio.wait_for(self._send(text, data, context_id, task_id), self.timeout)
        except asyncio.TimeoutError:
            raise BridgeError(f"A2A agent at {self.url} did not answer within {self.timeout:g} s") from None

    @rpc(eager=False)
    async def agent_card(self) -> dict[str, Any]:
        """The remote agent card, as JSON."""
        from google.protobuf.json_format import MessageToDict

        await self._connect()
        return MessageToDict(self.card)

    async def on_stop(self) -> None:
        await self.close()

    async def close(self) -> None:
        client, http = self._client, self._http
        self._client = self._http = None
        try:
            if client is not None:
                await client.close()
        finally:
            if http is not None:
                await http.aclose()

    async def _connect(self) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                import httpx
                from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
                from a2a.utils.errors import A2AError

                http = httpx.AsyncClient(timeout=self.timeout)
                try:
                    card = await A2ACardResolver(http, self.url).get_agent_card()
                    client = ClientFactory(ClientConfig(streaming=self.streaming, httpx_client=http)).create(card)
                except (A2AError, httpx.HTTPError, ValueError) as exc:
                    await http.aclose()
                    raise BridgeError(f"cannot reach the A2A agent at {self.url}: {type(exc).__name__}: {exc}") from None
                self._client, self._http, self.card = client, http, card
        return self._client

    async def _send(self, text: str | None, data: Any, context_id: str | None, task_id: str | None) -> dict[str, Any]:
        import httpx
        from a2a.helpers import new_data_part, new_text_part
        from a2a.types import Message, Role, SendMessageRequest
        from a2a.utils.errors import A2AError

        client = await self._connect()
        parts = ([new_text_part(text)] if text is not None else []) + ([new_data_part(data)] if data is not None else [])
        message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts,
                          context_id=context_id or "", task_id=task_id or "")
        answer = Answer()
        try:
            async for event in client.send_message(SendMessageRequest(message=message)):
                answer.take(event)
                if answer.events >= MAX_EVENTS:
                    break
        except (A2AError, httpx.HTTPError) as exc:
            raise BridgeError(f"A2A agent at {self.url} failed: {type(exc).__name__}: {exc}") from None
        return answer.plain()


class Answer:
    """Folds the events of one ``send_message`` into the final task (or message)."""

    def __init__(self) -> None:
        self.task: Any = None
        self.states: list[str] = []
        self.artifacts: dict[str, Any] = {}      # artifact id -> Artifact, in arrival order
        self.messages: list[Any] = []
        self.events = 0

    def take(self, event: Any) -> None:
        from a2a.types import Task

        self.events += 1
        if event.HasField("task"):
            self.task = Task()
            self.task.CopyFrom(event.task)
            self._state(event.task.status)
            for artifact in event.task.artifacts:
                self.artifacts[artifact.artifact_id] = artifact
        elif event.HasField("status_update"):
            update = event.status_update
            if self.task is None:
                self.task = Task(id=update.task_id, context_id=update.context_id)
            self.task.status.CopyFrom(update.status)
            self._state(update.status)
        elif event.HasField("artifact_update"):
            update = event.artifact_update
            known = self.artifacts.get(update.artifact.artifact_id)
            if update.append and known is not None:
                known.parts.extend(update.artifact.parts)
            else:
                self.artifacts[update.artifact.artifact_id] = update.artifact
        elif event.HasField("message"):
            self.messages.append(event.message)

    def _state(self, status: Any) -> None:
        state = state_name(status.state)
        if not self.states or self.states[-1] != state:
            self.states.append(state)
        if status.HasField("message"):
            self.messages.append(status.message)

    def plain(self) -> dict[str, Any]:
        from a2a.types import Role

        artifacts = [{"artifact_id": a.artifact_id, "name": a.name, "parts": [plain_part(p) for p in a.parts]}
                     for a in self.artifacts.values()]
        messages = [{"role": "agent" if m.role == Role.ROLE_AGENT else "user", "parts": [plain_part(p) for p in m.parts]}
                    for m in self.messages]
        named = [a for a in artifacts if a["name"] == "result"] or artifacts
        task = self.task
        if named:
            source = named[0]["parts"]
        else:   # an agent that answered with a message and no task: its message is the result
            source = messages[-1]["parts"] if messages and task is None else []
        result = None
        if source:
            first = source[0]
            result = first.get("text", first.get("data", first.get("url", first.get("raw"))))
        return {"state": state_name(task.status.state) if task is not None else None,
                "task_id": task.id if task is not None else None,
                "context_id": task.context_id if task is not None else None,
                "states": self.states, "artifacts": artifacts, "messages": messages, "result": result}


def state_name(state: int) -> str:
    """``TASK_STATE_INPUT_REQUIRED`` -> ``input_required``."""
    from a2a.types import TaskState

    return TaskState.Name(state).removeprefix("TASK_STATE_").lower()


def plain_part(part: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    out: dict[str, Any]
    if part.HasField("text"):
        out = {"text": part.text}
    elif part.HasField("data"):
        out = {"data": MessageToDict(part.data)}
    elif part.HasField("url"):
        out = {"url": part.url}
    elif part.HasField("raw"):
        out = {"raw": bytes(part.raw)}
    else:
        out = {}
    if part.media_type:
        out["media_type"] = part.media_type
    if part.filename:
        out["filename"] = part.filename
    return out
