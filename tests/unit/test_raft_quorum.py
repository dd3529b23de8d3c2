"""Quorum arithmetic (mesh/raft/quorum.py) as tables: commit index, vote tallies, activity."""
from __future__ import annotations

import pytest

from mesh.raft.quorum import committed_index, has_quorum, majority, vote_result


@pytest.mark.parametrize("n, m", [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_majority(n, m):
    assert majority(n) == m


V = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("n, match, expected", [
    (1, {"a": 7}, 7),
    (1, {}, 0),                                        # missing = 0
    (2, {"a": 7, "b": 3}, 3),                          # both are needed
    (2, {"a": 7}, 0),
    (3, {"a": 7, "b": 3, "c": 5}, 5),
    (3, {"a": 7, "b": 3}, 3),                          # c missing
    (3, {"a": 7}, 0),
    (3, {"a": 4, "b": 4, "c": 4}, 4),
    (4, {"a": 9, "b": 8, "c": 2, "d": 1}, 2),          # 3 of 4 needed
    (4, {"a": 9, "b": 8}, 0),
    (5, {"a": 9, "b": 8, "c": 2, "d": 1, "e": 0}, 2),
    (5, {"a": 9, "b": 8, "c": 7}, 7),                  # d, e missing
    (5, {"a": 9, "b": 8}, 0),
    (5, {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, 3),  # order of the mapping does not matter
])
def test_committed_index(n, match, expected):
    assert committed_index(V[:n], match) == expected


def test_committed_index_ignores_non_voters():
    assert committed_index(["a", "b", "c"], {"a": 5, "x": 9, "y": 9}) == 0
    assert committed_index(["a", "b", "c"], {"a": 5, "b": 5, "x": 1}) == 5


def test_committed_index_of_an_empty_set_agrees_to_anything():
    # the absent half of a joint configuration must never be the binding constraint
    big = committed_index([], {"a": 3})
    assert big > 10**15
    assert min(committed_index(["a"], {"a": 3}), big) == 3


@pytest.mark.parametrize("n, votes, expected", [
    (1, {"a": True}, True),
    (1, {}, None),
    (1, {"a": False}, False),
    (3, {"a": True}, None),
    (3, {"a": True, "b": True}, True),
    (3, {"a": True, "b": False}, None),           # c can still decide
    (3, {"a": True, "b": False, "c": False}, False),
    (3, {"a": False, "b": False}, False),         # lost before c answers
    (4, {"a": True, "b": True}, None),            # 3 of 4 needed
    (4, {"a": True, "b": True, "c": True}, True),
    (4, {"a": True, "b": False, "c": False}, False),
    (4, {"a": True, "b": True, "c": False}, None),
    (5, {"a": True, "b": True, "c": True}, True),
    (5, {"a": True, "b": True, "c": False, "d": False}, None),
    (5, {"a": True, "c": False, "d": False, "e": False}, False),
    (5, {"a": True, "x": True, "y": True}, None),  # non-voters do not count
])
def test_vote_result(n, votes, expected):
    assert vote_result(V[:n], votes) is expected


def test_vote_result_of_an_empty_set_is_won():
    assert vote_result([], {}) is True


@pytest.mark.parametrize("n, active, expected", [
    (1, {"a"}, True),
    (1, set(), False),
    (3, {"a"}, False),
    (3, {"a", "b"}, True),
    (3, {"a", "x", "y"}, False),                  # non-voters do not count
    (4, {"a", "b"}, False),
    (4, {"a", "b", "c"}, True),
    (5, {"a", "b"}, False),
    (5, {"c", "d", "e"}, True),
    (0, set(), True),                             # empty set: nothing to satisfy
])
def test_has_quorum(n, active, expected):
    assert has_quorum(V[:n], active) is expected
