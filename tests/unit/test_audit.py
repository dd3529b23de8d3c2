"""The audit log: real files, a fake clock for the rate limits (no sleeps)."""
from __future__ import annotations

import json
import logging
import os

import pytest

from mesh.security.acl import Action
from mesh.security.audit import MAX_FIELD_CHARS, AuditLog

WALL = 1_795_000_000.25      # 2026-11-18T11:06:40.250Z


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def make(tmp_path, **kw):
    clock = Clock()
    log = AuditLog(tmp_path / "audit.jsonl", clock=clock, wall=lambda: WALL, **kw)
    return log, clock


def test_one_json_line_per_denial_and_a_warning(tmp_path, caplog):
    log, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mesh.audit"):
        assert log.deny("n2", "bot-1", Action.CALL, "risk-1.check", "deny[0]", trace_id=0x1267)
        assert log.deny("n3", None, Action.KV_WRITE, "limits/AAPL", "default")
    got = lines(tmp_path / "audit.jsonl")
    assert got == [
        {"ts": "2026-11-18T11:06:40.250Z", "node": "n2", "agent": "bot-1", "action": "call",
         "resource": "risk-1.check", "rule": "deny[0]", "trace_id": 0x1267, "suppressed": 0, "dropped": 0},
        {"ts": "2026-11-18T11:06:40.250Z", "node": "n3", "agent": None, "action": "kv_write",
         "resource": "limits/AAPL", "rule": "default", "trace_id": 0, "suppressed": 0, "dropped": 0}]
    assert [r.name for r in caplog.records] == ["mesh.audit", "mesh.audit"]
    assert "risk-1.check" in caplog.records[0].getMessage() and "deny[0]" in caplog.records[0].getMessage()
    assert log.counts() == {"call": 1, "publish": 0, "subscribe": 0, "kv_read": 0, "kv_write": 1}
    log.close()


def test_identical_denials_are_counted_in_suppressed(tmp_path, caplog):
    log, clock = make(tmp_path, interval_s=1.0)
    with caplog.at_level(logging.WARNING, logger="mesh.audit"):
        assert log.deny("n2", "bot", Action.CALL, "x.y", "default")
        for _ in range(500):
            clock.now += 0.001
            assert not log.deny("n2", "bot", Action.CALL, "x.y", "default")
        assert log.deny("n2", "bot", Action.CALL, "x.z", "default")     # another question: written
        clock.now += 1.0
        assert log.deny("n2", "bot", Action.CALL, "x.y", "default")
    got = lines(tmp_path / "audit.jsonl")
    assert [(g["resource"], g["suppressed"]) for g in got] == [("x.y", 0), ("x.z", 0), ("x.y", 500)]
    assert len(caplog.records) == 3                                     # the log is not flooded either
    assert "+500 identical" in caplog.records[-1].getMessage()
    assert log.counts()["call"] == 503 and log.suppressed_total == 500
    log.close()


def test_close_writes_the_counts_still_waiting(tmp_path):
    log, clock = make(tmp_path)
    log.deny("n2", None, Action.PUBLISH, "a.b", "default")
    log.deny("n2", None, Action.PUBLISH, "a.b", "default")
    log.deny("n2", None, Action.PUBLISH, "a.b", "default")
    log.close()
    got = lines(tmp_path / "audit.jsonl")
    assert len(got) == 2 and got[1]["summary"] is True and got[1]["suppressed"] == 2
    assert got[1]["resource"] == "a.b" and "summary" not in got[0]
    log.close()                                                         # twice is harmless
    assert len(lines(tmp_path / "audit.jsonl")) == 2


def test_a_flood_of_distinct_denials_is_capped_and_every_denial_accounted_for(tmp_path):
    log, clock = make(tmp_path, max_lines_per_s=10, max_keys=50)
    total = 0
    for second in range(3):
        for i in range(1000):
            clock.now += 0.0005
            log.deny("evil", None, Action.CALL, f"a.m{i % 120}", "default")
            total += 1
        clock.now += 1.0
    written_before_close = log.lines_written
    log.close()
    got = lines(tmp_path / "audit.jsonl")
    # the budget: a burst of 10 plus 10 per second of (fake) time, not 3000 lines
    assert written_before_close <= 10 + 10 * 5
    accounted = sum(g["suppressed"] + g["dropped"] + (0 if g.get("summary") else 1) for g in got)
    assert accounted == total == sum(log.counts().values())
    assert log.dropped_total > 0


def test_rotation_keeps_a_bounded_number_of_files(tmp_path):
    log, clock = make(tmp_path, max_bytes=600, keep=2, interval_s=0)
    for i in range(60):
        clock.now += 1.0
        log.deny("n2", "bot", Action.SUBSCRIBE, f"topic.{i}", "default", trace_id=i)
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in names:
        assert os.path.getsize(tmp_path / name) <= 600
    newest = lines(tmp_path / "audit.jsonl")
    older = lines(tmp_path / "audit.jsonl.1")
    oldest = lines(tmp_path / "audit.jsonl.2")
    traces = [g["trace_id"] for g in oldest + older + newest]
    assert traces == list(range(60 - len(traces), 60))                  # contiguous, newest last


def test_keep_zero_starts_over(tmp_path):
    log, clock = make(tmp_path, max_bytes=300, keep=0, interval_s=0)
    for i in range(10):
        log.deny("n", None, Action.CALL, f"a.{i}", "default")
    log.close()
    assert os.listdir(tmp_path) == ["audit.jsonl"]
    assert lines(tmp_path / "audit.jsonl")[-1]["resource"] == "a.9"


def test_reopening_appends(tmp_path):
    log, _ = make(tmp_path)
    log.deny("n", None, Action.CALL, "a.b", "default")
    log.close()
    log2, _ = make(tmp_path)
    log2.deny("n", None, Action.CALL, "a.c", "default")
    log2.close()
    assert [g["resource"] for g in lines(tmp_path / "audit.jsonl")] == ["a.b", "a.c"]


def test_long_fields_are_cut(tmp_path):
    log, _ = make(tmp_path)
    log.deny("n", "a" * 10_000, Action.CALL, "m" * 10_000, "default")
    log.close()
    (got,) = lines(tmp_path / "audit.jsonl")
    assert len(got["agent"]) == len(got["resource"]) == MAX_FIELD_CHARS + 3


def test_without_a_file_it_still_counts_and_warns(caplog):
    log = AuditLog(None)
    with caplog.at_level(logging.WARNING, logger="mesh.audit"):
        log.deny("n", None, Action.KV_READ, "k", "default")
    assert log.counts()["kv_read"] == 1 and len(caplog.records) == 1
    log.close()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_counted_never_raised(caplog):
    log = AuditLog("/dev/full", interval_s=0)
    with caplog.at_level(logging.ERROR, logger="mesh.audit"):
        for i in range(5):
            log.deny("n", None, Action.CALL, f"a.{i}", "default")
    assert log.write_errors == 5
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    log.close()


def test_bad_limits_are_refused(tmp_path):
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "a", max_bytes=0)
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "a", max_lines_per_s=0)
