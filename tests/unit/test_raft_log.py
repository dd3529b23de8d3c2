"""RaftLog (mesh/raft/log.py) as tables: the snapshot boundary, §5.4.1's up-to-date rule,
byte-bounded slices, conflicts, follower-side truncation and compaction."""
from __future__ import annotations

import pytest

from mesh.raft.log import RaftLog
from mesh.raft.messages import Entry


def es(*spec: tuple[int, int] | tuple[int, int, bytes]) -> list[Entry]:
    """es((1, 1), (2, 1, b"x")) -> entries (index, term[, data])."""
    return [Entry(s[0], s[1], data=s[2] if len(s) > 2 else b"") for s in spec]


def log_of(terms: list[int], *, snapshot: tuple[int, int] = (0, 0), commit: int = 0, applied: int = 0) -> RaftLog:
    """A log whose entries after ``snapshot`` have ``terms`` (entry snapshot+1 first)."""
    si, st = snapshot
    return RaftLog(si, st, [Entry(si + 1 + k, t) for k, t in enumerate(terms)], commit, applied)


# -- construction ------------------------------------------------------------------------------

def test_constructor_rejects_gaps_and_a_commit_past_the_end():
    with pytest.raises(ValueError):
        RaftLog(0, 0, es((1, 1), (3, 1)))
    with pytest.raises(ValueError):
        RaftLog(5, 2, es((5, 2)))            # the first entry must be snapshot_index + 1
    with pytest.raises(ValueError):
        RaftLog(0, 0, es((1, 1)), commit=2)


def test_constructor_lifts_commit_and_applied_to_the_snapshot():
    log = RaftLog(5, 2, es((6, 2)), commit=0, applied=0)
    assert (log.commit, log.applied) == (5, 5)
    assert (log.last_index, log.last_term) == (6, 2)


def test_empty_log_and_snapshot_only_log():
    assert (RaftLog().last_index, RaftLog().last_term) == (0, 0)
    only_snap = RaftLog(7, 3)
    assert (only_snap.last_index, only_snap.last_term) == (7, 3)


# -- term_at around the snapshot boundary ---------------------------------------------------

BOUNDARY = log_of([3, 3, 4], snapshot=(5, 2))      # entries 6@3 7@3 8@4, snapshot up to 5@2


@pytest.mark.parametrize("index, term", [
    (0, None),     # compacted away (below the snapshot)
    (4, None),
    (5, 2),        # the snapshot's own index: its term is still known
    (6, 3),
    (7, 3),
    (8, 4),
    (9, None),     # past the end
    (100, None),
])
def test_term_at_around_the_snapshot_boundary(index, term):
    assert BOUNDARY.term_at(index) == term


@pytest.mark.parametrize("index, term, ok", [
    (5, 2, True), (5, 3, False), (4, 0, False), (8, 4, True), (8, 3, False), (9, 4, False),
])
def test_matches(index, term, ok):
    assert BOUNDARY.matches(index, term) is ok


def test_term_at_zero_without_a_snapshot_is_zero():
    # prev_index 0 / prev_term 0 must match any log that has no snapshot (first append)
    assert RaftLog().term_at(0) == 0
    assert log_of([1, 1]).matches(0, 0)


# -- up_to_date (§5.4.1) --------------------------------------------------------------------

@pytest.mark.parametrize("theirs, ours, expected", [
    # (their last_index, last_term), our log terms -> is theirs at least as up to date?
    ((0, 0), [], True),           # two empty logs
    ((3, 2), [1, 2, 2], True),    # identical
    ((4, 2), [1, 2, 2], True),    # same last term, longer
    ((2, 2), [1, 2, 2], False),   # same last term, shorter
    ((1, 3), [1, 2, 2], True),    # higher last term wins even when much shorter
    ((9, 1), [1, 2, 2], False),   # lower last term loses even when much longer
    ((0, 0), [1], False),         # an empty log is behind any non-empty one
    ((1, 1), [], True),
])
def test_up_to_date(theirs, ours, expected):
    assert log_of(ours).up_to_date(*theirs) is expected


def test_up_to_date_uses_the_snapshot_term_when_the_log_is_empty():
    log = RaftLog(10, 4)
    assert log.up_to_date(10, 4)
    assert log.up_to_date(1, 5)
    assert not log.up_to_date(9, 4)
    assert not log.up_to_date(50, 3)


# -- slice ------------------------------------------------------------------------------------

SIZED = RaftLog(0, 0, [Entry(i, 1, data=b"x" * 100) for i in range(1, 11)])


@pytest.mark.parametrize("lo, hi, expected", [
    (1, 11, list(range(1, 11))),
    (3, 6, [3, 4, 5]),
    (10, 11, [10]),
    (5, 99, list(range(5, 11))),  # hi is clamped to the end
    (11, 20, []),                 # nothing past the end
    (4, 4, []),
])
def test_slice_without_a_byte_limit(lo, hi, expected):
    assert [e.index for e in SIZED.slice(lo, hi)] == expected


@pytest.mark.parametrize("max_bytes", [1, 50, 100, 150, 250, 350, 1000, 10_000])
def test_slice_max_bytes_is_a_nonempty_prefix_within_the_limit(max_bytes):
    out = SIZED.slice(2, 11, max_bytes)
    assert out, "at least one entry, however small the limit"
    assert [e.index for e in out] == list(range(2, 2 + len(out))), "a prefix of the range"
    if len(out) > 1:
        assert sum(len(e.data) for e in out) <= max_bytes


def test_slice_max_bytes_returns_everything_when_it_fits():
    assert len(SIZED.slice(1, 11, 1 << 20)) == 10


def test_slice_max_bytes_returns_one_oversized_entry():
    log = RaftLog(0, 0, [Entry(1, 1, data=b"x" * 5000), Entry(2, 1, data=b"y")])
    assert [e.index for e in log.slice(1, 3, 10)] == [1]


def test_slice_of_compacted_entries_raises():
    log = log_of([2, 2], snapshot=(5, 2))
    with pytest.raises(IndexError):
        log.slice(5, 7)
    with pytest.raises(IndexError):
        log.slice(1, 7)
    assert [e.index for e in log.slice(6, 8)] == [6, 7]


# -- append / find_conflict / truncate_and_append -------------------------------------------------

def test_append_must_be_contiguous():
    log = log_of([1, 1])
    with pytest.raises(ValueError):
        log.append(es((4, 1)))
    with pytest.raises(ValueError):
        log.append(es((2, 1)))
    log.append(es((3, 2), (4, 2)))
    assert (log.last_index, log.last_term) == (4, 2)


@pytest.mark.parametrize("entries, expected", [
    ([], 0),
    (es((1, 1), (2, 2)), 0),                 # all present
    (es((2, 2), (3, 2)), 0),
    (es((3, 2), (4, 2)), 4),                 # 4 is new
    (es((4, 3)), 4),                         # right after the end
    (es((2, 2), (3, 3)), 3),                 # 3 disagrees
    (es((1, 5), (2, 5)), 1),                 # the very first one disagrees
    (es((2, 2), (3, 2), (4, 3), (5, 3)), 4),
])
def test_find_conflict(entries, expected):
    assert log_of([1, 2, 2]).find_conflict(entries) == expected


@pytest.mark.parametrize("entries, result, terms_after", [
    # log is [1@1 2@2 3@2], commit 1
    (es((2, 2), (3, 2)), (0, False), [1, 2, 2]),          # duplicate: nothing new
    (es((2, 2)), (0, False), [1, 2, 2]),                  # a shorter duplicate must not truncate
    (es((3, 2), (4, 2)), (4, False), [1, 2, 2, 2]),       # overlap then append
    (es((4, 3), (5, 3)), (4, False), [1, 2, 2, 3, 3]),    # pure append
    (es((3, 3)), (3, True), [1, 2, 3]),                   # replace the last one
    (es((2, 3), (3, 3), (4, 3)), (2, True), [1, 3, 3, 3]),  # replace a suffix and grow
    (es((2, 2), (3, 4)), (3, True), [1, 2, 4]),
])
def test_truncate_and_append(entries, result, terms_after):
    log = log_of([1, 2, 2], commit=1)
    assert log.truncate_and_append(entries) == result
    assert [log.term_at(i) for i in range(1, log.last_index + 1)] == terms_after


def test_truncate_and_append_refuses_to_truncate_committed_entries():
    log = log_of([1, 2, 2], commit=2)
    with pytest.raises(AssertionError):
        log.truncate_and_append(es((2, 3), (3, 3)))
    assert [log.term_at(i) for i in (1, 2, 3)] == [1, 2, 2], "the log is untouched"
    # the first uncommitted one may go
    assert log.truncate_and_append(es((3, 3))) == (3, True)


def test_truncate_and_append_after_a_snapshot():
    log = log_of([3, 3], snapshot=(5, 2), commit=5)
    assert log.truncate_and_append(es((7, 4), (8, 4))) == (7, True)
    assert (log.last_index, log.last_term, log.snapshot_index) == (8, 4, 5)
    assert log.term_at(6) == 3


# -- compact / restore ------------------------------------------------------------------------

def test_compact_drops_the_prefix_and_keeps_the_boundary_term():
    log = log_of([1, 1, 2, 2, 3], commit=4, applied=4)
    log.compact(3, 2)
    assert (log.snapshot_index, log.snapshot_term) == (3, 2)
    assert [log.term_at(i) for i in range(0, 7)] == [None, None, None, 2, 2, 3, None]
    assert (log.last_index, log.last_term, log.commit, log.applied) == (5, 3, 4, 4)
    with pytest.raises(IndexError):
        log.slice(3, 6)
    assert [e.index for e in log.slice(4, 6)] == [4, 5]


def test_compact_everything_applied():
    log = log_of([1, 2], commit=2, applied=2)
    log.compact(2, 2)
    assert (log.last_index, log.last_term) == (2, 2)
    assert log.slice(3, 10) == []
    log.append(es((3, 3)))
    assert log.term_at(3) == 3


@pytest.mark.parametrize("index, term, error", [
    (4, 2, ValueError),      # not applied yet
    (3, 1, ValueError),      # wrong term at 3
])
def test_compact_refuses(index, term, error):
    log = log_of([1, 1, 2, 2], commit=4, applied=3)
    with pytest.raises(error):
        log.compact(index, term)
    assert log.snapshot_index == 0 and log.last_index == 4


def test_compact_at_or_below_the_snapshot_is_a_no_op():
    log = log_of([2, 2], snapshot=(5, 2), commit=7, applied=7)
    log.compact(5, 2)
    log.compact(3, 1)
    assert (log.snapshot_index, log.last_index) == (5, 7)


def test_restore_replaces_everything():
    log = log_of([1, 1, 2, 2], commit=2, applied=1)
    log.restore(10, 5)
    assert (log.snapshot_index, log.snapshot_term, log.last_index, log.last_term) == (10, 5, 10, 5)
    assert (log.commit, log.applied) == (10, 10)
    assert log.term_at(4) is None and log.term_at(10) == 5
    log.append(es((11, 5)))
    assert log.last_index == 11
    with pytest.raises(ValueError):
        log.append(es((13, 5)))
