"""ZeroMQ transport: one ROUTER bound per node, one DEALER per peer, driven from the loop.

Theory of operation
-------------------
* Everything a node *originates* (requests, one-way sends, publishes, hellos) leaves on its
  DEALER to that peer; the DEALER's routing id is our node id, so the peer's ROUTER knows who
  spoke. Replies go back on the receiving node's ROUTER to that routing id — the same TCP
  connection the request came on.
* The sockets are plain (synchronous) pyzmq sockets whose file descriptors are registered with
  the event loop (``add_reader``). ZeroMQ's FD is edge-triggered and "readable" only means
  "look at ZMQ_EVENTS": so a wake-up drains the socket with NOBLOCK until EAGAIN, and after we
  send on a socket we look at its EVENTS again, because a send can consume the edge of an
  arrival. This avoids ``zmq.asyncio``'s per-operation futures (about 60 µs per round trip).
* Sends are batched: envelopes are self-delimiting, so several bound for the same peer are
  joined into one frame. While a drain is running the transport is *corked*: replies produced
  by handlers that finish synchronously go out together when the drain ends. Outside a drain,
  ``flush=True`` (calls) sends at once; ``flush=False`` (one-way sends, publishes) waits for
  the next loop iteration or ``batch_bytes``, whichever comes first.
* Link state comes from each DEALER's monitor socket: HANDSHAKE_SUCCEEDED means up,
  DISCONNECTED means down. DEALERs use ZMQ_IMMEDIATE, so nothing is queued towards a peer
  that is not connected: the caller gets :class:`~mesh.errors.Unreachable` instead of a hang.
  ZeroMQ reconnects by itself; when a restarted peer comes back the link goes up again.
  A connect attempt gives up after ``connect_timeout_ms`` and the next one starts afresh:
  otherwise a DEALER dialling a peer behind a cut cable sits in the kernel's SYN back-off
  (1, 2, 4, 8... s) and, once the cable is back, the link stays down for up to that long
  while gossip already says the peer is alive (seen across network namespaces: Raft could
  not reach a healed follower for over 30 s after a 30 s partition).
* The ROUTER uses ROUTER_MANDATORY (an unroutable reply is an error we count, not a silent
  drop) and ROUTER_HANDOVER (a restarted peer with the same id takes its identity over).
* No ZMTP heartbeats: gossip (SWIM) finds a peer that hangs or a link that dies silently,
  and libzmq 4.3.5 aborts (``!_io_error``, stream_engine_base.cpp) when a heartbeat fires on
  a connection whose peer went away while its input was held back at the high-water mark.
  ``heartbeat_ivl_ms`` turns them back on for links without gossip.
* A node that stops keeps its ROUTER open until its peers hang up (:meth:`wait_hangups`):
  replies it sent just before closing were seen lost in flight when the ROUTER closed right
  after them, linger or not, so the *reader* decides when the connection is done with.

Every queue is bounded: ZeroMQ high-water marks, and ``max_outbox_bytes`` per destination
above which senders get :class:`~mesh.errors.Overloaded`.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable

import zmq
from zmq.utils.monitor import recv_monitor_message

from mesh.errors import Overloaded, Unreachable
from mesh.security.links import LinkSecurity, principal_of

log = logging.getLogger(__name__)

FrameHandler = Callable[[str, bytes, bool], None]   # (peer key, frame, arrived on ROUTER)
LinkHandler = Callable[[str, bool], None]           # (peer key, up)

SEED_PREFIX = "seed:"   # link key of a seed whose node id is not known yet (see Transport.rename)
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
_MONITOR_EVENTS = zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
_ROUTER_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_FAILED
# Plain ints: pyzmq's enum flags cost an enum construction per call on the hot path.
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_SNDMORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_RCVMORE = int(zmq.RCVMORE)
_POLLIN = int(zmq.POLLIN)
_COPY_THRESHOLD = 64 * 1024   # larger frames go zero-copy


@dataclass(slots=True)
class TransportConfig:
    """Socket tuning. Sizes in bytes, intervals in milliseconds."""

    hwm: int = 10_000                    # ZeroMQ high-water mark, messages, each direction
    batch_bytes: int = 64 * 1024         # flush a destination's batch at this size
    max_outbox_bytes: int = 64 * 1024 * 1024   # per destination; above it senders get Overloaded
    drain_budget: int = 512              # frames read per wake-up before yielding to the loop
    reconnect_ivl_ms: int = 100
    reconnect_ivl_max_ms: int = 2000
    connect_timeout_ms: int = 2000       # a TCP connect not done by then is abandoned and retried
    heartbeat_ivl_ms: int = 0            # ZMTP heartbeats off (see the module docstring)
    heartbeat_timeout_ms: int = 3000
    retry_ms: float = 1.0                # wait before retrying a send refused at the high-water mark
    linger_ms: int = 200                 # on close, how long unsent frames may still go out


class _Outbox:
    """Frames waiting to go to one destination (a DEALER, or a routing id on the ROUTER)."""

    __slots__ = ("sock", "ident", "items", "size", "dirty")

    def __init__(self, sock: zmq.Socket, ident: bytes | None) -> None:
        self.sock = sock
        self.ident = ident
        self.items: list[bytes] = []
        self.size = 0
        self.dirty = False


class _Link:
    """Our DEALER to one peer, with its monitor."""

    __slots__ = ("key", "address", "sock", "monitor", "out", "up", "server_keys", "tried")

    def __init__(self, key: str, address: str, sock: zmq.Socket, monitor: zmq.Socket,
                 server_keys: list[bytes]) -> None:
        self.key = key
        self.address = address
        self.sock = sock
        self.monitor = monitor
        self.out = _Outbox(sock, None)
        self.up = False
        self.server_keys = server_keys   # CURVE: the keys the peer may hold, the one in use first
        self.tried = 0                   # handshakes failed since the last success


class Transport:
    """The node's sockets. Single-threaded: every method runs on the node's event loop."""

    def __init__(self, node_id: str, bind: str, on_frame: FrameHandler, on_link: LinkHandler,
                 config: TransportConfig | None = None, security: LinkSecurity | None = None) -> None:
        self.node_id = node_id
        self.security = security          # None: plaintext links (loopback only; see mesh.node)
        self.bind_address = bind
        self.address = ""                 # the bound endpoint, wildcard port resolved
        self.config = config or TransportConfig()
        self._on_frame = on_frame
        self._on_link = on_link
        self._ctx: zmq.Context | None = None
        self._router: zmq.Socket | None = None
        self._router_monitor: zmq.Socket | None = None
        self._inbound: set[int] = set()            # fds of peers' connections to our ROUTER
        self._all_hung_up: asyncio.Event | None = None
        self._router_outs: dict[str, _Outbox] = {}
        self._links: dict[str, _Link] = {}
        self._idents: dict[bytes, str] = {}   # routing id -> peer key, cached decode
        self._dirty: list[_Outbox] = []
        self._corked = 0
        self._flush_scheduled = False
        self._retry_scheduled = False
        self._drain_scheduled: set[int] = set()   # id(socket) with a drain already queued
        self._keys: dict[int, str] = {}            # id(DEALER socket) -> peer key
        self._draining: zmq.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = {"frames_in": 0, "frames_out": 0, "bytes_in": 0, "bytes_out": 0,
                         "unroutable": 0, "malformed_frames": 0, "internal_errors": 0,
                         "empty_wakeups": 0, "bad_addresses": 0}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        self._loop = asyncio.get_running_loop()
        self._ctx = zmq.Context(io_threads=1)
        if self.security is not None:
            self.security.start(self._ctx)    # the ZAP handler, before anyone can dial in
        r = self._ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.ROUTER_MANDATORY, 1)
        r.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.security is not None:
            self.security.serve(r)
        self._tune(r)
        try:
            r.bind(self.bind_address)
        except zmq.ZMQError as exc:
            r.close(0)
            if self.security is not None:
                self.security.stop()
            self._ctx.term()
            raise OSError(f"cannot bind {self.bind_address}: {exc}") from exc
        self.address = r.getsockopt_string(zmq.LAST_ENDPOINT)
        self._router = r
        self._router_monitor = r.get_monitor_socket(_ROUTER_EVENTS)
        self._loop.add_reader(self._router_monitor.getsockopt(zmq.FD), self._drain_router_monitor)
        self._drain_router_monitor()   # edge-triggered: events may be waiting already
        self._loop.add_reader(r.getsockopt(zmq.FD), self._drain, r)
        self._drain(r)   # the edge may already have passed
        return self.address

    async def wait_hangups(self, timeout: float) -> int:
        """Wait (up to ``timeout`` s) until no peer is connected to our ROUTER; return how
        many still are. Peers hang up once they have read our last replies, after our
        goodbye, so closing after this loses no answer in flight."""
        self._drain_router_monitor()
        if self._inbound:
            self._all_hung_up = asyncio.Event()
            try:
                await asyncio.wait_for(self._all_hung_up.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._all_hung_up = None
        return len(self._inbound)

    def close(self) -> None:
        """Flush what is queued, then close every socket (after at most ``linger_ms``)."""
        if self._ctx is None:
            return
        self._flush_dirty()
        self.disconnect_all()
        if self._router is not None:
            self._loop.remove_reader(self._router_monitor.getsockopt(zmq.FD))
            self._router.disable_monitor()
            self._router_monitor.close(0)
            self._router_monitor = None
            self._loop.remove_reader(self._router.getsockopt(zmq.FD))
            self._router.close(self.config.linger_ms)
            self._router = None
        if self.security is not None:
            self.security.stop()
        self._ctx.term()
        self._ctx = None

    def _tune(self, sock: zmq.Socket) -> None:
        c = self.config
        sock.setsockopt(zmq.SNDHWM, c.hwm)
        sock.setsockopt(zmq.RCVHWM, c.hwm)
        sock.setsockopt(zmq.LINGER, c.linger_ms)
        sock.setsockopt(zmq.RECONNECT_IVL, c.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, c.reconnect_ivl_max_ms)
        if c.heartbeat_ivl_ms:
            sock.setsockopt(zmq.HEARTBEAT_IVL, c.heartbeat_ivl_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, c.heartbeat_timeout_ms)
            sock.setsockopt(zmq.HEARTBEAT_TTL, c.heartbeat_timeout_ms)

    # -- links -------------------------------------------------------------------------------

    def connect(self, key: str, address: str) -> None:
        """Open our DEALER to a peer. ``key`` is its node id (or a placeholder for a seed
        whose id we learn from its hello; see :meth:`rename`). Idempotent."""
        if key in self._links:
            return
        for other in list(self._links.values()):
            if other.address == address:      # a seed link to this very peer: adopt it
                self.rename(other.key, key)
                return
        server_keys: list[bytes] = []
        if self.security is not None:
            server_keys = self.security.candidates(key, address, SEED_PREFIX)
            if not server_keys:
                return            # a node we hold no key for: never dialled (send -> Unreachable)
        self._open(key, address, server_keys)

    def _open(self, key: str, address: str, server_keys: list[bytes], tried: int = 0) -> None:
        log.debug("connect %s at %s", key, address)
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.node_id.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, self.config.connect_timeout_ms)
        if server_keys:
            self.security.dial(sock, server_keys[0])
        self._tune(sock)
        monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
        link = _Link(key, address, sock, monitor, server_keys)
        link.tried = tried
        self._links[key] = link
        self._keys[id(sock)] = key
        self._loop.add_reader(sock.getsockopt(zmq.FD), self._drain, sock, key)
        self._loop.add_reader(monitor.getsockopt(zmq.FD), self._drain_monitor, link)
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:      # a peer gossiped an address ZeroMQ cannot dial
            self.counters["bad_addresses"] += 1
            log.warning("cannot connect to %s at %r: %s", key, address, exc)
            self.disconnect(key)
            return
        self._drain_monitor(link)

    def rename(self, old: str, new: str) -> bool:
        """Re-key a seed link once its node id is known. If ``new`` already has a link (found
        by another path while the seed answered), that one is closed: one DEALER per peer,
        and the seed link is the one known to work."""
        link = self._links.get(old)
        if link is None or old == new:
            return False
        if self.security is not None and not self.security.holds_key(new, link.server_keys[0]):
            # the seed answered with the key of another node than it claims to be
            self.disconnect(old)
            return False
        log.debug("link %s is node %s", old, new)
        if new in self._links:
            self.disconnect(new)
        del self._links[old]
        self._links[new] = link
        link.key = new
        self._keys[id(link.sock)] = new
        self._loop.remove_reader(link.sock.getsockopt(zmq.FD))
        self._loop.add_reader(link.sock.getsockopt(zmq.FD), self._drain, link.sock, new)
        return True

    def disconnect(self, key: str) -> None:
        link = self._links.pop(key, None)
        if link is None:
            return
        self._flush(link.out)
        self._keys.pop(id(link.sock), None)
        self._loop.remove_reader(link.sock.getsockopt(zmq.FD))
        self._loop.remove_reader(link.monitor.getsockopt(zmq.FD))
        link.sock.disable_monitor()
        link.monitor.close(0)
        link.sock.close(self.config.linger_ms)
        link.up = False

    def disconnect_all(self) -> None:
        for key in list(self._links):
            self.disconnect(key)

    def is_up(self, key: str) -> bool:
        link = self._links.get(key)
        return link is not None and link.up

    def links(self) -> dict[str, tuple[str, bool]]:
        return {k: (l.address, l.up) for k, l in self._links.items()}

    def _drain_monitor(self, link: _Link) -> None:
        while True:
            try:
                event = recv_monitor_message(link.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            kind = event["event"]
            if kind & _HANDSHAKE_FAILED:
                self._handshake_failed(link)
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED and not link.up:
                link.up = True
                link.tried = 0
                log.debug("link %s up (%s)", link.key, link.address)
                self._on_link(link.key, True)
            elif kind == zmq.EVENT_DISCONNECTED and link.up:
                self._drain(link.sock, link.key, greedy=True)   # replies that came before the loss count
                link.up = False
                dropped = len(link.out.items)
                link.out.items.clear()
                link.out.size = 0
                log.debug("link %s down (%s), %d queued frames dropped", link.key, link.address, dropped)
                self._on_link(link.key, False)
            if self._links.get(link.key) is not link:
                return   # the handler closed this link

    def _handshake_failed(self, link: _Link) -> None:
        """The peer refused us, or is not the holder of the key we dialled with: try the
        next key it may hold, from the trust store as it is now (a rotation may have added
        one since the link was opened). ZeroMQ redials by itself when there is no other."""
        if self.security is None:
            return
        self.security.counters["handshakes_failed"] += 1
        link.tried += 1
        fresh = self.security.candidates(link.key, link.address, SEED_PREFIX)
        current = link.server_keys[0]
        if not fresh or fresh == [current]:
            return
        nxt = fresh[(fresh.index(current) + 1) % len(fresh)] if current in fresh else fresh[0]
        keys = [nxt] + [k for k in fresh if k != nxt]
        log.debug("handshake with %s at %s failed; trying its next key", link.key, link.address)
        # A fresh DEALER with the next key (libzmq does not redial a disconnected endpoint
        # on the same socket reliably), a loop iteration or more later: a socket opened in
        # the iteration that closed the old one may get its FD number, whose reader the loop
        # has not let go of yet. ZeroMQ's back-off starts over with it: keep one here,
        # doubling after each full round of keys, so a peer that refuses us is not hammered.
        # The link is not up, so nothing queued on it is lost.
        self.disconnect(link.key)
        c = self.config
        rounds = (link.tried - 1) // len(fresh)
        delay_ms = min(c.reconnect_ivl_ms << min(rounds, 16), c.reconnect_ivl_max_ms)
        self._loop.call_later(delay_ms / 1000, self._redial, link.key, link.address, keys, link.tried)

    def _redial(self, key: str, address: str, keys: list[bytes], tried: int) -> None:
        if self._ctx is not None and key not in self._links:
            self._open(key, address, keys, tried)

    def _drain_router_monitor(self) -> None:
        while self._router_monitor is not None:
            try:
                event = recv_monitor_message(self._router_monitor, zmq.NOBLOCK)
            except zmq.ZMQError:   # Again, or closed
                break
            kind = event["event"]
            if kind == zmq.EVENT_ACCEPTED:
                self._inbound.add(event["value"])
            elif kind & _HANDSHAKE_FAILED:
                if self.security is not None and kind != zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # ZAP counted those
                    # a plaintext peer, or one that does not hold the key it dialled us with
                    self.security.handshake_refused(f"{zmq.Event(kind).name.lower()} {event['value']:#x}")
            else:
                self._inbound.discard(event["value"])
        if not self._inbound and self._all_hung_up is not None:
            self._all_hung_up.set()

    # -- sending -----------------------------------------------------------------------------

    def send(self, key: str, data: bytes, flush: bool = True) -> None:
        """Queue ``data`` (one or more envelopes) to peer ``key`` over our DEALER.

        Raises Unreachable when the link is not up, Overloaded when its outbox is full."""
        link = self._links.get(key)
        if link is None or not link.up:
            raise Unreachable(f"node {key!r} is not connected")
        self._enqueue(link.out, data, flush)

    def reply(self, key: str, data: bytes, flush: bool = True) -> None:
        """Queue ``data`` back to peer ``key`` over our ROUTER (to its DEALER)."""
        out = self._router_outs.get(key)
        if out is None:
            out = self._router_outs[key] = _Outbox(self._router, key.encode())
        self._enqueue(out, data, flush)

    def _enqueue(self, out: _Outbox, data: bytes, flush: bool) -> None:
        n = len(data)
        if out.size + n > self.config.batch_bytes and out.items:
            self._flush(out)
        if out.size + n > self.config.max_outbox_bytes:
            raise Overloaded(f"send buffer to {out.ident or 'peer'} is full ({out.size} bytes queued)")
        out.items.append(data)
        out.size += n
        if self._corked:
            self._mark_dirty(out)
        elif flush or out.size >= self.config.batch_bytes:
            self._flush(out)
        else:
            self._mark_dirty(out)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush_dirty)

    def _mark_dirty(self, out: _Outbox) -> None:
        if not out.dirty:
            out.dirty = True
            self._dirty.append(out)

    def _flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for out in dirty:
            out.dirty = False
            self._flush(out)

    def _flush(self, out: _Outbox) -> None:
        items = out.items
        if not items:
            return
        data = items[0] if len(items) == 1 else b"".join(items)
        sock = out.sock
        try:
            if out.ident is None:
                sock.send(data, _NOBLOCK, copy=len(data) <= _COPY_THRESHOLD)
            else:
                sock.send(out.ident, _NOBLOCK_SNDMORE)
                sock.send(data, _NOBLOCK, copy=len(data) <= _COPY_THRESHOLD)
        except zmq.Again:
            # High-water mark (or a link whose pipe is not attached yet): keep the frames,
            # try again shortly. The outbox bound turns a lasting stall into Overloaded.
            self._mark_dirty(out)
            if not self._retry_scheduled:
                self._retry_scheduled = True
                self._loop.call_later(self.config.retry_ms / 1000, self._retry)
            return
        except zmq.ZMQError as exc:
            # EHOSTUNREACH from ROUTER_MANDATORY: the peer's DEALER is gone. Its callers learn
            # it from their own link going down; we count the lost replies.
            self.counters["unroutable"] += len(items)
            log.debug("unroutable frame to %r: %s", out.ident, exc)
        else:
            self.counters["frames_out"] += 1
            self.counters["bytes_out"] += len(data)
        items.clear()
        out.size = 0
        if sock is not self._draining:
            self._poke(sock)

    def _retry(self) -> None:
        self._retry_scheduled = False
        self._flush_dirty()

    def _poke(self, sock: zmq.Socket) -> None:
        """A send may have consumed the edge of an arrival: look at the socket again soon.

        Deferred to the next loop iteration, so the check (a getsockopt, ~1 µs) runs while
        we wait for the answer instead of before we start waiting."""
        sid = id(sock)
        if sid not in self._drain_scheduled:
            self._drain_scheduled.add(sid)
            self._loop.call_soon(self._drain, sock, self._keys.get(sid), True)

    # -- receiving ---------------------------------------------------------------------------

    def _drain(self, sock: zmq.Socket, key: str | None = None, poked: bool = False,
               greedy: bool = False) -> None:
        """Read what the socket holds. Each frame is handled and its replies sent before the
        next is read (so a reply never waits on a later arrival); then ZMQ_EVENTS says
        whether more is there — cheaper than ending on EAGAIN, which raises. On a DEALER
        (replies to our calls) that check waits for the next loop iteration instead."""
        if poked:
            self._drain_scheduled.discard(id(sock))
        if sock.closed:
            return
        is_router = sock is self._router
        secure = self.security is not None
        on_frame = self._on_frame
        counters = self.counters
        self._corked += 1
        self._draining = sock
        try:
            if poked and not sock.get(_EVENTS) & _POLLIN:
                return
            for _ in range(self.config.drain_budget):
                try:
                    if is_router:
                        ident = sock.recv(_NOBLOCK)
                        if secure:
                            part = sock.recv(_NOBLOCK, copy=False)
                            user = part.get("User-Id")   # the key holder ZAP admitted
                            data = part.bytes
                        else:
                            data = sock.recv(_NOBLOCK)
                        if sock.get(_RCVMORE):      # peers send one part; more is an error
                            while sock.get(_RCVMORE):
                                sock.recv(_NOBLOCK)
                            counters["malformed_frames"] += 1
                            data = None
                    else:
                        # Frames on a DEALER stand alone (no routing id to keep in step), so a
                        # multi-part message from a broken peer is just several bad frames.
                        data = sock.recv(_NOBLOCK)
                except zmq.Again:
                    counters["empty_wakeups"] += 1   # the FD signalled a state change, not a frame
                    return
                if data is not None:
                    if is_router:
                        peer = self._idents.get(ident)
                        if peer is None:
                            peer = self._peer_name(ident)
                        if secure and peer is not None and principal_of(peer) != user:
                            # a routing id that is not the name of the key on the connection
                            self.security.impostor(peer, user)
                            peer = None
                    else:
                        peer = key
                    if peer is None:
                        counters["malformed_frames"] += 1
                    else:
                        counters["frames_in"] += 1
                        counters["bytes_in"] += len(data)
                        try:
                            on_frame(peer, data, is_router)
                        except Exception:   # a bug in a handler must not stop the node reading
                            counters["internal_errors"] += 1
                            log.exception("error handling a frame from %s", peer)
                if self._dirty:
                    self._flush_dirty()
                if sock.closed:
                    return
                if not is_router:
                    if greedy:
                        continue        # read to EAGAIN (the link is going down)
                    # A DEALER carries replies: let the caller this one wakes run first and
                    # look for more on the next iteration (the EVENTS check costs ~1 µs).
                    self._poke(sock)
                    return
                if not sock.get(_EVENTS) & _POLLIN:
                    return
            # Budget spent with frames left: continue on the next loop iteration.
            self._poke(sock)
        finally:
            self._draining = None
            self._corked -= 1
            if not self._corked and self._dirty:
                self._flush_dirty()

    def _peer_name(self, ident: bytes) -> str | None:
        try:
            name = ident.decode()
        except UnicodeDecodeError:
            return None
        if len(self._idents) > 65536:
            self._idents.clear()
        self._idents[ident] = name
        return name
