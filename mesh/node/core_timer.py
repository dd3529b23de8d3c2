"""One loop timer per protocol core, kept at the core's next deadline.

A sans-I/O core says when it next has work (``next_deadline_ms``, on the loop's clock in
milliseconds); the driver keeps exactly one ``call_at`` armed for the earliest such time,
moving it earlier when an input brings the deadline forward, and never sleeping more than
a second (a core with nothing due is still looked at now and then).
"""
from __future__ import annotations

import asyncio
from typing import Callable


class CoreTimer:
    __slots__ = ("_loop", "_fire", "_handle", "_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[], None]) -> None:
        self._loop = loop
        self._fire = fire
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0

    def now_ms(self) -> int:
        return int(self._loop.time() * 1000)

    def arm(self, deadline_ms: int) -> None:
        now = self.now_ms()
        when = max(now, min(deadline_ms, now + 1000))
        if self._handle is not None:
            if self._at <= when:
                return
            self._handle.cancel()
        self._at = when
        self._handle = self._loop.call_at(when / 1000.0, self._run)

    def _run(self) -> None:
        self._handle = None
        self._fire()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
