"""Majorities: the highest index a quorum has, and vote tallies, for one voter set or two
(joint consensus needs a majority of each)."""
from __future__ import annotations

from typing import Iterable, Mapping


def majority(n: int) -> int:
    return n // 2 + 1


def committed_index(voters: Iterable[str], match: Mapping[str, int]) -> int:
    """The largest index that a majority of ``voters`` have (their ``match``; missing = 0)."""
    ids = list(voters)
    if not ids:
        return 1 << 62          # an empty set agrees to anything (joint config's absent half)
    values = sorted((match.get(v, 0) for v in ids), reverse=True)
    return values[majority(len(ids)) - 1]


def vote_result(voters: Iterable[str], votes: Mapping[str, bool]) -> bool | None:
    """True: a majority granted; False: a majority can no longer be reached; None: pending."""
    ids = list(voters)
    if not ids:
        return True
    need = majority(len(ids))
    granted = sum(1 for v in ids if votes.get(v) is True)
    rejected = sum(1 for v in ids if votes.get(v) is False)
    if granted >= need:
        return True
    if len(ids) - rejected < need:
        return False
    return None


def has_quorum(voters: Iterable[str], active: Iterable[str]) -> bool:
    ids = list(voters)
    seen = set(active)
    return not ids or sum(1 for v in ids if v in seen) >= majority(len(ids))
