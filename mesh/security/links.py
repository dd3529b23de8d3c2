"""CURVE on every link, and a ZAP handler that admits only the cluster's keys.

Theory of operation
-------------------
* Our ROUTER is a CURVE server holding our Curve25519 secret; every DEALER we open is a CURVE
  client that must name the public key of the server it dials. The handshake proves both
  sides hold their secrets and encrypts everything after it, so a link is to the node we
  meant and nobody on the wire can read or alter it. A plaintext (NULL) peer never completes
  a handshake with a CURVE server: it gets nothing.
* Who may dial in is ZAP's call. libzmq hands every new connection to a CURVE server to the
  handler bound at ``inproc://zeromq.zap.01`` in the socket's context, with the client's public
  key; we admit only trusted keys and name the key's node as the connection's User-Id.
  ``ZAP_ENFORCE_DOMAIN`` makes a missing handler fail closed.
* ZAP does not see the client's routing id, which is the peer name every frame on our ROUTER
  arrives under. So the transport reads the User-Id of each frame and drops one whose routing
  id is not that node's (:meth:`LinkSecurity.impostor`): from then on a peer name is
  authenticated, and gossip source checks, Raft votes and ACL principals can rely on it. On
  our own DEALERs the server key we dialled with says who answers; a seed link that turns
  out to be node X must have handshaken with one of X's keys (:meth:`LinkSecurity.holds_key`).
* Principals: a node's routing id is its node id, or ``<id>~<suffix>`` for short-lived
  clients (``meshctl``) that hold the key of ``<id>`` (an operator key, say) but need an id
  of their own in the mesh. :func:`principal_of` strips the suffix.
* Whom to dial with which key: a member's id names its trusted identities (several during a
  key rotation, newest first); a seed given as ``ID@ADDRESS`` names them too; a bare seed
  address could be any trusted node, so every trusted key is a candidate. A handshake that
  fails moves the link on to the next candidate (:meth:`LinkSecurity.candidates`), so seeds
  need no id and rotations need no coordination. A wrong guess costs one refused handshake,
  which the seed counts like any other.
* The trust store is re-read when its files change (checked every ``reload_s``), so keys
  are added and removed on a running mesh; connections already admitted stay up.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any, Callable

import zmq
from zmq.auth.base import Authenticator
from zmq.utils import z85

log = logging.getLogger(__name__)

ZAP_DOMAIN = b"mesh"
PRINCIPAL_SEP = "~"
_ZAP_VERSION = b"1.0"
_LOG_EVERY_S = 10.0          # at most one warning per reason per this many seconds


def principal_of(node_id: str) -> str:
    """The key holder behind a node id: ``ops~1a2b`` -> ``ops``."""
    return node_id.split(PRINCIPAL_SEP, 1)[0]


def split_seed(seed: str) -> tuple[str | None, str]:
    """``n1@tcp://h:p`` -> ("n1", "tcp://h:p"); a bare address -> (None, address)."""
    head, sep, tail = seed.partition("@")
    if sep and "://" not in head:
        return head, tail
    return None, seed


class LinkSecurity:
    """Our keys and the trust store, applied to the node's sockets (see the module docstring).

    ``keys`` is a :class:`mesh.security.keys.NodeKeys`, ``trust`` a
    :class:`mesh.security.trust.TrustStore`."""

    def __init__(self, keys: Any, trust: Any, reload_s: float = 2.0) -> None:
        self.keys = keys
        self.trust = trust
        self.reload_s = reload_s
        self.seed_ids: dict[str, str] = {}     # seed address -> the node id given with it
        self.refused: Counter[str] = Counter()  # ZAP denials by reason
        self.counters = {"links_refused": 0, "handshakes_failed": 0, "no_trusted_key": 0}
        self._zap: _Zap | None = None
        self._reloader: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_log: dict[str, float] = {}
        self.on_trust_change: list[Callable[[], None]] = []
        self._banned: dict[str, float] = {}    # node -> until (monotonic s): refused meanwhile

    @property
    def node_id(self) -> str:
        return self.keys.node_id

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, ctx: zmq.Context) -> None:
        """Bind the ZAP handler in ``ctx`` (before any CURVE server socket binds)."""
        self._loop = asyncio.get_running_loop()
        self._zap = _Zap(ctx, self)
        self._zap.start()
        self._reloader = self._loop.call_later(self.reload_s, self._reload)

    def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            self._reloader = None
        if self._zap is not None:
            self._zap.stop()
            self._zap = None

    def _reload(self) -> None:
        try:
            if self.trust.reload():
                for hook in self.on_trust_change:
                    hook()
        finally:
            self._reloader = self._loop.call_later(self.reload_s, self._reload)

    # -- sockets -----------------------------------------------------------------------------

    def serve(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (our ROUTER) a CURVE server whose clients ZAP must admit."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.curve_secret)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.curve_public)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)

    def dial(self, sock: zmq.Socket, server_key: bytes) -> None:
        """Make ``sock`` (a DEALER) a CURVE client of the server holding ``server_key``."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, server_key)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.curve_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.curve_secret)

    def candidates(self, key: str, address: str, seed_prefix: str) -> list[bytes]:
        """The CURVE public keys (Z85) the node behind link ``key`` may hold, most likely first.
        Empty: we trust no key for it, so we must not dial it."""
        if key.startswith(seed_prefix):
            node = self.seed_ids.get(address)
            if node is None:      # any trusted node could be listening there
                return [i.curve_public for n in self.trust.node_ids() if n != self.node_id
                        for i in self.trust.identities(n)]
        else:
            node = principal_of(key)
        found = [i.curve_public for i in self.trust.identities(node)]
        if not found:
            self.counters["no_trusted_key"] += 1
            self._warn("no-key", "no trusted key for node %r at %s: not connecting", node, address)
        return found

    # -- ZAP ---------------------------------------------------------------------------------

    def admit(self, identity: bytes, mechanism: bytes, credentials: list[bytes], address: str) -> str | None:
        """The principal a connection authenticates as, or None (refused, counted, logged)."""
        if mechanism != b"CURVE" or len(credentials) != 1 or len(credentials[0]) != 32:
            return self._refuse("not-curve", address, identity)
        owner = self.trust.node_of(z85.encode(credentials[0]))
        if owner is None:
            return self._refuse("unknown-key", address)
        if self._banned and self._banned.get(owner, 0.0) > time.monotonic():
            return self._refuse("banned", f"{address} ({owner!r}, banned for misbehaving)")
        return owner

    def ban(self, node: str, until: float) -> None:
        """Refuse ``node``'s keys until ``until`` (monotonic seconds); see mesh.security.guard."""
        now = time.monotonic()
        self._banned = {n: t for n, t in self._banned.items() if t > now}
        self._banned[node] = until

    def holds_key(self, node_id: str, curve_public: bytes) -> bool:
        """Whether ``curve_public`` is a trusted key of ``node_id`` (a seed link that turns out
        to be ``node_id`` must have handshaken with one of its keys)."""
        if self.trust.node_of(curve_public) == principal_of(node_id):
            return True
        self._refuse("wrong-node", f"the seed that says it is {node_id!r}")
        return False

    def handshake_refused(self, why: str) -> None:
        """A connection to our ROUTER failed its handshake before ZAP (plaintext, or CURVE
        with another server key than ours)."""
        self._refuse("handshake", f"a connection whose handshake failed ({why})")

    def impostor(self, claimed: str, owner: str) -> None:
        """A frame under routing id ``claimed`` on a connection ZAP admitted for ``owner``."""
        self._refuse("wrong-node", f"a connection of {owner!r} that calls itself {claimed!r}")

    def _refuse(self, reason: str, who: str) -> None:
        self.counters["links_refused"] += 1
        self.refused[reason] += 1
        self._warn(reason, "refused %s: %s", who, reason)
        return None

    def _warn(self, reason: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            log.warning(msg, *args)


class _Zap(Authenticator):
    """The ZAP handler: pyzmq's authenticator (the REP socket at ``inproc://zeromq.zap.01``
    and its reply format) driven by the node's loop like every other socket here: a reader
    on the socket's FD that drains it. (pyzmq's AsyncioAuthenticator polls through
    ``zmq.asyncio``, whose registration did not survive a second authenticator in one
    process: the one of a restarted node never saw a request.) Our rule: the key must be
    trusted; the User-Id of the connection is then its node (see the module docstring)."""

    def __init__(self, ctx: zmq.Context, security: LinkSecurity) -> None:
        super().__init__(ctx, log=logging.getLogger(__name__ + ".zap"))
        self._security = security
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        super().start()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.zap_socket.getsockopt(zmq.FD), self._drain)
        self._drain()        # edge-triggered: a request may be waiting already

    def stop(self) -> None:
        if self.zap_socket is not None and self._loop is not None:
            self._loop.remove_reader(self.zap_socket.getsockopt(zmq.FD))
        super().stop()

    def _drain(self) -> None:
        while self.zap_socket is not None:
            try:
                msg = self.zap_socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:      # closed under us
                return
            self._answer(msg)

    def _answer(self, msg: list[bytes]) -> None:
        if len(msg) < 6:
            self._send_zap_reply(msg[1] if len(msg) >= 2 else b"", b"400", b"Not enough frames")
            return
        version, request_id, domain, address, identity, mechanism = msg[:6]
        if version != _ZAP_VERSION:
            self._send_zap_reply(request_id, b"400", b"Invalid version")
            return
        principal = self._security.admit(identity, mechanism, msg[6:], address.decode("utf-8", "replace"))
        if principal is None:
            self._send_zap_reply(request_id, b"400", b"not trusted")
        else:
            self._send_zap_reply(request_id, b"200", b"OK", principal)
