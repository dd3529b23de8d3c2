"""A progress bar on standard error for long runs (``meshctl bench``).

On a terminal it redraws one line (at most 10 times a second); otherwise it writes a line
at every tenth of the way, so logs stay readable."""
from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30


class ProgressBar:
    def __init__(self, total: int, label: str = "", stream: TextIO | None = None,
                 enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._t0 = time.monotonic()
        self._drawn_at = 0.0
        self._tenth = 0

    def update(self, done: int, errors: int = 0) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty:
            if now - self._drawn_at < 0.1 and done < self.total:
                return
            self._drawn_at = now
            self.stream.write("\r" + self._line(done, errors, now))
            self.stream.flush()
        else:
            tenth = done * 10 // self.total
            if tenth > self._tenth:
                self._tenth = tenth
                self.stream.write(self._line(done, errors, now) + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, done: int, errors: int, now: float) -> str:
        frac = min(done / self.total, 1.0)
        filled = int(frac * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        elapsed = max(now - self._t0, 1e-9)
        tail = f" {errors} errors" if errors else ""
        return (f"{self.label}[{bar}] {done}/{self.total} {frac:4.0%}  "
                f"{done / elapsed:,.0f} calls/s{tail}")
