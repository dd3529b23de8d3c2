"""Every error mesh raises. Callers catch these classes, never bare ``Exception``.

Errors that cross the wire travel as (type name, message) in an ERROR envelope; the
caller re-raises a mesh error as its own class, and anything a user handler raised as
:class:`RemoteError` carrying the original type name.
"""
from __future__ import annotations


class MeshError(Exception):
    """Base class of every mesh error."""


class DecodeError(MeshError, ValueError):
    """Bytes from the wire (or a file) are not a valid envelope or body.

    Raised by the codec for malformed, truncated, oversized or too deeply nested input.
    It is the only exception decoding untrusted bytes may raise.
    """


class EncodeError(MeshError, TypeError):
    """An object cannot be encoded (unsupported type, too large, too deep)."""


class ProtocolError(MeshError):
    """A peer broke the protocol (wrong version, unexpected kind, bad handshake)."""


class Timeout(MeshError, TimeoutError):
    """A call did not complete within its timeout or deadline."""


class Unreachable(MeshError, ConnectionError):
    """The node that hosts the target is not connected (gone, restarting, never joined)."""


class UnknownAgent(MeshError, LookupError):
    """No agent of that name (or no agent with that capability) is in the directory."""


class UnknownMethod(MeshError, LookupError):
    """The agent exists but has no ``@rpc`` method of that name."""


class Overloaded(MeshError):
    """The target refused the work because its queue or send buffer is full."""


class CircuitOpen(MeshError):
    """The circuit breaker for the target is open; the call failed fast."""


class NotLeader(MeshError):
    """This Raft node is not the leader; ``leader`` names the one it knows, if any."""

    def __init__(self, message: str = "not the leader", leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class Unavailable(MeshError):
    """The service cannot answer now (no quorum, shutting down)."""


class Unauthorized(MeshError, PermissionError):
    """The ACL denies the caller this operation."""


class WrongShard(MeshError):
    """The agent called for a key does not own the key's shard (partition) at the shard map
    epoch it knows; the caller refreshes its map and calls the new owner (see
    :mod:`mesh.patterns.sharding`). The call did not run."""


class NoRoute(MeshError, LookupError):
    """A mediator (:mod:`mesh.patterns.mediator`) has no rule for the message and no default
    rule, or a rule's target names a field the message lacks."""


class ConfigError(MeshError, ValueError):
    """A node's configuration is invalid (see :mod:`mesh.node.config`); the message names the
    key as its source spells it (``--metrics-port``, ``MESH_METRICS_PORT``, ``node.toml: [node]
    metrics_port``) and the problem. Raised at start, never on the wire."""


class RemoteError(MeshError):
    """A handler on the remote side raised; ``type`` is its class name, ``message`` its text."""

    def __init__(self, type: str, message: str, agent: str = "", method: str = "") -> None:
        where = f" in {agent}.{method}" if agent else ""
        super().__init__(f"{type}{where}: {message}")
        self.type = type
        self.message = message
        self.agent = agent
        self.method = method

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (RemoteError, (self.type, self.message, self.agent, self.method))


class BridgeError(MeshError):
    """A system outside the mesh reached through a bridge (:mod:`mesh.bridges`: an MCP
    server, an A2A agent) failed or could not be reached; the message names it."""


class ToolError(BridgeError):
    """An MCP tool answered with an error result (``isError``); the message is its text."""


# Errors a node may send back by name; the caller re-raises them as the same class.
WIRE_ERRORS: dict[str, type[MeshError]] = {
    cls.__name__: cls
    for cls in (DecodeError, EncodeError, ProtocolError, Timeout, Unreachable, UnknownAgent,
                UnknownMethod, Overloaded, CircuitOpen, NotLeader, Unavailable, Unauthorized, WrongShard,
                NoRoute)
}
