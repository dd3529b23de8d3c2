"""Raft safety checkers: what must hold after every event of a simulated run, checked
incrementally, at the moment each fact is observed.

Theory of operation
-------------------
The harness (:class:`mesh.sim.raft.RaftCluster`) tells one :class:`RaftChecker` every fact
that a Raft safety property speaks about, as it happens: a node is leader of a term, a node's
log gained or lost entries, a node applied an entry, a node's hard state changed. Each call
checks only what that fact could break, against small global maps, so checking after every
event costs about as much as a dict lookup per entry:

- **Election safety** (Raft §5.2): at most one leader per term, over the whole run.
  ``leaders[term]`` remembers who led each term.
- **Vote safety** (what election safety rests on): a node never grants its vote to two
  candidates in one term, across restarts too, and the vote is durable before the grant
  leaves. Checked on every durable hard state, and on every granted vote sent: the node's
  disk must then hold that term and that vote (or a later term).
- **Log matching** (§5.3): each log entry gets a chain value ``chain(i) = H(chain(i - 1),
  term, kind, data)``; ``chains[(index, term)]`` keeps the first chain value seen for that
  (index, term) anywhere. Two logs that share an (index, term) must then share the chain
  value, which covers the entry's data *and* every entry before it: identical prefixes, in
  O(1) per appended entry. (``H`` is Python's ``hash``: one run, one process, comparison
  only; messages never show it.)
- **Leader completeness** (§5.4): every entry known committed when a node became leader is
  in that leader's log. "Known committed" is the set applied anywhere *at that moment*
  (an entry may legitimately become committed later, in a later term, and be absent from an
  older leader's log); the check runs on the leader's log as soon as the harness has seen
  the Ready that follows the election.
- **No committed entry is truncated**: a log dropping an entry that was applied somewhere,
  with its term, breaks leader completeness on that node (and log matching later).
- **State machine safety** (§5.4.3): no two nodes apply different entries at one index;
  each node applies indexes in order (a snapshot jumps ahead); an applied entry is in the
  applier's own log with the same term.
- **Durability** (ours: "nothing a client was told is committed may ever be lost"): when an
  entry is first applied anywhere, a majority of the voters of the configuration in force
  for it must hold it *durably* (log or snapshot; what survives a crash). This catches a
  leader that counts its own unsynced append, or a follower that acknowledges before its
  fsync. The configuration in force for entry ``i`` is that of the last CONFIG entry before
  ``i`` (the initial one if none); a majority of the configuration before that one also
  passes, because a configuration takes effect when committed, so an entry committed
  together with the CONFIG entry just before it is counted by the old voters, and the two
  differ by one voter, so their majorities overlap. Learners, removed nodes and spares never
  count. :meth:`check_acknowledged` checks the end-to-end form after the cluster settled:
  every acknowledged entry is applied on every member.
- **Configuration safety** (single-server changes, thesis §4.1): each configuration applied
  (committed) differs from the one before it by at most one voter and has a voter; and a
  leader votes in its own configuration -- once the change that removes it is committed, it
  steps down (:meth:`on_leader_conf`). Configurations are learnt from the applied CONFIG
  entries, in index order, which state machine safety makes the same on every node.

A violation raises :class:`SafetyViolation` (an ``AssertionError``) whose message names the
property, the nodes, and the run (seed, virtual time, replay command) from ``where()``.
The checker never reaches into a core: the harness passes it log views (anything with
:class:`LogView`'s four members).
"""
from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Iterable, Mapping, Protocol

from mesh.errors import ProtocolError
from mesh.raft.messages import ConfState, Entry, EntryKind, Role, SnapshotMeta
from mesh.raft.wire import decode_conf


class SafetyViolation(AssertionError):
    """A Raft safety property failed; the message says which, where and how to replay."""


class LogView(Protocol):
    """What the checker reads of a node's log (the harness's mirror of it, or its disk)."""

    snap_index: int
    snap_term: int

    @property
    def last_index(self) -> int: ...

    def term_at(self, index: int) -> int | None:
        """The term of the entry at ``index``; the snapshot's term at ``snap_index``; None
        below the snapshot (compacted) or beyond the end."""
        ...


def chain_hash(prev: int, entry: Entry) -> int:
    """The log-matching chain value of ``entry`` after a log whose chain value is ``prev``."""
    return hash((prev, entry.term, entry.kind, entry.data))


def holds(log: LogView, index: int, term: int) -> bool:
    """Whether ``log`` holds the entry (index, term), in its entries or under its snapshot.
    Below the snapshot the term cannot be read back: a snapshot covering the index counts
    (its contents are checked when it is installed, see :meth:`RaftChecker.on_snapshot`)."""
    if index <= log.snap_index:
        return True
    return log.term_at(index) == term


class RaftChecker:
    """Checks the Raft safety properties incrementally; see the module docstring."""

    def __init__(self, voters: Iterable[str], where: Callable[[], str] = lambda: "",
                 durable: Callable[[], Mapping[str, LogView]] | None = None) -> None:
        self.voters = tuple(voters)
        """The voters of the initial configuration (before any CONFIG entry)."""
        self.conf_index: list[int] = [0]
        self.confs: list[ConfState] = [ConfState(self.voters)]
        """The configurations applied, in index order (``conf_index[k]`` is the CONFIG
        entry's index; the initial one at 0)."""
        self.where = where
        """Text naming the run (seed, time, replay command): appended to every violation."""
        self.durable = durable
        """The durable log of every node (what survives a crash), for the durability check
        at first apply; None switches that check off."""
        self.leaders: dict[int, str] = {}
        self.votes: dict[tuple[str, int], str] = {}
        self.grants: dict[tuple[str, int], str] = {}
        self.chains: dict[tuple[int, int], int] = {}
        self.applied: dict[int, Entry] = {}
        self.applied_by: dict[int, str] = {}
        self.committed_order: list[tuple[int, int]] = []
        self.max_applied = 0
        self.apply_chain: dict[int, int] = {0: 0}
        """index -> chain value of the applied sequence up to it (1..index): what a state
        machine snapshot at that index must have seen (the harness puts it in snapshots)."""
        self._pending_leaders: dict[str, tuple[int, int]] = {}
        self.checks = 0

    # -- reporting --------------------------------------------------------------------------

    def fail(self, prop: str, detail: str, nodes: Iterable[str] = ()) -> None:
        names = ", ".join(sorted(set(nodes)))
        where = self.where()
        raise SafetyViolation(f"{prop} violated: {detail}"
                              + (f"\n  nodes: {names}" if names else "")
                              + (f"\n  {where}" if where else ""))

    # -- election safety, votes and leader completeness ------------------------------------

    def on_role(self, node: str, role: Role, term: int) -> None:
        """``node`` is in ``role`` at ``term`` now (called after every core call; cheap
        unless it is a new leader)."""
        if role != Role.LEADER:
            return
        self.checks += 1
        other = self.leaders.get(term)
        if other is None:
            self.leaders[term] = node
            # Leader completeness: what is committed now must be in its log. The harness
            # shows us the log with the next Ready (the election's own step may have left
            # appended entries unstable in the core).
            self._pending_leaders[node] = (term, len(self.committed_order))
        elif other != node:
            self.fail("election safety", f"two leaders in term {term}: {other} and {node}",
                      (other, node))

    def on_log(self, node: str, log: LogView) -> None:
        """``node``'s log (as the core holds it) after the harness took a Ready."""
        pending = self._pending_leaders.pop(node, None) if self._pending_leaders else None
        if pending is None:
            return
        term, known = pending
        self.checks += 1
        for index, eterm in self.committed_order[:known]:
            if not holds(log, index, eterm):
                self.fail("leader completeness",
                          f"{node} became leader of term {term} without committed entry "
                          f"{index} (term {eterm}, applied first by {self.applied_by[index]}); "
                          f"its log has term {log.term_at(index)} there "
                          f"(snapshot {log.snap_index}, last index {log.last_index})",
                          (node, self.applied_by[index]))

    def on_leader_conf(self, node: str, term: int, conf: ConfState) -> None:
        """``node`` leads ``term`` with configuration ``conf`` (its committed one): it must
        vote in it (a leader whose removal committed steps down at once)."""
        self.checks += 1
        if node not in conf.voters and node not in conf.voters_outgoing:
            self.fail("configuration safety",
                      f"{node} leads term {term} but is no voter of its committed configuration "
                      f"(voters {', '.join(conf.voters) or 'none'}; learners "
                      f"{', '.join(conf.learners) or 'none'})", (node,))

    def conf_for(self, index: int) -> tuple[ConfState, ConfState | None]:
        """The configuration in force for entry ``index`` (that of the last CONFIG entry
        applied before it, or the initial one), and the one before that (None if none)."""
        k = bisect_left(self.conf_index, index) - 1
        return self.confs[k], (self.confs[k - 1] if k > 0 else None)

    def on_crash(self, node: str) -> None:
        """The node's volatile state is gone (a leader check waiting for its log is moot)."""
        self._pending_leaders.pop(node, None)

    def on_hard_state(self, node: str, term: int, vote: str | None, durable: bool = False) -> None:
        """``node`` holds this term and vote (in memory, or ``durable``-ly on its disk)."""
        if vote is None:
            return
        self.checks += 1
        key = (node, term)
        other = self.votes.get(key)
        if other is None:
            self.votes[key] = vote
        elif other != vote:
            self.fail("vote safety", f"{node} voted for {other} and for {vote} in term {term}"
                      + (" (after a restart)" if durable else ""), (node, other, vote))

    def on_grant(self, node: str, term: int, candidate: str, disk_term: int,
                 disk_vote: str | None) -> None:
        """``node`` sends a granted (real) vote for ``candidate`` in ``term``; its disk holds
        ``disk_term`` and ``disk_vote`` now."""
        self.checks += 1
        if disk_term < term or (disk_term == term and disk_vote != candidate):
            self.fail("vote safety",
                      f"{node} grants its vote in term {term} to {candidate}, but its disk holds "
                      f"term {disk_term}, vote {disk_vote}: a crash now would let it vote again",
                      (node, candidate))
        key = (node, term)
        other = self.grants.get(key)
        if other is None:
            self.grants[key] = candidate
        elif other != candidate:
            self.fail("vote safety", f"{node} granted its vote in term {term} to {other} and "
                      f"to {candidate}", (node, other, candidate))

    # -- log matching -----------------------------------------------------------------------

    def on_append(self, node: str, entry: Entry, chain: int) -> None:
        """``node``'s log now holds ``entry`` at the end, with log-matching ``chain`` value."""
        key = (entry.index, entry.term)
        seen = self.chains.get(key)
        if seen is None:
            self.chains[key] = chain
        elif seen != chain:
            self.fail("log matching",
                      f"{node} holds an entry at index {entry.index}, term {entry.term} whose "
                      f"data or preceding log differs from another node's entry there", (node,))

    def chain_of(self, index: int, term: int) -> int | None:
        """The chain value of (index, term) if any log ever held it (0 for the empty log)."""
        if index == 0:
            return 0
        return self.chains.get((index, term))

    def on_truncate(self, node: str, log: LogView, from_index: int) -> None:
        """``node`` is about to drop its entries from ``from_index`` on (``log`` before)."""
        if from_index > self.max_applied:
            return
        self.checks += 1
        for index in range(max(from_index, log.snap_index + 1),
                           min(log.last_index, self.max_applied) + 1):
            committed = self.applied.get(index)
            if committed is not None and log.term_at(index) == committed.term:
                self.fail("leader completeness",
                          f"{node} truncates its log from {from_index}, dropping committed entry "
                          f"{index} (term {committed.term})", (node,))

    def on_snapshot(self, node: str, meta: SnapshotMeta, apply_chain: int | None) -> None:
        """``node`` installs a snapshot; ``apply_chain`` is the applied-sequence chain value
        its state machine data carries (None: unknown to the harness)."""
        self.checks += 1
        committed = self.applied.get(meta.index)
        if committed is not None and committed.term != meta.term:
            self.fail("state machine safety",
                      f"{node} installs a snapshot at index {meta.index} term {meta.term}, but "
                      f"the entry applied there has term {committed.term}", (node,))
        want = self.apply_chain.get(meta.index)
        if apply_chain is not None and want is not None and want != apply_chain:
            self.fail("state machine safety",
                      f"{node} installs a snapshot at index {meta.index} whose state differs "
                      f"from the sequence applied elsewhere up to that index", (node,))

    # -- state machine safety and durability ------------------------------------------------

    def on_apply(self, node: str, entry: Entry, prev_applied: int, log: LogView,
                 apply_chain: int) -> None:
        """``node`` applied ``entry`` right after index ``prev_applied``; ``apply_chain`` is
        its applied-sequence chain value after it."""
        index = entry.index
        if index != prev_applied + 1:
            self.fail("state machine safety",
                      f"{node} applies index {index} after index {prev_applied} (out of order)",
                      (node,))
        if index > log.snap_index and log.term_at(index) != entry.term:
            self.fail("state machine safety",
                      f"{node} applies entry {index} (term {entry.term}) that its own log holds "
                      f"with term {log.term_at(index)}", (node,))
        first = self.applied.get(index)
        if first is None:
            self.applied[index] = entry
            self.applied_by[index] = node
            self.committed_order.append((index, entry.term))
            self.apply_chain[index] = apply_chain
            if index > self.max_applied:
                self.max_applied = index
            self._check_durable_majority(node, entry)
            if entry.kind == EntryKind.CONFIG:
                self._check_conf_change(node, entry)
        elif first != entry:
            self.fail("state machine safety",
                      f"{node} applies {_describe(entry)} at index {index}, but "
                      f"{self.applied_by[index]} applied {_describe(first)} there",
                      (node, self.applied_by[index]))
        elif self.apply_chain.get(index) != apply_chain:
            self.fail("state machine safety",
                      f"{node} reaches index {index} through a different applied sequence than "
                      f"{self.applied_by[index]}", (node, self.applied_by[index]))

    def _check_conf_change(self, node: str, entry: Entry) -> None:
        """A CONFIG entry is applied for the first time (all before it were): one voter at
        most changes, and the configuration is one."""
        self.checks += 1
        try:
            conf = decode_conf(entry.data)
        except ProtocolError as exc:
            self.fail("configuration safety",
                      f"{node} applies CONFIG entry {entry.index} that is no configuration: {exc}",
                      (node,))
        prev, _ = self.conf_for(entry.index)
        changed = set(prev.voters) ^ set(conf.voters)
        if len(changed) > 1 or conf.voters_outgoing:
            self.fail("configuration safety",
                      f"{node} applies CONFIG entry {entry.index} that changes voters "
                      f"{', '.join(sorted(changed))} at once (voters {', '.join(prev.voters)} -> "
                      f"{', '.join(conf.voters)}): two majorities need not overlap", (node,))
        self.conf_index.append(entry.index)
        self.confs.append(conf)

    def _check_durable_majority(self, node: str, entry: Entry) -> None:
        if self.durable is None:
            return
        self.checks += 1
        stores = self.durable()
        conf, before = self.conf_for(entry.index)
        for c in (conf, before):
            if c is None:
                continue
            have = [v for v in c.voters if v in stores and holds(stores[v], entry.index, entry.term)]
            if 2 * len(have) > len(c.voters):
                return
        have = [v for v in conf.voters if v in stores and holds(stores[v], entry.index, entry.term)]
        self.fail("durability",
                  f"{node} applies entry {entry.index} (term {entry.term}) that only "
                  f"{len(have)} of the {len(conf.voters)} voters in force hold durably "
                  f"({', '.join(have) or 'none'} of {', '.join(conf.voters)}"
                  + (f"; nor a majority of the configuration before, {', '.join(before.voters)}"
                     if before is not None else "")
                  + "): a crash could lose a committed entry", (node, *have))

    def check_acknowledged(self, acked: Iterable[tuple[int, bytes]],
                           applied_index: Mapping[str, int]) -> None:
        """End-to-end durability after the cluster settled: every acknowledged entry
        ``(index, data)`` is the one applied at its index, and every node in
        ``applied_index`` (node -> its applied index) has applied past it."""
        self.checks += 1
        for index, data in acked:
            entry = self.applied.get(index)
            if entry is None or entry.data != data:
                self.fail("durability",
                          f"an acknowledged proposal at index {index} ({data[:40]!r}) is not the "
                          f"entry applied there ({_describe(entry) if entry else 'nothing'})")
            behind = [n for n, a in applied_index.items() if a < index]
            if behind:
                self.fail("durability",
                          f"acknowledged entry {index} is not applied on {', '.join(behind)} "
                          f"(applied up to {', '.join(str(applied_index[n]) for n in behind)})",
                          behind)


def _describe(entry: Entry) -> str:
    return f"(term {entry.term}, kind {int(entry.kind)}, data {entry.data[:40]!r})"
