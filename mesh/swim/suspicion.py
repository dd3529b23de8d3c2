"""One suspicion timer, Lifeguard style: it starts long and shrinks as other members
independently suspect the same node (see :func:`mesh.swim.formulas.remaining_suspicion_ms`).

A suspected node that is merely slow gets the long timeout to refute; a node that several
members cannot reach is declared dead quickly. The first accuser does not count as a
confirmation; each further distinct accuser does, up to ``k``.
"""
from __future__ import annotations

from mesh.swim.formulas import remaining_suspicion_ms


class Suspicion:
    __slots__ = ("start_ms", "min_ms", "max_ms", "k", "accusers", "deadline_ms", "last_chance")

    def __init__(self, accuser: str, k: int, min_ms: int, max_ms: int, now_ms: int) -> None:
        self.start_ms = now_ms
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.k = k
        self.accusers = {accuser}
        self.deadline_ms = now_ms + remaining_suspicion_ms(0, k, 0, min_ms, max_ms)
        self.last_chance = False   # extended once to probe the suspect ourselves (see core)

    @property
    def confirmations(self) -> int:
        return len(self.accusers) - 1

    def confirm(self, accuser: str) -> bool:
        """Count ``accuser``; True when it is a new confirmation (worth re-gossiping)."""
        if self.confirmations >= self.k or accuser in self.accusers:
            return False
        self.accusers.add(accuser)
        self.deadline_ms = self.start_ms + remaining_suspicion_ms(
            self.confirmations, self.k, 0, self.min_ms, self.max_ms)
        return True
