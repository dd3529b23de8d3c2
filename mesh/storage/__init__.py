"""Durable storage for a Raft node: log, snapshots and hard state in one folder.

Theory of operation
-------------------
The sans-I/O Raft core (``mesh/raft/``) never touches a disk; it asks its driver to
persist entries and hard state before certain messages may leave. The node runtime
carries those requests out on a :class:`RaftStorage`, one per node::

    st = RaftStorage.open(data_dir / "raft")
    st.truncate_suffix(i)          # only if the leader's entries conflict with ours
    st.append(ready.entries)       # in the page cache only ...
    st.set_hard_state(ready.hs)
    st.sync()                      # ... durable here: one fsync per Ready batch
    send(ready.messages_after_persist)

The folder holds::

    LOCK                       flock'ed while open: one process per folder
    hardstate                  term, vote, commit -- double-buffered slots (hardstate.py)
    00000000000000000001.log   log segments named by their first index (log.py, records.py)
    00000000000000000420.snap  the latest snapshot (snapshot.py)
    *.tmp                      an interrupted write; deleted on open

**Durability before acknowledgement.** ``append``, ``set_hard_state`` and (as far as the
caller can tell) ``truncate_suffix`` take effect in memory at once and on disk by the
time ``sync()`` returns; ``save_snapshot`` is durable on return. ``sync()`` syncs the log
*before* writing the hard state, so the durable commit index never points past the
durable log -- which open checks: if recovery ever finds the commit index beyond the
log, entries known to be committed are missing and open raises :class:`CorruptLog`
instead of serving a shorter log.

**Failure.** Any OSError while writing (ENOSPC, EIO, EFBIG, ...) raises
:class:`StorageError` and puts the storage in a *failed* state: every later write or
sync raises :class:`StorageError` too. After a failed fsync, Linux may already have
marked the dirty pages clean and dropped the error ("fsyncgate", PostgreSQL 2018): a
retry can "succeed" without the data ever reaching the disk, so retrying would turn an
I/O error into silent loss. The node must stop acknowledging; the way out is
``close()`` and a fresh :meth:`RaftStorage.open` (a restart), whose recovery trusts
only what is on disk. Reads keep working in the failed state; everything that a
``sync()`` had covered before the failure is on disk, later entries may only be in
the page cache. Bad arguments (a gap in indexes, a decreasing term, a second vote in
one term) raise ValueError and do not fail the storage.

Not thread-safe: one caller at a time (the runtime may run ``sync()`` in a worker
thread as long as nothing else touches the storage meanwhile).
"""
from __future__ import annotations

from mesh.storage.errors import Compacted, CorruptLog, StorageError
from mesh.storage.hardstate import HardState
from mesh.storage.raftstore import RaftStorage
from mesh.storage.records import MAX_PAYLOAD_BYTES, Entry
from mesh.storage.snapshot import SnapshotMeta

__all__ = ["RaftStorage", "Entry", "HardState", "SnapshotMeta", "StorageError", "CorruptLog",
           "Compacted", "MAX_PAYLOAD_BYTES"]
