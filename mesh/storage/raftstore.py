"""RaftStorage: the log, snapshots and hard state of one Raft node in one folder (see
the package docstring for the theory of operation)."""
from __future__ import annotations

import errno as _errno
import fcntl
import logging
import os
from typing import Sequence

from mesh.storage.errors import Compacted, CorruptLog, StorageError

from mesh.storage.hardstate import HardState, HardStateFile, encode_slot
from mesh.storage.log import SegmentedLog, is_segment_file
from mesh.storage.records import Entry
from mesh.storage.snapshot import SnapshotMeta, SnapshotStore

log = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
DEFAULT_SEGMENT_BYTES = 64 << 20
DEFAULT_CACHE_BYTES = 4 << 20
_NO_SNAPSHOT = SnapshotMeta(0, 0, b"")


class RaftStorage:
    """The durable state of one Raft node. Build it with :meth:`open`."""

    def __init__(self, path: str, dir_fd: int, lock_fd: int, hard_state: HardStateFile,
                 snapshots: SnapshotStore, snapshot: SnapshotMeta, raft_log: SegmentedLog) -> None:
        self.path = path
        self._dir_fd = dir_fd
        self._lock_fd = lock_fd
        self._hs_file = hard_state
        self._hs = hard_state.state           # latest set_hard_state(); durable after sync()
        self._snapshots = snapshots
        self._snapshot = snapshot
        self._log = raft_log
        self._failure: BaseException | None = None
        self._closed = False

    # ----------------------------------------------------------------------------- open / close

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             fsync: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES) -> RaftStorage:
        """Open (creating if missing) the storage folder ``path`` and recover it.

        ``fsync=False`` skips every fsync but does everything else: for tests and benchmarks
        only, never for a node whose acknowledgements mean anything. ``cache_bytes`` bounds
        the in-memory cache of the newest entries. Raises :class:`CorruptLog` if what is on
        disk cannot be trusted, :class:`StorageError` for other I/O failures."""
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes must be at least 4096, not {segment_bytes}")
        folder = os.path.abspath(os.fspath(path))
        dir_fd = lock_fd = -1
        hs_file = raft_log = None
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
                if fsync:
                    _fsync_dir(os.path.dirname(folder))   # the new folder's own name
            dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            lock_fd = os.open(os.path.join(folder, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StorageError(f"{folder} is open elsewhere (another process or RaftStorage)") from None
            names = os.listdir(folder)
            for name in names:
                if name.endswith(".tmp"):
                    # a snapshot or hard state write that never reached its rename
                    log.warning("%s: removing leftover %s", folder, name)
                    os.unlink(os.path.join(folder, name))
            has_data = any(is_segment_file(n) or n.endswith(".snap") for n in names)
            hs_file = HardStateFile.open(folder, dir_fd, fsync=fsync, create=not has_data)
            snapshots = SnapshotStore(folder, dir_fd, fsync=fsync)
            # entries up to the commit index must be in the log unless a snapshot holds them
            committed = hs_file.state.commit
            must_keep = 0 if committed <= max(snapshots.indexes(), default=0) else committed
            raft_log = SegmentedLog.open(folder, dir_fd, segment_bytes=segment_bytes, fsync=fsync,
                                         cache_bytes=cache_bytes, must_keep=must_keep)
            snapshot = cls._recover_snapshot(snapshots, raft_log)
            cls._reconcile(folder, snapshot, raft_log)
            hs = hs_file.state
            if hs.commit > max(raft_log.last_index, snapshot.index):
                raise CorruptLog(f"{folder}: the hard state's commit index {hs.commit} is beyond the "
                                 f"log (last index {raft_log.last_index}, snapshot {snapshot.index}): "
                                 "committed entries are missing", path=folder)
            st = cls(folder, dir_fd, lock_fd, hs_file, snapshots, snapshot, raft_log)
        except BaseException as exc:
            for closer in (raft_log, hs_file):
                if closer is not None:
                    closer.close()
            for fd in (lock_fd, dir_fd):
                if fd >= 0:
                    os.close(fd)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot open {folder}: {exc}") from exc
            raise
        log.info("opened %s: entries %d..%d, snapshot %d, term %d, commit %d%s", folder,
                 st.first_index, st.last_index, snapshot.index, hs.term, hs.commit,
                 f", cut a torn tail of {raft_log.recovered_truncated_bytes} bytes"
                 if raft_log.recovered_truncated_bytes else "")
        return st

    @staticmethod
    def _recover_snapshot(snapshots: SnapshotStore, raft_log: SegmentedLog) -> SnapshotMeta:
        """The newest snapshot that checks out. An older one stands in for a corrupt newer
        one only if the log still holds every entry after it up to the newer one's index."""
        indexes = snapshots.indexes()
        corrupt: list[tuple[int, CorruptLog]] = []
        for index in indexes:
            try:
                meta, _ = snapshots.read(index, with_data=False)
            except CorruptLog as exc:
                corrupt.append((index, exc))
                continue
            if corrupt:
                newest_bad = corrupt[0][0]
                covered = (raft_log.segments and raft_log.first_index <= index + 1
                           and raft_log.last_index >= newest_bad)
                if not covered:
                    raise corrupt[0][1]
                log.warning("snapshot %d is corrupt (%s); falling back to snapshot %d, the log "
                            "still holds entries %d..%d", newest_bad, corrupt[0][1], index,
                            index + 1, raft_log.last_index)
            else:
                # a crash between a new snapshot's rename and the old one's removal
                for older in indexes:
                    if older < index:
                        os.unlink(snapshots.path(older))
            return meta
        if corrupt:
            raise corrupt[0][1]
        return _NO_SNAPSHOT

    @staticmethod
    def _reconcile(folder: str, snapshot: SnapshotMeta, raft_log: SegmentedLog) -> None:
        """Fit the recovered log to the snapshot, finishing an interrupted compaction or discard."""
        s = snapshot.index
        if not raft_log.segments:
            raft_log.reset(s + 1)
            return
        first = raft_log.segments[0].first_index
        if first > s + 1:
            raise CorruptLog(f"{folder}: the log starts at index {first} but the snapshot ends at "
                             f"{s}: entries {s + 1}..{first - 1} are missing", path=folder)
        if raft_log.last_index < s or (s >= first and raft_log.term(s) != snapshot.term):
            # the snapshot replaced a log it does not extend (a leader's InstallSnapshot);
            # what is left is the remainder of that discard, interrupted by a crash
            log.warning("%s: log %d..%d does not extend snapshot %d (term %d); discarding it", folder,
                        first, raft_log.last_index, s, snapshot.term)
            raft_log.reset(s + 1)
        elif s >= first:
            raft_log.compact(s)

    def close(self) -> None:
        """Close every file (does not sync: unsynced appends were never promised). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._log.close()
        self._hs_file.close()
        os.close(self._lock_fd)   # releases the flock
        os.close(self._dir_fd)

    def __enter__(self) -> RaftStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------- state

    @property
    def hard_state(self) -> HardState:
        """The latest hard state set (durable once ``sync()`` returned after setting it)."""
        return self._hs

    @property
    def first_index(self) -> int:
        """The first index still in the log: ``snapshot.index + 1``."""
        return self._snapshot.index + 1

    @property
    def last_index(self) -> int:
        """The last index appended (``snapshot.index`` if the log is empty)."""
        return self._log.last_index

    @property
    def last_term(self) -> int:
        return self.term_at(self.last_index)

    @property
    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's metadata; index 0 and term 0 when there is none."""
        return self._snapshot

    @property
    def recovered_truncated_bytes(self) -> int:
        """Bytes of torn tail that the last open cut off (0 if the log was clean)."""
        return self._log.recovered_truncated_bytes

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def failure(self) -> BaseException | None:
        """The OSError that failed the storage, if any."""
        return self._failure

    # ----------------------------------------------------------------------------- reads

    def term_at(self, index: int) -> int:
        """The term of entry ``index``; the snapshot's term at ``snapshot.index`` (0 at 0).

        Raises :class:`Compacted` below the snapshot and IndexError past the last entry."""
        s = self._snapshot
        if index == s.index:
            return s.term
        if index < s.index:
            raise Compacted(f"entry {index} is compacted into snapshot {s.index}")
        if index > self._log.last_index:
            raise IndexError(f"entry {index} is past the last index {self._log.last_index}")
        return self._log.term(index)

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries ``[lo, hi)``. With ``max_bytes``, as many as fit in that many bytes of
        records (on-disk size: 28 + len(data) each), but at least one.

        Raises :class:`Compacted` if ``lo < first_index``, IndexError if ``hi > last_index + 1``,
        ValueError if ``lo > hi``, :class:`CorruptLog` if a record no longer checks out."""
        if lo > hi:
            raise ValueError(f"entries({lo}, {hi}): lo > hi")
        if lo < self.first_index:
            raise Compacted(f"entries from {lo} are compacted; the log starts at {self.first_index}")
        if hi > self._log.next_index:
            raise IndexError(f"entries({lo}, {hi}): the last index is {self._log.last_index}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        if lo == hi:
            return []
        self._check_open()
        try:
            return self._log.entries(lo, hi, max_bytes)
        except OSError as exc:
            # a read error says nothing about durability: report it, do not fail the storage
            raise StorageError(f"reading entries {lo}..{hi - 1} from {self.path}: {exc}") from exc

    def load_snapshot(self) -> tuple[SnapshotMeta, bytes] | None:
        """The latest snapshot and its data, read and verified from disk; None if there is none."""
        if self._snapshot.index == 0:
            return None
        self._check_open()
        try:
            return self._snapshots.read(self._snapshot.index)
        except OSError as exc:
            raise StorageError(f"reading snapshot {self._snapshot.index}: {exc}") from exc

    # ----------------------------------------------------------------------------- writes

    def append(self, entries: Sequence[Entry]) -> None:
        """Append entries contiguous with ``last_index + 1`` whose terms never decrease.

        Written at once (one ``os.write`` per batch), durable only after :meth:`sync`."""
        if not entries:
            return
        self._check_writable()
        expected, prev_term = self._log.next_index, self.last_term
        for e in entries:
            if e.index != expected:
                raise ValueError(f"append: entry index {e.index}, expected {expected}")
            if e.term < prev_term:
                raise ValueError(f"append: entry {e.index} has term {e.term} below {prev_term}")
            expected, prev_term = expected + 1, e.term
        try:
            self._log.append(entries)
        except OSError as exc:
            self._fail("append", exc)

    def truncate_suffix(self, index: int) -> None:
        """Drop every entry ``>= index`` (a Raft conflict). Never below the commit index.

        Durable on return (the cut is fsynced at once: a crash must never leave old entries
        behind new ones), which more than satisfies "durable after sync()"."""
        self._check_writable()
        if index > self._log.next_index:
            raise ValueError(f"truncate_suffix({index}): past the end of the log ({self.last_index})")
        if index < self.first_index:
            raise ValueError(f"truncate_suffix({index}): below the log's first index {self.first_index}")
        if index <= self._hs.commit:
            raise ValueError(f"truncate_suffix({index}) would drop committed entries "
                             f"(commit index {self._hs.commit})")
        if index == self._log.next_index:
            return
        try:
            self._log.truncate_suffix(index)
        except OSError as exc:
            self._fail("truncate_suffix", exc)

    def set_hard_state(self, hs: HardState) -> None:
        """Record a new hard state; durable after :meth:`sync`.

        Refuses (ValueError) what Raft never does, since persisting it would break safety:
        a term going down, a second different vote in the same term, the commit going down
        or past the end of the log."""
        self._check_writable()
        cur = self._hs
        if hs.term < cur.term:
            raise ValueError(f"hard state term would go down: {cur.term} -> {hs.term}")
        if hs.term == cur.term and cur.vote is not None and hs.vote != cur.vote:
            raise ValueError(f"a second vote in term {hs.term}: {cur.vote!r} -> {hs.vote!r}")
        if hs.commit < cur.commit:
            raise ValueError(f"commit index would go down: {cur.commit} -> {hs.commit}")
        if hs.commit > max(self.last_index, self._snapshot.index):
            # open() would then (rightly) report committed entries as missing
            raise ValueError(f"commit index {hs.commit} is past the last index {self.last_index}")
        encode_slot(0, hs)   # ValueError now (vote too long, out of range), not at sync()
        self._hs = hs

    def sync(self) -> None:
        """Make every append, truncation and hard state set so far durable: the log first,
        then the hard state (so a durable commit index never points past the durable log).

        A change of the commit index alone is written but not fsynced: Raft needs only the
        term and the vote to survive a crash (a node relearns the commit index from the
        leader), and one fsync per write, not two, is most of the commit latency."""
        self._check_writable()
        try:
            self._log.sync()
            old = self._hs_file.state
            if self._hs != old:
                self._hs_file.write(self._hs, durable=(self._hs.term, self._hs.vote) != (old.term, old.vote))
        except OSError as exc:
            self._fail("sync", exc)

    def save_snapshot(self, meta: SnapshotMeta, data: bytes) -> None:
        """Store a snapshot atomically (durable on return), then compact the log up to
        ``meta.index``: if the log holds that entry with that term, the entries after it
        stay; otherwise (a snapshot from the leader that our log does not lead to) the whole
        log is discarded and the next append starts at ``meta.index + 1``."""
        self._check_writable()
        if meta.index <= self._snapshot.index:
            raise ValueError(f"snapshot {meta.index} is not newer than snapshot {self._snapshot.index}")
        log_ = self._log
        extends = meta.index <= log_.last_index and log_.term(meta.index) == meta.term
        try:
            self._snapshots.write(meta, data)
            self._snapshot = SnapshotMeta(meta.index, meta.term, meta.config)   # durable from here
            self._snapshots.remove_except(meta.index)   # only now that the new one is durable
            if extends:
                log_.compact(meta.index)
            else:
                log_.reset(meta.index + 1)
        except OSError as exc:
            self._fail("save_snapshot", exc)

    # ----------------------------------------------------------------------------- failure

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"{self.path}: storage is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self._failure is not None:
            raise StorageError(f"{self.path}: storage failed earlier ({self._failure}); "
                               "it accepts no more writes until reopened") from self._failure

    def _fail(self, op: str, exc: OSError) -> None:
        self._failure = exc
        name = _errno.errorcode.get(exc.errno or 0, "")
        log.error("%s: %s failed (%s%s); refusing every later write until reopened", self.path, op,
                  f"{name}: " if name else "", exc)
        raise StorageError(f"{self.path}: {op} failed: {exc}") from exc


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
