"""The audit log: one JSON line per denial, bounded on disk and in the log.

Theory of operation
-------------------
Each denial the runtime reports (``deny(...)``) is counted per action (``counts()``, for
metrics) and, unless rate-limited, appended to the file as one JSON line::

    {"ts": "2026-11-25T10:11:12.345Z", "node": "n2", "agent": "bot-1", "action": "call",
     "resource": "risk-1.check", "rule": "deny[0]", "trace_id": 4711, "suppressed": 3, "dropped": 0}

and logged as a warning on the ``mesh.audit`` logger. Both are bounded, because a peer that
is denied may keep trying:

* **identical denials** (same node, agent, action, resource and rule) are written at most
  once per ``interval_s``; the ones in between are counted and the count goes into the
  ``suppressed`` field of the next line written for that question. ``flush_suppressed()``
  (call it now and then, and ``close()`` does) writes a ``"summary": true`` line for every
  question with a count still waiting; a summary line reports repeats, not a new denial.
* **all lines** share a budget of ``max_lines_per_s`` (a token bucket with a burst of one
  second's worth): denials beyond it are counted in the ``dropped`` field of the next line
  written. At most ``max_keys`` questions are remembered; a forgotten question's waiting count
  moves to ``dropped`` too. So every denial is accounted for: the sum over the lines of
  ``suppressed + dropped`` plus one per non-summary line equals the total of ``counts()``
  once ``close()`` has run.
* **the file** is rotated when the next line would take it past ``max_bytes``: ``path``
  becomes ``path.1``, ``path.1`` becomes ``path.2``..., and the oldest beyond ``keep`` is
  deleted, so the disk holds at most about ``(keep + 1) * max_bytes``.

A line is one ``write(2)`` on a file opened with ``O_APPEND`` (no user-space buffer): it is in
the kernel once ``deny`` returns and survives a crash of the process, but it is not fsync-ed
(an fsync per line would stall the event loop for milliseconds), so a power loss may lose the
last lines. A failed write (disk full) is counted in ``write_errors`` and logged, never
raised to the caller: the denial itself has already happened. Strings longer than
``MAX_FIELD_CHARS`` are cut. Not thread-safe: one event loop owns it. ``path=None`` keeps the
counts and the warnings without a file.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime, timezone

from mesh.security.acl import Action

log = logging.getLogger("mesh.audit")

MAX_FIELD_CHARS = 512


def _cut(value: str | None) -> str | None:
    if value is None or len(value) <= MAX_FIELD_CHARS:
        return value
    return value[:MAX_FIELD_CHARS] + "..."


class AuditLog:
    """Denials as JSON lines; see the module docstring. ``clock`` (monotonic seconds) paces the
    rate limits, ``wall`` (unix seconds) stamps the lines; both injectable for tests."""

    def __init__(self, path: str | os.PathLike[str] | None, max_bytes: int = 16 << 20, keep: int = 3,
                 interval_s: float = 1.0, max_lines_per_s: float = 100.0, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if max_bytes < 1 or keep < 0 or interval_s < 0 or max_lines_per_s <= 0 or max_keys < 1:
            raise ValueError("need max_bytes >= 1, keep >= 0, interval_s >= 0, "
                             "max_lines_per_s > 0, max_keys >= 1")
        self.path = None if path is None else os.fspath(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.interval_s = interval_s
        self.max_lines_per_s = max_lines_per_s
        self.max_keys = max_keys
        self._clock = clock
        self._wall = wall
        self._counts = {a.value: 0 for a in Action}
        # question -> [monotonic time of its last line, denials suppressed since]
        self._keys: OrderedDict[tuple, list] = OrderedDict()
        self._tokens = max_lines_per_s
        self._refilled = clock()
        self._dropped = 0              # waiting for the next line
        self.suppressed_total = 0
        self.dropped_total = 0
        self.lines_written = 0
        self.write_errors = 0
        self._fd: int | None = None
        self._size = 0
        if self.path is not None:
            self._open()

    # -- the file ----------------------------------------------------------------------------------

    def _open(self) -> None:
        assert self.path is not None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                           | getattr(os, "O_CLOEXEC", 0), 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        assert self.path is not None and self._fd is not None
        os.close(self._fd)
        self._fd = None
        if self.keep == 0:
            os.unlink(self.path)
        else:
            for i in range(self.keep - 1, 0, -1):
                older = f"{self.path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def _write(self, record: dict) -> None:
        self.lines_written += 1
        if self.path is None:
            return
        data = (json.dumps(record, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            assert self._fd is not None
            os.write(self._fd, data)
            self._size += len(data)
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error("audit log %s: cannot write (%d failed so far): %s", self.path,
                          self.write_errors, exc)

    def _stamp(self) -> str:
        now = datetime.fromtimestamp(self._wall(), timezone.utc)
        return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # -- denials -----------------------------------------------------------------------------------

    def _take_token(self, now: float) -> bool:
        self._tokens = min(self.max_lines_per_s,
                           self._tokens + (now - self._refilled) * self.max_lines_per_s)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def deny(self, node: str, agent: str | None, action: Action | str, resource: str, rule: str,
             trace_id: int = 0) -> bool:
        """Record one denial; True if it was written now (False: counted, rate-limited)."""
        act = action.value if isinstance(action, Action) else str(action)
        self._counts[act] = self._counts.get(act, 0) + 1
        now = self._clock()
        key = (node, agent, act, resource, rule)
        state = self._keys.get(key)
        if state is not None and now - state[0] < self.interval_s:
            state[1] += 1
            self.suppressed_total += 1
            return False
        if not self._take_token(now):
            self._dropped += 1
            self.dropped_total += 1
            return False
        suppressed = 0
        if state is None:
            state = self._keys[key] = [now, 0]
            if len(self._keys) > self.max_keys:
                _, (_, waiting) = self._keys.popitem(last=False)
                # the forgotten question's repeats still get reported, as dropped
                self._dropped += waiting
        else:
            suppressed, state[0], state[1] = state[1], now, 0
            self._keys.move_to_end(key)
        dropped, self._dropped = self._dropped, 0
        self._write({"ts": self._stamp(), "node": _cut(node), "agent": _cut(agent), "action": act,
                     "resource": _cut(resource), "rule": rule, "trace_id": trace_id,
                     "suppressed": suppressed, "dropped": dropped})
        more = f" (+{suppressed} identical, {dropped} others not logged)" if suppressed or dropped else ""
        log.warning("denied: node %s agent %s may not %s %s (rule %s, trace %x)%s",
                    node, agent, act, resource, rule, trace_id, more)
        return True

    def flush_suppressed(self) -> int:
        """Write a summary line for each question with suppressed denials waiting (and for
        dropped ones), so no count waits forever for a repeat; returns the lines written."""
        written = 0
        total = 0
        dropped, self._dropped = self._dropped, 0
        for (node, agent, act, resource, rule), state in self._keys.items():
            if state[1]:
                self._write({"ts": self._stamp(), "node": _cut(node), "agent": _cut(agent),
                             "action": act, "resource": _cut(resource), "rule": rule, "trace_id": 0,
                             "suppressed": state[1], "dropped": dropped, "summary": True})
                total += state[1] + dropped
                state[1], dropped = 0, 0
                written += 1
        if dropped:
            self._write({"ts": self._stamp(), "node": None, "agent": None, "action": None,
                         "resource": None, "rule": None, "trace_id": 0, "suppressed": 0,
                         "dropped": dropped, "summary": True})
            total += dropped
            written += 1
        if written:
            log.warning("%d more denials were not logged one by one (see %s)", total,
                        self.path or "the audit counts")
        return written

    def counts(self) -> dict[str, int]:
        """Denials per action since the start (written, suppressed and dropped alike)."""
        return dict(self._counts)

    def close(self) -> None:
        """Write the waiting counts and close the file."""
        self.flush_suppressed()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None         # a later line reopens it

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
