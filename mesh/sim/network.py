"""A simulated datagram network between hosts of one :class:`~mesh.sim.world.World`.

Theory of operation
-------------------
A host attaches with an id, an address and a ``deliver(src_id, payload)`` function. A send
names the destination by id, by address, or both, and is decided on the spot: it is counted,
and then either dropped with a reason or scheduled for delivery after a random latency.
Each copy is checked again when it arrives, so a message in flight when its destination
crashes or a partition begins is lost, as it would be on a real wire.

Routing: with no ``dst_id`` (the sender knows only an address, e.g. a seed) the host at the
address gets it. With a ``dst_id`` the host of that id gets it; an empty address means "the
link the request came in on" (how a ZeroMQ ROUTER answers), and a non-empty one must be that
host's address, or the message is dropped as "wrong_host" (as an authenticated CURVE link to
an address now held by another key would fail).

Faults, all drawn from the world's ``"network"`` stream in send order (one seed, one run):

- **latency** ``latency_ms`` plus a random jitter (exponential or lognormal, mean
  ``jitter_ms``). Each message draws its own, so two messages on one link overtake each
  other whenever the second draws less; that is the natural reordering.
- **reorder**: with this probability a message is held back by up to ``reorder_ms`` more,
  which reorders it behind many later ones.
- **loss**: dropped with this probability.
- **duplicate**: delivered twice with this probability, the copy with its own latency.
- **partitions**: :meth:`Network.partition` splits hosts into groups that cannot reach each
  other. Hosts named in no group form one more group together, so ``partition({"a"})``
  isolates ``a`` from everyone else, and a host attached later joins that unnamed rest.
  :meth:`Network.cut` blocks single links, one way or both, on top of the groups.
  :meth:`Network.heal` removes groups and cuts alike.

Decisions a reader might expect otherwise:

- Delivery goes to whoever is attached under the destination id when the message
  *arrives*: a host restarted under the same id gets the datagrams sent to its previous
  life, as a restarted process on the same UDP port would. (A reply on a ZeroMQ link
  would die with the old connection instead; SWIM must cope with both.)
- Counters are per host id and survive detach/attach, so a restarted node keeps its totals.
  A drop is charged to the sender (it is the sender's message that was lost).

Per-message cost matters (a 1000-node run sends millions), so the hot path does no logging,
copies nothing and skips random draws for faults whose probability is zero.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from mesh.sim.world import World

DeliverFn = Callable[[str, bytes], None]
"""``deliver(src_id, payload)``: called by the network when a message reaches a host."""

JITTER_DISTRIBUTIONS = ("exponential", "lognormal")

# Drop reasons, as counted in NodeStats.dropped and shown in traces.
LOSS = "loss"                  # random loss (NetworkConfig.loss)
PARTITION = "partition"        # the two hosts are in different groups, or the link is cut
DOWN = "down"                  # nobody attached at the destination (crashed, detached)
SENDER_DOWN = "sender_down"    # a detached host tried to send (a driver bug, counted not raised)
WRONG_HOST = "wrong_host"      # another host than dst_id lives at the address


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """How the simulated network behaves; times in milliseconds, probabilities in [0, 1].

    One-way delay of a message = ``latency_ms + jitter`` where jitter has mean ``jitter_ms``
    (``jitter_dist`` "exponential", or "lognormal" with shape ``jitter_sigma``: heavier
    tail), plus ``U(0, reorder_ms)`` with probability ``reorder``; rounded to whole ms.
    """
    latency_ms: float = 1.0
    jitter_ms: float = 1.0
    jitter_dist: str = "exponential"
    jitter_sigma: float = 1.0
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 50.0

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms", "reorder_ms"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"NetworkConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("loss", "duplicate", "reorder"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"NetworkConfig.{name} is a probability in [0, 1], got {value!r}")
        if self.jitter_dist not in JITTER_DISTRIBUTIONS:
            raise ValueError(f"NetworkConfig.jitter_dist must be one of {JITTER_DISTRIBUTIONS}, "
                             f"got {self.jitter_dist!r}")
        if not (math.isfinite(self.jitter_sigma) and self.jitter_sigma > 0):
            raise ValueError(f"NetworkConfig.jitter_sigma must be > 0, got {self.jitter_sigma!r}")


@dataclass(slots=True)
class NodeStats:
    """Traffic of one host id (all its lives). Drops are charged to the sender."""
    msgs_sent: int = 0
    bytes_sent: int = 0
    msgs_delivered: int = 0
    bytes_delivered: int = 0
    duplicated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


@dataclass(slots=True)
class _Host:
    id: str
    address: str
    deliver: DeliverFn


class Network:
    """Hosts, links, faults and counters. See the module docstring for the rules."""

    __slots__ = ("world", "config", "stats", "trace", "_rng", "_hosts", "_by_address",
                 "_group", "_cut", "_blocking", "_lognormal_mu", "_exp_lambda")

    def __init__(self, world: World, config: NetworkConfig | None = None) -> None:
        self.world = world
        self.stats: dict[str, NodeStats] = {}
        self.trace: list[tuple[int, str, str, int, str]] | None = None
        """Set to a list to record ``(time_ms, src, dst, nbytes, outcome)`` for every send
        decision and arrival; outcome is "sent", "delivered" or a drop reason. Off by default:
        it costs a tuple per message."""
        self._rng = world.rng("network")
        self._hosts: dict[str, _Host] = {}
        self._by_address: dict[str, str] = {}
        self._group: dict[str, int] = {}
        self._cut: set[tuple[str, str]] = set()
        self._blocking = False
        self.set_config(config if config is not None else NetworkConfig())

    # -- configuration ----------------------------------------------------------------------

    def set_config(self, config: NetworkConfig) -> None:
        """Change the fault model from now on; messages already in flight keep their fate."""
        self.config = config
        # Derived once here, not per message.
        self._exp_lambda = 1.0 / config.jitter_ms if config.jitter_ms > 0 else 0.0
        # Lognormal with mean jitter_ms: mean = exp(mu + sigma^2 / 2).
        self._lognormal_mu = (math.log(config.jitter_ms) - config.jitter_sigma ** 2 / 2
                              if config.jitter_ms > 0 else 0.0)

    # -- hosts ------------------------------------------------------------------------------

    def attach(self, node_id: str, address: str, deliver_fn: DeliverFn) -> None:
        """Connect a host; it receives what arrives from now on (even if sent before)."""
        if node_id in self._hosts:
            raise ValueError(f"host {node_id!r} is already attached")
        other = self._by_address.get(address)
        if other is not None:
            raise ValueError(f"address {address!r} is already taken by {other!r}")
        self._hosts[node_id] = _Host(node_id, address, deliver_fn)
        self._by_address[address] = node_id
        self._stats(node_id)

    def detach(self, node_id: str) -> None:
        """Disconnect a host (crash, shutdown). Idempotent."""
        host = self._hosts.pop(node_id, None)
        if host is not None:
            del self._by_address[host.address]

    def is_attached(self, node_id: str) -> bool:
        return node_id in self._hosts

    def address_of(self, node_id: str) -> str | None:
        host = self._hosts.get(node_id)
        return host.address if host is not None else None

    def _stats(self, node_id: str) -> NodeStats:
        st = self.stats.get(node_id)
        if st is None:
            st = self.stats[node_id] = NodeStats()
        return st

    # -- partitions -------------------------------------------------------------------------

    def partition(self, *groups: Iterable[str]) -> None:
        """Split hosts into ``groups`` that cannot reach each other; hosts named in none form
        one more group together. Replaces any earlier partition; single-link cuts stay."""
        group: dict[str, int] = {}
        for number, members in enumerate(groups, start=1):
            for node_id in members:
                if node_id in group:
                    raise ValueError(f"{node_id!r} is named in two partition groups")
                group[node_id] = number
        self._group = group
        self._update_blocking()

    def cut(self, a: str, b: str, both_ways: bool = True) -> None:
        """Block the link a -> b (and b -> a unless ``both_ways`` is False)."""
        self._cut.add((a, b))
        if both_ways:
            self._cut.add((b, a))
        self._update_blocking()

    def heal_link(self, a: str, b: str, both_ways: bool = True) -> None:
        """Undo :meth:`cut` for a -> b (and b -> a unless ``both_ways`` is False)."""
        self._cut.discard((a, b))
        if both_ways:
            self._cut.discard((b, a))
        self._update_blocking()

    def heal(self) -> None:
        """Remove every partition group and every cut link."""
        self._group = {}
        self._cut = set()
        self._update_blocking()

    def can_reach(self, src: str, dst: str) -> bool:
        """Whether partitions and cuts let src's messages reach dst (ignores loss and hosts)."""
        group = self._group
        return group.get(src, 0) == group.get(dst, 0) and (src, dst) not in self._cut

    def _update_blocking(self) -> None:
        # Lets the hot path skip the partition lookups entirely in the common case.
        self._blocking = bool(self._group) or bool(self._cut)

    # -- traffic ----------------------------------------------------------------------------

    def send(self, src_id: str, dst_id: str | None, address: str, payload: bytes) -> None:
        """Send ``payload`` from ``src_id`` to host ``dst_id`` (``address``: "" for the link
        the request came in on, else it must match) or, with ``dst_id`` None, to the host at
        ``address``. Never raises for an unreachable destination: the drop is counted."""
        st = self.stats.get(src_id) or self._stats(src_id)
        nbytes = len(payload)
        st.msgs_sent += 1
        st.bytes_sent += nbytes
        if src_id not in self._hosts:
            self._drop(st, src_id, dst_id or address, nbytes, SENDER_DOWN)
            return
        if dst_id is None:
            target = self._by_address.get(address)
            if target is None:
                self._drop(st, src_id, address, nbytes, DOWN)
                return
        else:
            target = dst_id
            host = self._hosts.get(dst_id)
            if host is None:
                self._drop(st, src_id, dst_id, nbytes, DOWN)
                return
            if address and host.address != address:
                self._drop(st, src_id, dst_id, nbytes, WRONG_HOST)
                return
        if self._blocking and not self.can_reach(src_id, target):
            self._drop(st, src_id, target, nbytes, PARTITION)
            return
        cfg = self.config
        rng = self._rng
        if cfg.loss and rng.random() < cfg.loss:
            self._drop(st, src_id, target, nbytes, LOSS)
            return
        world = self.world
        if self.trace is not None:
            self.trace.append((world.now_ms, src_id, target, nbytes, "sent"))
        world.after(self._delay_ms(), self._arrive, src_id, target, payload)
        if cfg.duplicate and rng.random() < cfg.duplicate:
            st.duplicated += 1
            world.after(self._delay_ms(), self._arrive, src_id, target, payload)

    def _delay_ms(self) -> int:
        cfg = self.config
        rng = self._rng
        delay = cfg.latency_ms
        if self._exp_lambda:
            if cfg.jitter_dist == "exponential":
                delay += rng.expovariate(self._exp_lambda)
            else:
                delay += rng.lognormvariate(self._lognormal_mu, cfg.jitter_sigma)
        if cfg.reorder and rng.random() < cfg.reorder:
            delay += rng.uniform(0.0, cfg.reorder_ms)
        return int(delay + 0.5)

    def _arrive(self, src_id: str, dst_id: str, payload: bytes) -> None:
        # The world of the wire may have changed while the message flew: check again.
        host = self._hosts.get(dst_id)
        if host is None:
            self._drop(self.stats[src_id], src_id, dst_id, len(payload), DOWN)
            return
        if self._blocking and not self.can_reach(src_id, dst_id):
            self._drop(self.stats[src_id], src_id, dst_id, len(payload), PARTITION)
            return
        st = self.stats[dst_id]
        st.msgs_delivered += 1
        st.bytes_delivered += len(payload)
        if self.trace is not None:
            self.trace.append((self.world.now_ms, src_id, dst_id, len(payload), "delivered"))
        host.deliver(src_id, payload)

    def _drop(self, st: NodeStats, src: str, dst: str, nbytes: int, reason: str) -> None:
        st.dropped[reason] = st.dropped.get(reason, 0) + 1
        if self.trace is not None:
            self.trace.append((self.world.now_ms, src, dst, nbytes, reason))

    # -- summaries --------------------------------------------------------------------------

    def totals(self) -> NodeStats:
        """Sum of every host's counters."""
        out = NodeStats()
        for st in self.stats.values():
            out.msgs_sent += st.msgs_sent
            out.bytes_sent += st.bytes_sent
            out.msgs_delivered += st.msgs_delivered
            out.bytes_delivered += st.bytes_delivered
            out.duplicated += st.duplicated
            for reason, count in st.dropped.items():
                out.dropped[reason] = out.dropped.get(reason, 0) + count
        return out
