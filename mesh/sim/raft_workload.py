"""Simulated clients of a Raft cluster: keep operations in flight and record a
linearizability history (see :class:`Workload`)."""
from __future__ import annotations

from collections import Counter
from typing import Iterable

from mesh.sim.raft import ABSENT, Proposal, RaftCluster, command


# -- client workload --------------------------------------------------------------------------

class Workload:
    """Clients that each keep one KV operation in flight, recording a linearizability
    :class:`~mesh.sim.linearizability.History` (``history``).

    Every ``interval_ms`` (drawn from the ``clients`` stream) an idle client invokes one of
    put / get (through the log) / cas / read (ReadIndex) on a few keys, at the current
    leader. Outcomes: acked -> ``ok`` with the state machine's result; refused (no leader,
    NotLeader) or a different entry committed at its index -> ``fail``; the leader crashed
    or ``timeout_ms`` passed -> ``info`` (unknown). A read that is not served is ``info``.
    """

    def __init__(self, cluster: RaftCluster, clients: int = 3, keys: Iterable[str] = ("a", "b", "c"),
                 interval_ms: tuple[int, int] = (5, 40), timeout_ms: int = 2000,
                 mix: dict[str, int] | None = None) -> None:
        from mesh.sim.linearizability import History

        self.cluster = cluster
        self.history = History(clock=lambda: cluster.world.now_ms)
        self.keys = tuple(keys)
        self.interval_ms = interval_ms
        self.timeout_ms = timeout_ms
        self.mix = mix or {"put": 4, "get": 2, "cas": 2, "read": 2}
        self._rng = cluster.world.rng("clients")
        self._names = [f"c{i}" for i in range(clients)]
        self._busy: dict[str, int | None] = dict.fromkeys(self._names)
        self._running = False
        self._epoch = 0
        self._values = 0
        self.counts: Counter[str] = Counter()

    def start(self) -> None:
        self._running = True
        self._epoch += 1
        for c in self._names:
            self._next(c, self._epoch)

    def stop(self) -> None:
        """No new operations; the ones in flight still complete (or time out)."""
        self._running = False

    def _next(self, client: str, epoch: int) -> None:
        lo, hi = self.interval_ms
        self.cluster.world.after(self._rng.randint(lo, hi), self._issue, client, epoch)

    def _issue(self, client: str, epoch: int) -> None:
        if not self._running or epoch != self._epoch:
            return
        if self._busy[client] is None:
            self._invoke(client)
        self._next(client, epoch)

    def _invoke(self, client: str) -> None:
        c = self.cluster
        h = self.history
        rng = self._rng
        kind = rng.choices(list(self.mix), list(self.mix.values()))[0]
        key = rng.choice(self.keys)
        if kind == "read":
            op = h.invoke(client, "get", key)
            tag = f"r{op}".encode()
            node = c.read(key, lambda v, op=op: self._read_done(client, op, v), tag)
            self._started(client, op, node)
            return
        self._values += 1
        value = f"{client}.{self._values}"
        if kind == "put":
            op = h.invoke(client, "put", key, value)
            data = command(f"o{op}", "put", key, value)
        elif kind == "get":
            op = h.invoke(client, "get", key)
            data = command(f"o{op}", "get", key)
        else:
            # absent, or a value written lately (by anyone): some succeed, some fail
            recent = rng.randint(max(1, self._values - 6), self._values)
            expected = rng.choice((None, f"{rng.choice(self._names)}.{recent}"))
            op = h.invoke(client, "cas", key, value, expected=expected)
            data = command(f"o{op}", "cas", key, expected if expected is not None else ABSENT, value)
        placed = c.propose(data, on_done=lambda p, op=op: self._proposal_done(client, op, p))
        self._started(client, op, None if placed is None else placed[0])

    def _started(self, client: str, op: int, node: str | None) -> None:
        if node is None:
            self.history.fail(op)
            self.counts["fail"] += 1
            return
        self._busy[client] = op
        self.cluster.world.after(self.timeout_ms, self._timeout, client, op)

    def _finish(self, client: str, op: int, outcome: str, result: object = None) -> None:
        if self._busy.get(client) != op:
            return      # timed out already
        self._busy[client] = None
        self.counts[outcome] += 1
        if outcome == "ok":
            self.history.ok(op, result)
        elif outcome == "fail":
            self.history.fail(op)
        else:
            self.history.info(op)

    def _proposal_done(self, client: str, op: int, p: Proposal) -> None:
        if p.status == "acked":
            self._finish(client, op, "ok", p.result)
        elif p.status == "lost":
            self._finish(client, op, "fail")
        else:
            self._finish(client, op, "info")

    def _read_done(self, client: str, op: int, value: object) -> None:
        if value is None:
            self._finish(client, op, "info")
        else:
            self._finish(client, op, "ok", value[0])

    def _timeout(self, client: str, op: int) -> None:
        self._finish(client, op, "info")

    def check(self, timeout_s: float = 10.0):
        """Run the linearizability checker on the history; returns its CheckResult."""
        from mesh.sim.linearizability import check

        return check(self.history, "kv", timeout_s=timeout_s)
