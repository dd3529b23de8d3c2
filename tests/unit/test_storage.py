"""RaftStorage: log, snapshots and hard state on real files, with real fsync.

Faults are real where they can be made real without special hardware: ENOSPC from a tiny
tmpfs (needs root; skipped otherwise), EFBIG from RLIMIT_FSIZE in a child process. A failed
fsync (EIO) cannot be produced on demand without a device-mapper target, so that one test
replaces ``os.fdatasync`` -- the only mock here.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from mesh.errors import MeshError
from mesh.storage import (Compacted, CorruptLog, Entry, HardState, RaftStorage, SnapshotMeta,
                          StorageError)
from mesh.storage import records
from mesh.storage.hardstate import SLOT_BYTES
from mesh.storage.log import HEADER_BYTES
from mesh.storage.snapshot import SnapshotStore

ROOT = Path(__file__).resolve().parents[2]


def data_for(index: int, size: int | None = None) -> bytes:
    """Deterministic, index-specific bytes, so a misplaced record cannot pass for another."""
    n = (index * 37) % 150 + 1 if size is None else size
    return (b"%d|" % index * (n // 2 + 1))[:n]


def ent(index: int, term: int = 1, kind: int = 0, size: int | None = None) -> Entry:
    return Entry(index, term, kind, data_for(index, size))


def ents(lo: int, hi: int, term: int = 1, size: int | None = None) -> list[Entry]:
    return [ent(i, term, size=size) for i in range(lo, hi)]


def segment_files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix == ".log")


def fill(path: Path, n: int, *, batch: int = 10, segment_bytes: int = 64 << 20, size: int | None = None,
         commit: int = 0) -> list[Entry]:
    """A storage at ``path`` holding entries 1..n (synced), closed again."""
    written = ents(1, n + 1, size=size)
    with RaftStorage.open(path, segment_bytes=segment_bytes) as st:
        for i in range(0, n, batch):
            st.append(written[i:i + batch])
        st.set_hard_state(HardState(1, "n1", commit))
        st.sync()
    return written


def all_entries(st: RaftStorage) -> list[Entry]:
    return st.entries(st.first_index, st.last_index + 1)


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


# ------------------------------------------------------------------------------ basics


def test_errors_are_mesh_errors():
    assert issubclass(StorageError, MeshError)
    assert issubclass(CorruptLog, StorageError)
    assert issubclass(Compacted, MeshError) and not issubclass(Compacted, StorageError)


def test_fresh_open_creates_the_folder(tmp_path):
    path = tmp_path / "a" / "b" / "raft"
    with RaftStorage.open(path) as st:
        assert (st.first_index, st.last_index, st.last_term) == (1, 0, 0)
        assert st.hard_state == HardState(0, None, 0)
        assert st.term_at(0) == 0
        assert st.entries(1, 1) == []
        assert st.load_snapshot() is None
        assert st.recovered_truncated_bytes == 0
    assert sorted(p.name for p in path.iterdir()) == ["LOCK", "hardstate"]


def test_round_trip_across_reopen(tmp_path):
    written = ents(1, 51, size=None)
    with RaftStorage.open(tmp_path) as st:
        st.append(written[:1])
        st.append(written[1:30])
        st.append(written[30:])
        st.set_hard_state(HardState(3, "n2", 40))
        st.sync()
        assert all_entries(st) == written
    with RaftStorage.open(tmp_path) as st:
        assert (st.first_index, st.last_index, st.last_term) == (1, 50, 1)
        assert st.hard_state == HardState(3, "n2", 40)
        assert all_entries(st) == written
        assert st.entries(17, 18) == [written[16]]
        st.append([Entry(51, 2, 7, b"")])   # empty data, another kind
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert st.entries(50, 52) == [written[49], Entry(51, 2, 7, b"")]
        assert st.last_term == 2


def test_fsync_false_keeps_everything_but_the_fsync(tmp_path):
    written = ents(1, 21)
    with RaftStorage.open(tmp_path, fsync=False, segment_bytes=4096) as st:
        st.append(written)
        st.set_hard_state(HardState(1, None, 5))
        st.sync()
    with RaftStorage.open(tmp_path, fsync=False) as st:
        assert all_entries(st) == written
        assert st.hard_state == HardState(1, None, 5)


def test_append_must_be_contiguous_with_nondecreasing_terms(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        with pytest.raises(ValueError):
            st.append([ent(2)])                       # the log starts at 1
        st.append([ent(1, term=2), ent(2, term=2)])
        with pytest.raises(ValueError):
            st.append([ent(4, term=2)])               # gap
        with pytest.raises(ValueError):
            st.append([ent(3, term=2), ent(5, term=2)])
        with pytest.raises(ValueError):
            st.append([ent(3, term=1)])               # term goes down
        with pytest.raises(ValueError):
            st.append([Entry(3, 2, 0, "text")])       # type: ignore[arg-type]
        with pytest.raises(ValueError):
            st.append([Entry(3, 2, 1 << 32, b"")])    # kind is a u32
        with pytest.raises(ValueError):
            st.append([Entry(3, 2, 0, bytes(records.MAX_DATA_BYTES + 1))])
        assert not st.failed and st.last_index == 2
        st.append([])
        st.append([ent(3, term=3)])
        assert st.last_index == 3


def test_term_at_and_entry_range_errors(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 6, term=1) + ents(6, 11, term=2))
        assert [st.term_at(i) for i in range(0, 11)] == [0] + [1] * 5 + [2] * 5
        with pytest.raises(IndexError):
            st.term_at(11)
        with pytest.raises(IndexError):
            st.entries(5, 12)
        with pytest.raises(ValueError):
            st.entries(5, 4)
        with pytest.raises(Compacted):
            st.entries(0, 3)
        assert st.entries(11, 11) == []
        st.save_snapshot(SnapshotMeta(4, 1, b""), b"s")
        with pytest.raises(Compacted):
            st.entries(4, 6)
        with pytest.raises(Compacted):
            st.term_at(3)
        assert st.term_at(4) == 1 and st.term_at(5) == 1
        assert st.entries(5, 7) == [ent(5, 1), ent(6, 2)]


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_entries_max_bytes(tmp_path, cache_bytes):
    written = ents(1, 101, size=72)                  # 100 bytes on disk each
    with RaftStorage.open(tmp_path, segment_bytes=4096, cache_bytes=cache_bytes) as st:
        st.append(written)
        assert all(records.frame_size(e) == 100 for e in written)
        assert st.entries(1, 101, max_bytes=0) == written[:1]       # always at least one
        assert st.entries(1, 101, max_bytes=99) == written[:1]
        assert st.entries(1, 101, max_bytes=100) == written[:1]
        assert st.entries(1, 101, max_bytes=399) == written[:3]
        assert st.entries(30, 101, max_bytes=2000) == written[29:49]   # crosses a segment
        assert st.entries(1, 101, max_bytes=10 ** 9) == written
        assert st.entries(95, 98, max_bytes=10 ** 9) == written[94:97]


def test_segments_rotate_and_reads_cross_them(tmp_path):
    written = ents(1, 301, size=100)
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(written[:250])                     # one batch over many segments
        for e in written[250:]:
            st.append([e])
        st.sync()
        assert all_entries(st) == written
    files = segment_files(tmp_path)
    assert len(files) >= 10
    assert all(f.stat().st_size <= 4096 for f in files)
    assert int(files[0].stem) == 1
    with RaftStorage.open(tmp_path, segment_bytes=4096, cache_bytes=0) as st:
        assert all_entries(st) == written
        assert st.entries(33, 91) == written[32:90]


def test_truncate_suffix_then_append(tmp_path):
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(ents(1, 121, term=1, size=100))
        st.sync()
        st.truncate_suffix(101)
        assert st.last_index == 100
        st.append(ents(101, 111, term=2, size=50))
        st.sync()
        st.truncate_suffix(105)                     # inside the batch just written
        st.append(ents(105, 108, term=3, size=10))
        st.sync()
        expected = ents(1, 101, 1, 100) + ents(101, 105, 2, 50) + ents(105, 108, 3, 10)
        assert all_entries(st) == expected
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        assert all_entries(st) == expected
        assert st.last_term == 3
        # far back, into an earlier segment: later segment files go
        before = len(segment_files(tmp_path))
        st.truncate_suffix(40)
        assert len(segment_files(tmp_path)) < before
        st.append(ents(40, 45, term=4))
    with RaftStorage.open(tmp_path) as st:
        assert all_entries(st) == ents(1, 40, 1, 100) + ents(40, 45, 4)


def test_truncate_at_a_segment_start_removes_the_file(tmp_path):
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(ents(1, 101, size=100))
        st.sync()
        second = int(segment_files(tmp_path)[1].stem)
        st.truncate_suffix(second)
        assert [int(f.stem) for f in segment_files(tmp_path)] == [1]
        st.append(ents(second, second + 3, term=2))
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert st.last_index == second + 2 and st.term_at(second) == 2
        st.truncate_suffix(1)                        # everything
        assert st.last_index == 0 and segment_files(tmp_path) == []
        st.append(ents(1, 3, term=5))
    with RaftStorage.open(tmp_path) as st:
        assert all_entries(st) == ents(1, 3, term=5)


def test_truncate_suffix_guards(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 11))
        st.set_hard_state(HardState(1, None, 5))
        with pytest.raises(ValueError):
            st.truncate_suffix(5)                    # committed
        with pytest.raises(ValueError):
            st.truncate_suffix(13)                   # past the end
        st.truncate_suffix(11)                       # nothing to drop
        assert st.last_index == 10
        st.truncate_suffix(6)
        assert st.last_index == 5 and not st.failed


def test_hard_state_persists_and_alternates_slots(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 21))
        for term in range(1, 8):
            st.set_hard_state(HardState(term, f"n{term}", term * 2))
            st.sync()
        st.set_hard_state(HardState(8, None, 20))   # set but never synced
    with RaftStorage.open(tmp_path) as st:
        assert st.hard_state == HardState(7, "n7", 14)
        st.set_hard_state(HardState(7, "n7", 15))
        st.set_hard_state(HardState(8, "", 15))     # an empty vote is not "no vote"
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert st.hard_state == HardState(8, "", 15)


def test_hard_state_refuses_what_raft_never_does(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 4))
        st.set_hard_state(HardState(5, "a", 3))
        with pytest.raises(ValueError):
            st.set_hard_state(HardState(4, "a", 3))  # term down
        with pytest.raises(ValueError):
            st.set_hard_state(HardState(5, "b", 3))  # a second vote in term 5
        with pytest.raises(ValueError):
            st.set_hard_state(HardState(5, "a", 2))  # commit down
        with pytest.raises(ValueError):
            st.set_hard_state(HardState(6, "x" * 2000, 3))
        with pytest.raises(ValueError):
            st.set_hard_state(HardState(6, None, 4))    # commit past the log
        st.set_hard_state(HardState(6, "b", 3))      # a new term, a new vote
        assert not st.failed


def test_torn_hard_state_slot_falls_back_to_the_other(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.set_hard_state(HardState(1, "a", 0))
        st.sync()                                    # seq 1 -> slot 1
        st.set_hard_state(HardState(2, "b", 0))
        st.sync()                                    # seq 2 -> slot 0
    flip(tmp_path / "hardstate", 20)                 # inside slot 0
    with RaftStorage.open(tmp_path) as st:
        assert st.hard_state == HardState(1, "a", 0)
        st.set_hard_state(HardState(3, "c", 0))
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert st.hard_state == HardState(3, "c", 0)
    flip(tmp_path / "hardstate", 20)
    flip(tmp_path / "hardstate", SLOT_BYTES + 20)
    with pytest.raises(CorruptLog, match="hard state"):
        RaftStorage.open(tmp_path)


def test_missing_hard_state_beside_a_log_is_corruption(tmp_path):
    fill(tmp_path, 5)
    (tmp_path / "hardstate").unlink()
    with pytest.raises(CorruptLog, match="vote"):
        RaftStorage.open(tmp_path)


def test_the_folder_is_locked_while_open(tmp_path):
    st = RaftStorage.open(tmp_path)
    with pytest.raises(StorageError, match="open elsewhere"):
        RaftStorage.open(tmp_path)
    st.close()
    st.close()                                       # idempotent
    with pytest.raises(StorageError):
        st.append([ent(1)])
    RaftStorage.open(tmp_path).close()


# ------------------------------------------------------------------------------ snapshots


def test_snapshot_save_load_and_compaction(tmp_path):
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(ents(1, 101, term=1, size=100) + ents(101, 201, term=2, size=100))
        st.set_hard_state(HardState(2, "n1", 150))
        st.sync()
        n_before = len(segment_files(tmp_path))
        st.save_snapshot(SnapshotMeta(150, 2, b"voters=n1,n2,n3"), b"state@150")
        assert st.first_index == 151 and st.last_index == 200
        assert st.term_at(150) == 2 and st.last_term == 2
        assert st.load_snapshot() == (SnapshotMeta(150, 2, b"voters=n1,n2,n3"), b"state@150")
        files = segment_files(tmp_path)
        assert len(files) < n_before
        # segments wholly at or below 150 are gone; the first left still covers 151
        assert int(files[0].stem) <= 151
        assert all_entries(st) == ents(151, 201, term=2, size=100)
        st.save_snapshot(SnapshotMeta(160, 2, b"c2"), b"state@160")
        assert sorted(p.name for p in tmp_path.glob("*.snap")) == [f"{160:020d}.snap"]
        with pytest.raises(ValueError):
            st.save_snapshot(SnapshotMeta(160, 2, b""), b"again")
    with RaftStorage.open(tmp_path) as st:
        assert st.first_index == 161 and st.last_index == 200
        assert st.load_snapshot() == (SnapshotMeta(160, 2, b"c2"), b"state@160")
        assert st.snapshot_meta.index == 160
        assert all_entries(st) == ents(161, 201, term=2, size=100)
        st.append(ents(201, 203, term=3))
        st.sync()
        st.save_snapshot(SnapshotMeta(202, 3, b""), b"all")   # covers the whole log
        assert segment_files(tmp_path) == []
        assert (st.first_index, st.last_index, st.last_term) == (203, 202, 3)
        st.append(ents(203, 205, term=3))
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert (st.first_index, st.last_index) == (203, 204)
        assert all_entries(st) == ents(203, 205, term=3)


def test_snapshot_the_log_does_not_lead_to_discards_the_log(tmp_path):
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(ents(1, 51, term=1, size=100))
        st.sync()
        st.save_snapshot(SnapshotMeta(80, 4, b""), b"from the leader")   # beyond our log
        assert segment_files(tmp_path) == []
        assert (st.first_index, st.last_index, st.last_term) == (81, 80, 4)
        st.append(ents(81, 84, term=4))
        st.sync()
    with RaftStorage.open(tmp_path) as st:
        assert all_entries(st) == ents(81, 84, term=4)
        st.save_snapshot(SnapshotMeta(82, 5, b""), b"conflicting term at 82")
        assert st.last_index == 82 and st.last_term == 5
    with RaftStorage.open(tmp_path) as st:
        assert (st.first_index, st.last_index) == (83, 82)


def test_leftover_temp_files_are_removed_on_open(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 11))
        st.sync()
        st.save_snapshot(SnapshotMeta(5, 1, b""), b"five")
    (tmp_path / f"{9:020d}.snap.tmp").write_bytes(b"half a snapshot")
    (tmp_path / "hardstate.tmp").write_bytes(b"half a hard state")
    with RaftStorage.open(tmp_path) as st:
        assert not list(tmp_path.glob("*.tmp"))
        assert st.load_snapshot() == (SnapshotMeta(5, 1, b""), b"five")
        assert st.first_index == 6


def plant_snapshot(path: Path, meta: SnapshotMeta, data: bytes) -> None:
    """Write a snapshot file behind RaftStorage's back (to stage a crash between steps)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        SnapshotStore(str(path), fd, fsync=True).write(meta, data)
    finally:
        os.close(fd)


def test_interrupted_compaction_is_finished_on_open(tmp_path):
    # a crash after the snapshot became durable but before old segments were deleted,
    # and before the previous snapshot file was removed
    fill(tmp_path, 200, segment_bytes=4096, size=100)
    plant_snapshot(tmp_path, SnapshotMeta(50, 1, b""), b"older")
    plant_snapshot(tmp_path, SnapshotMeta(120, 1, b""), b"s")
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        assert st.first_index == 121 and st.last_index == 200
        assert st.load_snapshot() == (SnapshotMeta(120, 1, b""), b"s")
        assert [p.name for p in tmp_path.glob("*.snap")] == [f"{120:020d}.snap"]
        assert int(segment_files(tmp_path)[0].stem) <= 121
        assert int(segment_files(tmp_path)[0].stem) > 1
        assert all_entries(st) == ents(121, 201, size=100)


def test_interrupted_discard_is_finished_on_open(tmp_path):
    # a leader's snapshot our log does not lead to: a crash left some of the old log behind
    fill(tmp_path, 100, segment_bytes=4096, size=100)
    plant_snapshot(tmp_path, SnapshotMeta(60, 9, b""), b"leader's")   # term 9 != our term 1 at 60
    with RaftStorage.open(tmp_path) as st:
        assert (st.first_index, st.last_index, st.last_term) == (61, 60, 9)
        assert segment_files(tmp_path) == []


def test_corrupt_snapshot_is_an_error(tmp_path):
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 21))
        st.sync()
        st.save_snapshot(SnapshotMeta(10, 1, b"cfg"), b"x" * 1000)
    flip(tmp_path / f"{10:020d}.snap", 500)
    with pytest.raises(CorruptLog, match="snap"):
        RaftStorage.open(tmp_path)


def test_corrupt_newer_snapshot_falls_back_only_if_the_log_covers(tmp_path):
    with RaftStorage.open(tmp_path, segment_bytes=4096) as st:
        st.append(ents(1, 101, size=100))
        st.sync()
        st.save_snapshot(SnapshotMeta(10, 1, b""), b"ten")
    # a newer snapshot landed but the log was not compacted yet (a crash), and it rotted
    plant_snapshot(tmp_path, SnapshotMeta(80, 1, b""), b"eighty" * 100)
    flip(tmp_path / f"{80:020d}.snap", 100)
    with RaftStorage.open(tmp_path) as st:           # 11..100 are all still in the log
        assert st.load_snapshot() == (SnapshotMeta(10, 1, b""), b"ten")
        assert all_entries(st) == ents(11, 101, size=100)
        st.save_snapshot(SnapshotMeta(80, 1, b""), b"eighty")   # compacts whole segments away
        assert int(segment_files(tmp_path)[0].stem) > 11
    # the same rot, but now the log no longer holds what the newer snapshot covered
    plant_snapshot(tmp_path, SnapshotMeta(10, 1, b""), b"ten")
    flip(tmp_path / f"{80:020d}.snap", 46)
    with pytest.raises(CorruptLog, match="checksum"):
        RaftStorage.open(tmp_path)


# ------------------------------------------------------------------------------ torn tails


def _last_record_span(path: Path) -> tuple[Path, int, int]:
    with RaftStorage.open(path) as st:
        seg = st._log.segments[-1]
        return Path(seg.path), seg.offsets[-1], seg.end


def test_a_cut_at_every_byte_of_the_last_record_is_a_torn_tail(tmp_path):
    src = tmp_path / "src"
    written = fill(src, 12, batch=4, size=90)
    seg_path, last_off, end = _last_record_span(src)
    original = seg_path.read_bytes()
    assert len(original) == end
    work = tmp_path / "work"
    for cut in range(last_off, end):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        with open(work / seg_path.name, "r+b") as f:
            f.truncate(cut)
        with RaftStorage.open(work) as st:
            assert st.last_index == 11, cut
            assert st.recovered_truncated_bytes == cut - last_off
            assert all_entries(st) == written[:11]
        with RaftStorage.open(work) as st:            # the cut is durable and the log usable
            assert st.recovered_truncated_bytes == 0
            st.append([written[11]])
            st.sync()
        with RaftStorage.open(work) as st:
            assert all_entries(st) == written


def test_cuts_at_random_offsets_keep_exactly_the_whole_records(tmp_path):
    src = tmp_path / "src"
    written = fill(src, 60, batch=7)
    seg_path, _, end = _last_record_span(src)
    with RaftStorage.open(src) as st:
        offsets = list(st._log.segments[-1].offsets) + [end]
    rng = random.Random(1234)
    work = tmp_path / "work"
    for _ in range(40):
        cut = rng.randrange(HEADER_BYTES, end)
        whole = sum(1 for i in range(60) if offsets[i + 1] <= cut)
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        os.truncate(work / seg_path.name, cut)
        with RaftStorage.open(work) as st:
            assert st.last_index == whole, cut
            assert all_entries(st) == written[:whole]
            assert st.recovered_truncated_bytes == cut - offsets[whole]


@pytest.mark.parametrize("garbage", [bytes(4096), b"\x07", random.Random(7).randbytes(3000),
                                     struct.pack("<II", 100, 0) + b"\xff" * 50],
                         ids=["zeros", "one-byte", "random", "bogus-header"])
def test_garbage_after_the_last_record_is_cut(tmp_path, garbage):
    written = fill(tmp_path, 30, segment_bytes=4096, size=60)
    last = segment_files(tmp_path)[-1]
    with open(last, "ab") as f:
        f.write(garbage)
    with RaftStorage.open(tmp_path) as st:
        assert st.recovered_truncated_bytes == len(garbage)
        assert all_entries(st) == written
    assert segment_files(tmp_path)[-1].stat().st_size == last.stat().st_size


def test_a_torn_new_segment_header_is_removed(tmp_path):
    written = fill(tmp_path, 30, segment_bytes=4096, size=60)
    for junk in (b"", b"ML", b"MLOG\x01\x00\x00"):
        (tmp_path / f"{31:020d}.log").write_bytes(junk)
        with RaftStorage.open(tmp_path) as st:
            assert all_entries(st) == written
            assert st.recovered_truncated_bytes == len(junk)
        assert not (tmp_path / f"{31:020d}.log").exists()


def test_a_torn_tail_that_eats_a_committed_entry_is_an_error(tmp_path):
    fill(tmp_path, 10, commit=10)
    seg = segment_files(tmp_path)[-1]
    os.truncate(seg, seg.stat().st_size - 1)          # looks torn, but 10 was committed
    size = seg.stat().st_size
    with pytest.raises(CorruptLog, match="committed entries are missing"):
        RaftStorage.open(tmp_path)
    assert seg.stat().st_size == size                  # the evidence is kept for an operator


# ------------------------------------------------------------------------------ mid-log corruption


def _offsets(path: Path) -> list[tuple[Path, list[int]]]:
    with RaftStorage.open(path) as st:
        return [(Path(s.path), list(s.offsets)) for s in st._log.segments]


@pytest.mark.parametrize("where", ["payload", "crc", "length", "index"])
def test_a_bad_record_before_good_ones_is_corruption(tmp_path, where):
    fill(tmp_path, 40, size=50)
    [(seg, offsets)] = _offsets(tmp_path)
    rec = offsets[5]
    at = {"length": rec + 1, "crc": rec + 5, "index": rec + 8, "payload": rec + 40}[where]
    flip(seg, at)
    with pytest.raises(CorruptLog) as info:
        RaftStorage.open(tmp_path)
    assert info.value.path == str(seg) and info.value.offset == rec
    assert seg.name in str(info.value) and "mid-log" in str(info.value)


def test_zeroed_records_in_the_middle_are_corruption(tmp_path):
    fill(tmp_path, 200, size=50)
    [(seg, offsets)] = _offsets(tmp_path)
    with open(seg, "r+b") as f:                        # a lost 4 KiB page
        f.seek(offsets[20])
        f.write(bytes(4096))
    with pytest.raises(CorruptLog, match="mid-log"):
        RaftStorage.open(tmp_path)


@pytest.mark.parametrize("which", ["first", "last"])
def test_any_damage_in_a_segment_that_is_not_the_last_is_corruption(tmp_path, which):
    fill(tmp_path, 120, segment_bytes=4096, size=100)
    segs = _offsets(tmp_path)
    assert len(segs) >= 3
    seg, offsets = segs[1]
    flip(seg, offsets[0] + 30 if which == "first" else offsets[-1] + 30)
    with pytest.raises(CorruptLog) as info:
        RaftStorage.open(tmp_path)
    assert info.value.path == str(seg) and "not the last" in str(info.value)


def test_a_bad_header_or_a_missing_segment_is_corruption(tmp_path):
    fill(tmp_path, 120, segment_bytes=4096, size=100)
    segs = segment_files(tmp_path)
    backup = segs[1].read_bytes()
    flip(segs[1], 3)
    with pytest.raises(CorruptLog, match="header"):
        RaftStorage.open(tmp_path)
    segs[1].write_bytes(backup)
    segs[1].unlink()
    with pytest.raises(CorruptLog, match="missing"):
        RaftStorage.open(tmp_path)
    segs[1].write_bytes(backup)
    segs[0].unlink()                                   # the head of the log, no snapshot
    with pytest.raises(CorruptLog, match="missing"):
        RaftStorage.open(tmp_path)


def test_a_torn_header_followed_by_records_is_corruption(tmp_path):
    fill(tmp_path, 20, size=50)
    [(seg, _)] = _offsets(tmp_path)
    flip(seg, 2)
    with pytest.raises(CorruptLog, match="valid record"):
        RaftStorage.open(tmp_path)


def test_rot_after_open_is_caught_on_read(tmp_path):
    fill(tmp_path, 20, size=50)
    [(seg, offsets)] = _offsets(tmp_path)
    with RaftStorage.open(tmp_path, cache_bytes=0) as st:
        flip(seg, offsets[3] + 30)
        assert st.entries(1, 4) == ents(1, 4, size=50)
        with pytest.raises(CorruptLog) as info:
            st.entries(1, 10)
        assert info.value.offset == offsets[3]


# ------------------------------------------------------------------------------ failure


def test_a_failed_fsync_fails_the_storage_for_good(tmp_path, monkeypatch):
    # EIO from fsync cannot be produced for real without a device-mapper target: mock it
    with RaftStorage.open(tmp_path) as st:
        st.append(ents(1, 11))
        st.set_hard_state(HardState(1, "a", 10))
        st.sync()
        st.append(ents(11, 21))

        def eio(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fdatasync", eio)
        with pytest.raises(StorageError) as info:
            st.sync()
        assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.EIO
        monkeypatch.undo()                             # the disk "recovers"; the storage must not
        assert st.failed and st.failure.errno == errno.EIO
        for write in (lambda: st.sync(), lambda: st.append(ents(21, 22)),
                      lambda: st.set_hard_state(HardState(2, None, 10)),
                      lambda: st.truncate_suffix(15),
                      lambda: st.save_snapshot(SnapshotMeta(5, 1, b""), b"")):
            with pytest.raises(StorageError, match="failed earlier"):
                write()
        assert st.entries(1, 11) == ents(1, 11)        # what was durable still reads
        assert st.hard_state == HardState(1, "a", 10)
    with RaftStorage.open(tmp_path) as st:
        assert st.entries(1, 11) == ents(1, 11)
        assert st.hard_state == HardState(1, "a", 10)
        st.append(ents(st.last_index + 1, st.last_index + 3))
        st.sync()


@pytest.fixture
def tiny_fs(tmp_path):
    """A 256 KiB tmpfs: a real ENOSPC. Needs root (CAP_SYS_ADMIN) and mount(8)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real ENOSPC needs root to mount a tiny tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_acknowledging_and_loses_nothing_synced(tiny_fs):
    path = tiny_fs / "raft"
    synced = 0
    with RaftStorage.open(path) as st:
        with pytest.raises(StorageError) as info:
            for i in range(1, 10_000):
                st.append([ent(i, size=1000)])
                st.set_hard_state(HardState(1, None, i))
                st.sync()
                synced = i
        assert info.value.__cause__.errno == errno.ENOSPC
        assert synced > 50
        with pytest.raises(StorageError):
            st.sync()
        with pytest.raises(StorageError):
            st.append([ent(synced + 2, size=1)])
        assert st.entries(1, synced + 1) == [ent(i, size=1000) for i in range(1, synced + 1)]
    with RaftStorage.open(path) as st:                 # on the still-full disk
        assert st.last_index == synced and st.hard_state.commit == synced
        assert all_entries(st) == [ent(i, size=1000) for i in range(1, synced + 1)]
        # a snapshot that does not fit: fails, keeps the old state, leaves a .tmp behind
        with pytest.raises(StorageError):
            st.save_snapshot(SnapshotMeta(10, 1, b""), bytes(512 << 10))
        assert st.failed
    with RaftStorage.open(path) as st:
        assert not list(path.glob("*.tmp"))
        assert st.load_snapshot() is None and st.last_index == synced


def test_efbig_from_the_file_size_limit_fails_the_storage(tmp_path):
    """RLIMIT_FSIZE in a child makes writes past 64 KiB fail with EFBIG (SIGXFSZ ignored)."""
    child = textwrap.dedent("""
        import json, resource, signal, sys
        from mesh.storage import Entry, HardState, RaftStorage, StorageError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
        st = RaftStorage.open(sys.argv[1], segment_bytes=1 << 20)
        synced, err, later = 0, None, []
        try:
            for i in range(1, 1000):
                st.append([Entry(i, 1, 0, bytes([i % 251]) * 1000)])
                st.set_hard_state(HardState(1, None, i))
                st.sync()
                synced = i
        except StorageError as exc:
            err = exc.__cause__.errno
        for op in (st.sync, lambda: st.append([Entry(synced + 5, 1, 0, b"")])):
            try:
                op()
                later.append("ok")
            except StorageError:
                later.append("StorageError")
        readable = st.entries(1, synced + 1) == [Entry(i, 1, 0, bytes([i % 251]) * 1000)
                                                  for i in range(1, synced + 1)]
        print(json.dumps({"synced": synced, "errno": err, "later": later, "readable": readable}))
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", child, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errno"] == errno.EFBIG
    assert result["later"] == ["StorageError", "StorageError"]
    assert result["readable"] and result["synced"] > 40
    with RaftStorage.open(tmp_path) as st:
        assert st.last_index == result["synced"]
        assert st.recovered_truncated_bytes > 0      # the partial record the limit cut
        assert all_entries(st) == [Entry(i, 1, 0, bytes([i % 251]) * 1000)
                                   for i in range(1, result["synced"] + 1)]


# ------------------------------------------------------------------------------ model


@pytest.mark.parametrize("seed", range(4))
def test_random_operations_match_a_model(tmp_path, seed):
    """Random appends, truncations, snapshots and reopens against a list: what the storage
    returns (from its cache and from disk) always equals the model."""
    rng = random.Random(seed)
    model: dict[int, Entry] = {}
    snap, term, last = 0, 1, 0
    st = RaftStorage.open(tmp_path, segment_bytes=4096, cache_bytes=rng.choice([0, 2000, 1 << 20]),
                          fsync=False)
    try:
        for _ in range(300):
            op = rng.random()
            if op < 0.55:
                batch = [Entry(i, term, rng.randrange(3), rng.randbytes(rng.randrange(0, 300)))
                         for i in range(last + 1, last + 1 + rng.randint(1, 12))]
                st.append(batch)
                model.update((e.index, e) for e in batch)
                last = batch[-1].index
            elif op < 0.65 and last > snap:
                cut = rng.randint(snap + 1, last)
                st.truncate_suffix(cut)
                for i in range(cut, last + 1):
                    del model[i]
                last = cut - 1
                term += 1
            elif op < 0.7 and last > snap:
                s = rng.randint(snap + 1, last)
                st.save_snapshot(SnapshotMeta(s, model[s].term, b""), b"%d" % s)
                for i in range(snap + 1, s + 1):
                    del model[i]
                snap = s
            elif op < 0.78:
                st.sync()
                st.close()
                st = RaftStorage.open(tmp_path, segment_bytes=4096, cache_bytes=rng.choice([0, 2000]),
                                      fsync=False)
            else:
                lo = rng.randint(snap + 1, last + 1)
                hi = rng.randint(lo, last + 1)
                got = st.entries(lo, hi, max_bytes=rng.choice([None, 0, 500, 5000]))
                assert got == [model[i] for i in range(lo, lo + len(got))]
                assert len(got) == hi - lo or got
            assert (st.first_index, st.last_index) == (snap + 1, last)
            assert st.last_term == (model[last].term if last > snap else st.snapshot_meta.term)
        assert all_entries(st) == [model[i] for i in range(snap + 1, last + 1)]
    finally:
        st.close()


# ------------------------------------------------------------------------------ framing


@settings(max_examples=150, deadline=None)
@given(st_.binary(max_size=400), st_.integers(1, 1 << 40))
def test_scanning_arbitrary_bytes_never_crashes(blob, first):
    res = records.scan_frames(blob, 0, first, 0)
    assert res.end <= len(blob)
    hit = records.find_frame(blob, 0, first)
    assert hit is None or hit[1] >= first


@settings(max_examples=100, deadline=None)
@given(st_.lists(st_.tuples(st_.integers(0, 5), st_.integers(0, (1 << 32) - 1), st_.binary(max_size=200)),
                 min_size=1, max_size=10), st_.integers(1, 1 << 60))
def test_frames_round_trip(items, first):
    term, entries = 0, []
    for k, (dterm, kind, data) in enumerate(items):
        term += dterm
        entries.append(Entry(first + k, term, kind, data))
    buf = b"".join(records.encode_frames(entries))
    res = records.scan_frames(buf, 0, first, 0)
    assert res.problem is None and res.end == len(buf) and res.terms == [e.term for e in entries]
    assert records.decode_frames(buf, first, len(entries), path="x", base_offset=0) == entries
    assert records.find_frame(buf, 0, first) == (0, first)


def test_a_corrupt_length_never_allocates_beyond_the_limit():
    bogus = struct.pack("<II", 0xFFFFFFF0, 0) + bytes(20)
    res = records.scan_frames(bogus, 0, 1, 0)
    assert res.end == 0 and "implausible record length" in res.problem
