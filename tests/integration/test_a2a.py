"""The A2A bridge with the official a2a-sdk on both sides, on loopback:

- our server (``python -m mesh.bridges.a2a``) driven by the SDK's client: the agent card
  (skills and schemas from type hints and docstrings), a data message calling a method, a text
  message going to the text entry point, tasks with their status updates (submitted -> working
  -> completed | failed | rejected), the A2A 0.3 ``message/send`` on the same endpoint;
- our ``A2AClientAgent`` against an A2A agent built with the SDK, and against our own bridge.

Real processes and sockets; conditions are polled with deadlines, no timing is asserted."""
from __future__ import annotations

import uuid

import pytest

pytest.importorskip("a2a")

import httpx  # noqa: E402
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory  # noqa: E402
from a2a.helpers import new_data_part, new_text_part  # noqa: E402
from a2a.types import Message, Role, SendMessageRequest, TaskState  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402

import mesh  # noqa: E402
from mesh.bridges.a2a_agent import A2AClientAgent  # noqa: E402
from mesh.bridges.a2a_server import RPC_EXTENSION  # noqa: E402
from tests.conftest import run_async  # noqa: E402
from tests.integration.agents_bridges import Late, Pricer  # noqa: E402
from tests.integration.bridge_processes import eventually, ready_process  # noqa: E402

pytestmark = pytest.mark.integration


def the_mesh() -> mesh.Node:
    """The mesh the bridge joins: one node in the test's process, a Pricer (it has a text entry
    point) and a Late (it has none)."""
    node = mesh.Node("a2a-n1")
    node.add(Pricer("pricer-1"))
    node.add(Late("late-1"))
    return node


def user_message(*parts) -> SendMessageRequest:
    return SendMessageRequest(message=Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=list(parts)))


async def send(client, *parts) -> list:
    return [event async for event in client.send_message(user_message(*parts))]


def final_task(events: list):
    tasks = [e.task for e in events if e.HasField("task")]
    assert tasks, events
    return tasks[-1]


def test_sdk_client_against_our_bridge():
    async def main() -> None:
        async with the_mesh() as node, ready_process(
                "-m", "mesh.bridges.a2a", "--join", node.address, "--expose", "pricer-1",
                "--expose", "late-1", "--http-port", "0") as base:
            async with httpx.AsyncClient(timeout=30) as http:
                await card_and_calls(http, base)

    run_async(main)


async def card_and_calls(http: httpx.AsyncClient, base: str) -> None:
    url = f"{base}/agents/pricer-1"
    card = await A2ACardResolver(http, url).get_agent_card()
    assert card.name == "pricer-1" and card.description == "Prices orders for the bridge tests."
    assert [i.url for i in card.supported_interfaces] == [url + "/"]
    assert card.capabilities.streaming
    skills = {s.id: s for s in card.skills}
    assert set(skills) == {"add", "ask", "fail", "quote", "whoami"}
    assert skills["add"].description == "Add two integers."
    assert "text/plain" in skills["ask"].input_modes and "text/plain" not in skills["add"].input_modes
    extension = MessageToDict(card.capabilities.extensions[0])
    assert extension["uri"] == RPC_EXTENSION
    add_schema = extension["params"]["methods"]["add"]["input_schema"]
    assert add_schema["required"] == ["a"] and add_schema["properties"]["a"]["type"] == "integer"

    plain = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
    streaming = ClientFactory(ClientConfig(streaming=True, httpx_client=http)).create(card)

    # a data part calls a method: one answer, the completed task with the result as an artifact
    events = await send(plain, new_data_part({"method": "add", "args": {"a": 2, "b": 3}}))
    task = final_task(events)
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.artifacts[0].name == "result" and MessageToDict(task.artifacts[0].parts[0].data) == 5

    # streamed: every status update arrives, in order
    events = await send(streaming, new_data_part({"method": "quote", "args": {"order": {"symbol": "Z", "qty": 4}}}))
    states = [e.task.status.state for e in events if e.HasField("task")] + \
             [e.status_update.status.state for e in events if e.HasField("status_update")]
    assert states == [TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING, TaskState.TASK_STATE_COMPLETED]
    artifact = next(e.artifact_update.artifact for e in events if e.HasField("artifact_update"))
    assert MessageToDict(artifact.parts[0].data) == {"notional": 40.0}

    # text goes to the text entry point (Pricer.ask)
    task = final_task(await send(plain, new_text_part("how much?")))
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert task.artifacts[0].parts[0].text == "you asked: how much?"

    # a failing method: a failed task whose status message names the mesh error
    task = final_task(await send(plain, new_data_part({"method": "fail", "args": {"message": "no luck"}})))
    assert task.status.state == TaskState.TASK_STATE_FAILED
    parts = task.status.message.parts
    assert parts[0].text == "RemoteError: ValueError in pricer-1.fail: no luck"
    assert MessageToDict(parts[1].data) == {"error": {"class": "RemoteError", "type": "ValueError",
                                                      "message": "no luck"}}

    # an unknown method, and text to an agent without a text entry point: rejected
    task = final_task(await send(plain, new_data_part({"method": "nope"})))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    late_card = await A2ACardResolver(http, f"{base}/agents/late-1").get_agent_card()
    late = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(late_card)
    task = final_task(await send(late, new_text_part("hello?")))
    assert task.status.state == TaskState.TASK_STATE_REJECTED
    assert "takes no text" in task.status.message.parts[0].text
    task = final_task(await send(late, new_data_part({"method": "hello", "args": ["a2a"]})))   # by position
    assert task.artifacts[0].parts[0].text == "hello a2a"

    # A2A 0.3 clients: message/send on the same endpoint
    reply = await http.post(url + "/", headers={"A2A-Version": "0.3"}, json={
        "jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": {
            "kind": "message", "role": "user", "messageId": "m-0.3",
            "parts": [{"kind": "data", "data": {"method": "quote", "args": {"order": {"symbol": "Q", "qty": 1}}}}]}}})
    result = reply.json()["result"]
    assert result["status"]["state"] == "completed"
    assert result["artifacts"][0]["parts"][0]["data"] == {"notional": 10.0}    # 0.3 data parts are objects


def test_a2a_client_agent_against_an_sdk_agent_and_our_bridge():
    async def main() -> None:
        async with ready_process("-m", "tests.integration.agents_bridges", "a2a-http", "0",
                                 clean_exit=False) as sdk_url, the_mesh() as node, ready_process(
                "-m", "mesh.bridges.a2a", "--join", node.address, "--expose", "pricing",
                "--http-port", "0") as ours:
            caller = mesh.Node("a2a-caller", seeds=[node.address])
            caller.add(A2AClientAgent("upper", sdk_url))
            node.add(A2AClientAgent("priced", f"{ours}/agents/pricing"))
            await caller.start()
            try:
                await eventually(lambda: "priced" in caller.directory())
                answer = await caller.call("upper", "send", text="hello mesh")
                assert answer["state"] == "completed" and answer["result"] == "HELLO MESH"
                assert answer["states"] == ["submitted", "working", "completed"]
                assert answer["artifacts"][0]["name"] == "upper" and answer["task_id"]
                failed = await caller.call("upper", "send", text="fail")
                assert failed["state"] == "failed" and failed["result"] is None

                # mesh -> A2A (our bridge) -> mesh: call_any over the capability, through A2A
                answer = await caller.call("priced", "send", data={"method": "add", "args": {"a": 20, "b": 22}})
                assert answer["state"] == "completed" and answer["result"] == 42
                failed = await caller.call("priced", "send", data={"method": "fail", "args": {}})
                assert failed["state"] == "failed"
                assert failed["messages"][0]["parts"][1]["data"]["error"]["type"] == "ValueError"
                card = await caller.call("upper", "agent_card")
                assert card["name"] == "upper" and card["skills"][0]["id"] == "upper"
            finally:
                await caller.stop()

    run_async(main)
