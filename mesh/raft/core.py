"""Raft as a sans-I/O state machine (the paper, the thesis, and etcd-raft's structure).

Theory of operation
-------------------
* **Inputs** change state: :meth:`Raft.tick` (time), :meth:`Raft.step` (a message),
  :meth:`Raft.propose`, :meth:`Raft.read_index`, :meth:`Raft.transfer_leadership`,
  :meth:`Raft.compact`. **Output** is pulled: :meth:`Raft.ready` returns one
  :class:`~mesh.raft.messages.Ready` batch (persist, then send, then apply), so the driver
  makes many inputs durable with one fsync. The driver finishes a Ready before it calls
  ``ready()`` again; the core counts what it handed out as durable from then on.
* **Terms.** A message from a higher term makes us a follower of that term, except vote
  requests that arrive while we still hear from a leader (check-quorum leases: a node cut
  off and back cannot depose a healthy leader) and pre-votes, which never change terms.
  Messages from lower terms are dropped (an append gets a reply, so a stale leader learns).
* **Elections.** A follower that hears nothing for a random timeout in ``election_timeout_ms``
  first runs a pre-vote (would a majority vote for me at term+1?) and only then a real
  election, so a partitioned node does not inflate terms. A vote goes to a candidate whose
  log is at least as up to date as ours (§5.4.1), once per term, and is durable before the
  reply leaves (the reply is in the same Ready as the hard state).
* **Replication.** The leader keeps a :class:`~mesh.raft.progress.Progress` per follower:
  probe one append at a time until the logs match, then pipeline up to ``max_inflight``
  appends of up to ``max_batch_bytes``. A follower that rejects tells us its last index so
  the leader skips back at once. A follower whose next entries were compacted gets the
  snapshot.
* **Commit** is the highest index a majority of voters have, and only if that entry is of
  the leader's current term (§5.4.2); a new leader appends a no-op to get there.
* **Linearizable reads (ReadIndex, thesis §6.4).** The leader notes its commit index,
  confirms it is still leader with one heartbeat round acknowledged by a majority, and the
  read may be served once that index is applied. A new leader waits until its no-op is
  committed before it answers reads. (Lease reads are not implemented.)
* **Leadership transfer.** The leader stops taking proposals, brings the target up to date,
  and sends it TIMEOUT_NOW; the target campaigns at once, past leases.
* **Check quorum.** A leader that has not heard from a majority within an election timeout
  steps down, so clients of a minority-side leader get ``NotLeader`` instead of waiting.

Nothing here reads a clock, a disk, a socket or a global RNG.
"""
from __future__ import annotations

from random import Random
from typing import Sequence

from mesh.errors import NotLeader, Overloaded, ProtocolError, Unavailable
from mesh.raft.config import RaftConfig
from mesh.raft.log import RaftLog
from mesh.raft.messages import (Append, AppendResp, ConfState, Entry, EntryKind, HardState, InstallSnapshot,
                                Message, ReadState, Ready, Role, Snapshot, SnapshotMeta, SnapshotResp,
                                TimeoutNow, Vote, VoteResp)
from mesh.raft.progress import Progress, ProgressState
from mesh.raft.quorum import committed_index, has_quorum, vote_result
from mesh.raft.wire import decode_conf, encode_conf

_FAR = 1 << 62


class Raft:
    """One member of a Raft group. See the module docstring."""

    def __init__(self, node_id: str, *, config: RaftConfig | None = None, rng: Random, now_ms: int,
                 conf: ConfState, hard_state: HardState = HardState(), snapshot: SnapshotMeta | None = None,
                 entries: Sequence[Entry] = (), applied: int = 0) -> None:
        self.id = node_id
        self.config = config or RaftConfig()
        self._rng = rng
        self.term = hard_state.term
        self.vote = hard_state.vote
        snap_index, snap_term = (snapshot.index, snapshot.term) if snapshot else (0, 0)
        self.log = RaftLog(snap_index, snap_term, entries, hard_state.commit, applied)
        self.conf = snapshot.conf if snapshot else conf
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._snapshot: Snapshot | None = None       # the latest the application gave us (to send)
        self._progress: dict[str, Progress] = {}
        self._votes: dict[str, bool] = {}
        self._now = now_ms
        self._election_deadline = 0
        self._heartbeat_deadline = _FAR
        self._quorum_deadline = _FAR
        self._transfer_to: str | None = None
        self._transfer_deadline = _FAR
        self._leaving_at = 0          # leader: index of an uncommitted configuration without us
        self._uncommitted_bytes = 0
        self._read_seq = 0
        self._reads_waiting: list[bytes] = []          # until the leader's no-op commits
        self._reads_pending: dict[int, tuple[bytes, int, set[str]]] = {}
        # the next Ready
        self._msgs: list[Message] = []
        self._new_entries: list[Entry] = []
        self._truncate_from: int | None = None
        self._pending_snapshot: Snapshot | None = None
        self._ready_reads: list[ReadState] = []
        self._append_due: set[str] = set()             # followers owed an append at the next ready()
        self._prev_hs = hard_state
        # A CONFIG entry in our log proves the one before it committed: its leader proposed it
        # only once no configuration in its log was uncommitted, and our log matches its log
        # up to it. A crash can lose the commit index while keeping the entries (the hard
        # state is written after them); restarting from the older commit index would put us
        # two configurations behind the newest in our log, whose majorities need not overlap:
        # we could win an election without entries a newer majority committed (found by the
        # simulator: leader completeness violated after a torn write, see
        # tests/sim/test_raft.py::test_a_restart_that_lost_its_commit_index_keeps_the_configuration_its_log_proves).
        seen_conf = False
        for i in range(self.log.last_index, self.log.commit, -1):
            if self.log.entry(i).kind == EntryKind.CONFIG:
                if seen_conf:
                    self.log.commit = i
                    break
                seen_conf = True
        # configuration entries between the snapshot and the commit index already took effect
        for e in self.log.slice(snap_index + 1, self.log.commit + 1) if self.log.commit > snap_index else ():
            if e.kind == EntryKind.CONFIG:
                self.conf = decode_conf(e.data)
        self._reset_election_timer()

    # -- inputs --------------------------------------------------------------------------

    @property
    def commit(self) -> int:
        return self.log.commit

    @property
    def last_index(self) -> int:
        return self.log.last_index

    def is_voter(self, node: str) -> bool:
        return node in self.conf.voters or node in self.conf.voters_outgoing

    def tick(self, now_ms: int) -> None:
        self._now = now_ms
        if self.role is Role.LEADER:
            if now_ms >= self._quorum_deadline:
                self._check_quorum()
            if self.role is Role.LEADER and now_ms >= self._heartbeat_deadline:
                self._heartbeat_deadline = now_ms + self.config.heartbeat_ms
                # carry the newest pending read: one lost round must not strand it
                self._broadcast_heartbeat(max(self._reads_pending, default=0))
            if now_ms >= self._transfer_deadline:
                self._transfer_to = None          # gave up: take proposals again
                self._transfer_deadline = _FAR
        elif now_ms >= self._election_deadline:
            if self.is_voter(self.id):
                self._campaign(pre=self.config.pre_vote, transfer=False)
            else:
                # A learner (or a node whose configuration lags) heard no leader for an
                # election timeout: its lease is over too. Keeping ``leader`` set would make it
                # ignore every vote request forever, and it may be a voter of a configuration
                # it has not learnt is committed: the voters could never elect a leader
                # (found by the simulator's raft-membership scenario).
                self.leader = None
                self._reset_election_timer()

    def next_deadline_ms(self) -> int:
        if self.role is Role.LEADER:
            return min(self._heartbeat_deadline, self._quorum_deadline, self._transfer_deadline)
        return self._election_deadline

    def propose(self, data: bytes, now_ms: int, kind: int = EntryKind.NORMAL) -> int:
        """Append a command; returns its index. Only the leader takes proposals."""
        self._now = now_ms
        if self.role is not Role.LEADER or self._transfer_to is not None:
            raise NotLeader(f"{self.id} is not the leader", leader=self.leader if self.leader != self.id else None)
        if self._leaving_at > self.log.commit:
            # A leader removing itself takes nothing after the change: when it commits, the
            # leader steps down, and a log longer than the remaining voters' would make it
            # refuse them its vote. Until they learn the change committed they still need
            # it (configurations take effect when committed): no leader could ever be
            # elected (found by the simulator's raft-membership scenario).
            raise NotLeader(f"{self.id} is leaving the configuration", leader=None)
        if self._uncommitted_bytes + len(data) > self.config.max_uncommitted_bytes:
            raise Overloaded(f"{self._uncommitted_bytes} bytes of proposals await commit")
        entry = Entry(self.log.last_index + 1, self.term, kind, data)
        self._append_own([entry])
        return entry.index

    def propose_conf_change(self, conf: ConfState, now_ms: int) -> int:
        """Propose a new configuration that differs from the current one by one voter or
        learner (single-server change, thesis §4.1). It takes effect when committed. Refused
        while another change is uncommitted, and until this leader has committed an entry of
        its own term (the fix to the single-server change bug, raft-dev 2015)."""
        if self.role is not Role.LEADER:
            raise NotLeader(f"{self.id} is not the leader", leader=self.leader)
        if self.log.term_at(self.log.commit) != self.term:
            raise Unavailable("the leader has not committed an entry of its term yet; retry shortly")
        for i in range(self.log.commit + 1, self.log.last_index + 1):
            if self.log.entry(i).kind == EntryKind.CONFIG:
                raise Unavailable("another membership change is in progress")
        old, new = set(self.conf.voters), set(conf.voters)
        if len(old ^ new) > 1 or conf.voters_outgoing:
            raise ValueError("a membership change adds or removes one voter at a time")
        if not new:
            raise ValueError("a configuration needs at least one voter")
        try:
            # what every node decodes when the entry commits: an id twice, or both voter and
            # learner, would make decode_conf raise there, on every node, for good
            decode_conf(encode_conf(conf))
        except ProtocolError as exc:
            raise ValueError(f"not a valid configuration: {exc}") from None
        index = self.propose(encode_conf(conf), now_ms, EntryKind.CONFIG)
        if self.id not in conf.voters:
            self._leaving_at = index
        return index

    def read_index(self, ctx: bytes, now_ms: int) -> None:
        """Register a linearizable read; a ReadState(ctx, index) comes out in a later Ready."""
        self._now = now_ms
        if self.role is not Role.LEADER:
            raise NotLeader(f"{self.id} is not the leader", leader=self.leader if self.leader != self.id else None)
        if self.log.term_at(self.log.commit) != self.term:
            self._reads_waiting.append(ctx)       # our no-op is not committed yet
            return
        self._start_read(ctx)

    def transfer_leadership(self, to: str, now_ms: int) -> None:
        self._now = now_ms
        if self.role is not Role.LEADER or to == self.id or not self.is_voter(to):
            return
        self._transfer_to = to
        self._transfer_deadline = now_ms + self.config.election_timeout_ms[0]
        pr = self._progress[to]
        if pr.match == self.log.last_index:
            self._send(TimeoutNow(self.id, to, self.term))
        else:
            self._send_append(to)

    def leader_unreachable(self, now_ms: int) -> None:
        """The runtime saw our link to the leader drop (its process died: the kernel closed
        the connection). Forget it and campaign within a heartbeat instead of waiting a whole
        election timeout. Safe on a false alarm: only a pre-vote the others would grant can
        raise the term, and the others still hear a live leader."""
        self._now = now_ms
        if self.role is Role.FOLLOWER and self.leader is not None and self.leader != self.id:
            self.leader = None      # out of its lease: our vote is free for the next election
            self._election_deadline = min(self._election_deadline,
                                          now_ms + self._rng.randrange(0, self.config.heartbeat_ms))

    def compact(self, snapshot: Snapshot) -> None:
        """The application took ``snapshot`` (at an applied index): drop the log before it."""
        meta = snapshot.meta
        if meta.index < self.log.snapshot_index:
            return
        if meta.index == self.log.snapshot_index:
            # a core restarted from storage learns the data of the snapshot it started from
            if meta.term != self.log.snapshot_term:
                raise ValueError(f"snapshot term {meta.term} at {meta.index} does not match the log")
            if self._snapshot is None:
                self._snapshot = snapshot
            return
        self.log.compact(meta.index, meta.term)
        self._snapshot = snapshot

    # -- output --------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._msgs or self._append_due or self._new_entries or self._truncate_from is not None
                    or self._pending_snapshot or self._ready_reads or self.log.commit > self.log.applied
                    or self._hard_state() != self._prev_hs)

    def ready(self) -> Ready:
        if self._append_due:
            # the proposals since the last Ready go out together: one append per follower
            due, self._append_due = self._append_due, set()
            for p in sorted(due):
                if p in self._progress and self.role is Role.LEADER:
                    self._send_append(p)
        hs = self._hard_state()
        rd = Ready(hard_state=hs if hs != self._prev_hs else None, truncate_from=self._truncate_from,
                   entries=self._new_entries, snapshot=self._pending_snapshot, messages=self._msgs,
                   reads=self._ready_reads, role=self.role, leader=self.leader, term=self.term)
        if self.log.commit > self.log.applied:
            lo = max(self.log.applied, self.log.snapshot_index) + 1
            rd.committed = self.log.slice(lo, self.log.commit + 1)
            self.log.applied = self.log.commit
        self._prev_hs = hs
        self._msgs, self._new_entries, self._ready_reads = [], [], []
        self._truncate_from = None
        self._pending_snapshot = None
        return rd

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    # -- messages ------------------------------------------------------------------------

    def step(self, m: Message, now_ms: int) -> None:
        self._now = now_ms
        if m.term > self.term:
            if isinstance(m, Vote):
                if self._in_lease() and not m.transfer:
                    return    # we hear from a leader: a vote request cannot be legitimate
                if m.pre:     # pre-votes never change terms
                    self._handle_vote(m)
                    return
            if not (isinstance(m, VoteResp) and m.pre and m.granted):
                # (a granted pre-vote answers in the term we would campaign in: no change)
                leader = m.src if isinstance(m, (Append, InstallSnapshot)) else None
                self._become_follower(m.term, leader)
        elif m.term < self.term:
            if isinstance(m, Append):
                self._send(AppendResp(self.id, m.src, self.term, False, m.prev_index, self.log.last_index))
            elif isinstance(m, Vote) and m.pre:
                self._send(VoteResp(self.id, m.src, self.term, False, pre=True))
            return
        if isinstance(m, Vote):
            self._handle_vote(m)
        elif isinstance(m, VoteResp):
            self._handle_vote_resp(m)
        elif isinstance(m, Append):
            self._handle_append(m)
        elif isinstance(m, AppendResp):
            self._handle_append_resp(m)
        elif isinstance(m, InstallSnapshot):
            self._handle_snapshot(m)
        elif isinstance(m, SnapshotResp):
            self._handle_snapshot_resp(m)
        elif isinstance(m, TimeoutNow):
            if self.is_voter(self.id) and self.role is not Role.LEADER:
                self._campaign(pre=False, transfer=True)

    def _send(self, m: Message) -> None:
        self._msgs.append(m)

    def _in_lease(self) -> bool:
        """Do we hear from a leader (or are one, which check-quorum keeps honest)? Then a
        vote request from a higher term comes from a node that was cut off, not from a real
        need for an election (thesis §9.6)."""
        if not self.config.check_quorum or self.leader is None:
            return False
        return self.role is Role.LEADER or (self.role is Role.FOLLOWER and self._now < self._election_deadline)

    # -- elections -----------------------------------------------------------------------

    def _reset_election_timer(self) -> None:
        lo, hi = self.config.election_timeout_ms
        self._election_deadline = self._now + self._rng.randrange(lo, hi)

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.role = Role.FOLLOWER
        self.leader = leader
        self._progress.clear()
        self._transfer_to = None
        self._transfer_deadline = _FAR
        self._reads_pending.clear()
        self._reads_waiting.clear()
        self._reset_election_timer()

    def _voters(self) -> list[str]:
        out = list(self.conf.voters)
        out += [v for v in self.conf.voters_outgoing if v not in out]
        return out

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            self.leader = None
            term = self.term
        self._votes = {self.id: True}
        self._reset_election_timer()
        if self._tally():
            return
        for v in self._voters():
            if v != self.id:
                self._send(Vote(self.id, v, term, self.log.last_index, self.log.last_term, pre, transfer))

    def _tally(self) -> bool:
        """Count votes; act on a decision. True if the election is decided."""
        won = vote_result(self.conf.voters, self._votes)
        if self.conf.voters_outgoing:
            other = vote_result(self.conf.voters_outgoing, self._votes)
            won = False if False in (won, other) else (True if won and other else None)
        if won is True:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return True
        if won is False:
            self._become_follower(self.term, None)
            return True
        return False

    def _handle_vote(self, m: Vote) -> None:
        can_vote = (self.vote == m.src or (self.vote is None and self.leader is None)
                    or (m.pre and m.term > self.term))
        if can_vote and self.log.up_to_date(m.last_index, m.last_term):
            # a granted pre-vote answers in the term asked about; a vote is durable first
            self._send(VoteResp(self.id, m.src, m.term, True, m.pre))
            if not m.pre:
                self.vote = m.src
                self._reset_election_timer()
        else:
            self._send(VoteResp(self.id, m.src, self.term, False, m.pre))

    def _handle_vote_resp(self, m: VoteResp) -> None:
        want = Role.PRE_CANDIDATE if m.pre else Role.CANDIDATE
        if self.role is not want:
            return
        self._votes[m.src] = m.granted
        self._tally()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self._progress = {v: Progress(self.log.last_index + 1) for v in self._members() if v != self.id}
        self._heartbeat_deadline = self._now
        self._quorum_deadline = (self._now + self.config.election_timeout_ms[0]
                                 if self.config.check_quorum else _FAR)
        self._uncommitted_bytes = 0
        self._leaving_at = 0
        for i in range(self.log.last_index, self.log.commit, -1):    # (see propose)
            e = self.log.entry(i)
            if e.kind == EntryKind.CONFIG:
                self._leaving_at = i if self.id not in decode_conf(e.data).voters else 0
                break
        self._append_own([Entry(self.log.last_index + 1, self.term, EntryKind.NOOP)])

    def _members(self) -> list[str]:
        out = self._voters()
        out += [x for x in self.conf.learners if x not in out]
        return out

    def _check_quorum(self) -> None:
        active = [p for p, pr in self._progress.items() if pr.recent_active] + [self.id]
        ok = has_quorum(self.conf.voters, active) and has_quorum(self.conf.voters_outgoing, active)
        for pr in self._progress.values():
            pr.recent_active = False
        if not ok:
            self._become_follower(self.term, None)
            return
        self._quorum_deadline = self._now + self.config.election_timeout_ms[0]

    # -- replication (leader) ------------------------------------------------------------

    def _append_own(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._new_entries.extend(entries)
        self._uncommitted_bytes += sum(len(e.data) for e in entries)
        if not self._maybe_commit():
            self._append_due.update(self._progress)     # sent by ready(), batched

    def _send_append(self, to: str, heartbeat: bool = False) -> bool:
        pr = self._progress[to]
        if pr.paused(self.config.max_inflight) and not heartbeat:
            return False
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:
            return self._send_snapshot(to, pr)
        if pr.next > self.log.last_index and not heartbeat:
            return False
        entries = tuple(self.log.slice(pr.next, self.log.last_index + 1, self.config.max_batch_bytes)) \
            if pr.next <= self.log.last_index else ()
        self._send(Append(self.id, to, self.term, prev, prev_term, entries, self.log.commit))
        if entries:
            if pr.state is ProgressState.REPLICATE:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
            else:
                pr.probe_sent = True
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self._snapshot
        if snap is None or pr.state is ProgressState.SNAPSHOT:
            return False
        pr.become_snapshot(snap.meta.index, self._now)
        self._send(InstallSnapshot(self.id, to, self.term, snap))
        return True

    def _broadcast_heartbeat(self, ctx: int) -> None:
        """A heartbeat has no entries and no log check; it carries the commit index as far
        as the follower is known to match, and (as prev_index) how far we had sent it. Its
        reply reports the follower's last index and echoes that mark: what was sent before
        the heartbeat arrived before it (one ordered link), so a follower short of the mark
        lost appends, while appends sent since are merely in flight (see
        _handle_heartbeat_resp)."""
        for to, pr in self._progress.items():
            self._send(Append(self.id, to, self.term, pr.next - 1, 0, (), min(self.log.commit, pr.match), ctx, True))

    def _handle_append_resp(self, m: AppendResp) -> None:
        if self.role is not Role.LEADER:
            return
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.ctx:
            self._read_acked(m.ctx, m.src)
        if m.heartbeat:
            self._handle_heartbeat_resp(m.src, pr, m.index, m.hint)
            return
        if not m.success:
            if pr.state is ProgressState.REPLICATE and m.index <= pr.match:
                return                              # stale rejection
            if pr.state is ProgressState.PROBE and m.index != pr.next - 1:
                return
            pr.become_probe()
            pr.next = max(pr.match + 1, min(m.index, m.hint + 1))
            self._send_append(m.src)
            return
        if pr.acked(m.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            self._maybe_commit()
            if self._progress.get(m.src) is not pr:
                # the commit applied a configuration without m.src, or without us (we stepped
                # down): there is nothing more to send it (found by the simulator's
                # raft-membership scenario: a KeyError here)
                return
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = False
        while self._send_append(m.src):
            pass
        if m.src == self._transfer_to and pr.match == self.log.last_index:
            self._send(TimeoutNow(self.id, m.src, self.term))

    def _handle_heartbeat_resp(self, src: str, pr: Progress, follower_last: int, sent: int) -> None:
        """Once per heartbeat: resend what the follower should have by now but lacks.
        ``sent``: how far we had sent it when the heartbeat left (its echo)."""
        sent = min(sent, pr.next - 1)
        if pr.state is ProgressState.PROBE:
            pr.probe_sent = False                 # the probe or its reply was lost: probe again
        elif pr.state is ProgressState.REPLICATE:
            if follower_last < sent and pr.match < self.log.last_index:
                # appends sent before the heartbeat have not arrived: lost; resend from its end
                pr.become_probe()
                pr.next = max(pr.match + 1, follower_last + 1)
            elif pr.match < sent:
                # it may have it all and only its reply was lost: an empty append at the end
                # of what we sent is checked against its log and draws a fresh reply
                self._send_append(src, heartbeat=True)
                return
        elif self._now - pr.snapshot_sent_ms >= self.config.election_timeout_ms[1]:
            # no reply to the snapshot for a while: lost, or its reply was. Probe again from
            # what we know matches (a long log on the follower proves nothing: it may diverge).
            pr.pending_snapshot = 0
            pr.become_probe()
        if pr.match < self.log.last_index:
            while self._send_append(src):
                pass

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a majority has, if it is of our term (§5.4.2)."""
        match = {p: pr.match for p, pr in self._progress.items()}
        match[self.id] = self.log.last_index
        index = min(committed_index(self.conf.voters, match), committed_index(self.conf.voters_outgoing, match))
        if index <= self.log.commit or self.log.term_at(index) != self.term:
            return False
        committed = self.log.slice(self.log.commit + 1, index + 1)
        # only this term's proposals were counted (the count restarts with each leadership)
        self._uncommitted_bytes = max(0, self._uncommitted_bytes
                                      - sum(len(e.data) for e in committed if e.term == self.term))
        self.log.commit = index
        reconfigured = False
        for e in committed:
            if e.kind == EntryKind.CONFIG:
                self._apply_conf(decode_conf(e.data))
                reconfigured = True
        if self._reads_waiting:
            waiting, self._reads_waiting = self._reads_waiting, []
            for ctx in waiting:
                self._start_read(ctx)
        self._broadcast_heartbeat(0)   # followers learn the new commit index now
        if reconfigured and self.role is Role.LEADER:
            # the new voters' majority may hold more already (a voter was removed): count
            # again now, or in a quiet cluster those entries wait for the next proposal
            # (found by the simulator's raft-membership scenario)
            self._maybe_commit()
        return True

    # -- replication (follower) ----------------------------------------------------------

    def _handle_append(self, m: Append) -> None:
        self.role = Role.FOLLOWER
        self.leader = m.src
        self._reset_election_timer()
        log = self.log
        if m.heartbeat:
            self._commit_to(min(m.commit, log.last_index))
            self._send(AppendResp(self.id, m.src, self.term, True, log.last_index, m.prev_index, m.ctx, True))
            return
        if m.prev_index < log.commit:
            self._send(AppendResp(self.id, m.src, self.term, True, log.commit, ctx=m.ctx))
            return
        if not log.matches(m.prev_index, m.prev_term):
            self._send(AppendResp(self.id, m.src, self.term, False, m.prev_index, log.last_index, m.ctx))
            return
        if m.entries:
            first_new, truncated = log.truncate_and_append(m.entries)
            if first_new:
                # the next Ready persists [first_new, last]; what it held from there is stale
                self._new_entries = [e for e in self._new_entries if e.index < first_new]
                if truncated:   # (the driver drops durable entries from here; none may be there yet)
                    self._truncate_from = first_new if self._truncate_from is None else min(self._truncate_from, first_new)
                self._new_entries.extend(log.slice(first_new, log.last_index + 1))
        last_new = m.prev_index + len(m.entries)
        self._commit_to(min(m.commit, last_new))
        self._send(AppendResp(self.id, m.src, self.term, True, last_new, ctx=m.ctx))

    def _commit_to(self, index: int) -> None:
        """Follower: move the commit index forward; configurations take effect as they commit."""
        log = self.log
        if index <= log.commit:
            return
        for e in log.slice(log.commit + 1, index + 1):
            if e.kind == EntryKind.CONFIG:
                self._apply_conf(decode_conf(e.data))
        log.commit = index

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        self.role = Role.FOLLOWER
        self.leader = m.src
        self._reset_election_timer()
        meta = m.snapshot.meta
        if meta.index <= self.log.commit:
            self._send(SnapshotResp(self.id, m.src, self.term, self.log.commit))
            return
        if self.log.matches(meta.index, meta.term):
            self._commit_to(meta.index)            # we have it all already
        else:
            self.log.restore(meta.index, meta.term)
            self._pending_snapshot = m.snapshot
            self._new_entries = []
            self._truncate_from = None
            self.conf = meta.conf
        self._snapshot = m.snapshot
        self._send(SnapshotResp(self.id, m.src, self.term, meta.index))

    def _handle_snapshot_resp(self, m: SnapshotResp) -> None:
        pr = self._progress.get(m.src) if self.role is Role.LEADER else None
        if pr is None:
            return
        pr.recent_active = True
        pr.acked(m.index)
        pr.become_probe()
        self._send_append(m.src)

    # -- reads ---------------------------------------------------------------------------

    def _start_read(self, ctx: bytes) -> None:
        if not self._progress or len(self._voters()) == 1:
            self._ready_reads.append(ReadState(ctx, self.log.commit))
            return
        self._read_seq += 1
        self._reads_pending[self._read_seq] = (ctx, self.log.commit, {self.id})
        self._broadcast_heartbeat(self._read_seq)

    def _read_acked(self, seq: int, voter: str) -> None:
        pending = self._reads_pending.get(seq)
        if pending is None:
            return
        pending[2].add(voter)
        if has_quorum(self.conf.voters, pending[2]) and has_quorum(self.conf.voters_outgoing, pending[2]):
            for s in sorted(k for k in self._reads_pending if k <= seq):   # earlier reads are confirmed too
                ctx, index, _ = self._reads_pending.pop(s)
                self._ready_reads.append(ReadState(ctx, index))

    # -- membership ----------------------------------------------------------------------

    def match_index(self, node: str) -> int | None:
        """On the leader: the last index ``node`` is known to hold (None: not a member)."""
        if node == self.id:
            return self.log.last_index
        pr = self._progress.get(node) if self.role is Role.LEADER else None
        return None if pr is None else pr.match

    def _apply_conf(self, conf: ConfState) -> None:
        self.conf = conf
        if self.role is Role.LEADER:
            for m in self._members():
                if m != self.id and m not in self._progress:
                    # Probe from our last entry, not past it: a probe past the end carries
                    # nothing, _send_append sends none, and in a quiet cluster the new member
                    # never got its log (found by the simulator's raft-membership scenario).
                    self._progress[m] = Progress(max(1, self.log.last_index))
            for p in [p for p in self._progress if p not in self._members()]:
                del self._progress[p]
            if not self.is_voter(self.id):
                # the remaining voters learn the commit (so the new configuration) now: until
                # then they count our vote, and we may be gone
                self._broadcast_heartbeat(0)
                self._become_follower(self.term, None)

