"""The replicated KV state machine: commands, revisions, exactly-once, leases, snapshots."""
from __future__ import annotations

import random

import pytest

from mesh.errors import ProtocolError
from mesh.kv import KVMachine, encode_command as cmd


def test_put_get_delete_with_revisions_and_versions():
    m = KVMachine()
    assert m.apply(1, cmd("c", 1, "put", "a", 1, 0))[0] == 1
    assert m.apply(2, cmd("c", 2, "put", "a", 2, 0))[0] == 2
    v = m.get("a")
    assert (v.value, v.create_rev, v.mod_rev, v.version) == (2, 1, 2, 2)
    assert m.apply(3, cmd("c", 3, "delete", "a"))[0] is True
    assert m.apply(4, cmd("c", 4, "delete", "a"))[0] is False
    assert m.get("a") is None and m.revision == 3


def test_cas_compares_the_current_value_and_none_means_absent():
    m = KVMachine()
    assert m.apply(1, cmd("c", 1, "cas", "k", None, "x", 0))[0] is True     # create if absent
    assert m.apply(2, cmd("c", 2, "cas", "k", None, "y", 0))[0] is False
    assert m.apply(3, cmd("c", 3, "cas", "k", "x", "y", 0))[0] is True
    assert m.apply(4, cmd("c", 4, "cas", "k", "y", None, 0))[0] is True     # delete if equal
    assert m.get("k") is None


def test_a_retried_command_is_applied_once_and_answered_again():
    m = KVMachine()
    first, changes = m.apply(1, cmd("c", 7, "put", "n", 1, 0, ack=7))
    again, no_changes = m.apply(2, cmd("c", 7, "put", "n", 99, 0, ack=7))    # the same (client, seq)
    assert again == first and no_changes == [] and m.get("n").value == 1
    # below what the client acknowledged: a command it can no longer be waiting for
    assert isinstance(m.apply(3, cmd("c", 6, "put", "n", 5, 0))[0], ProtocolError)
    assert m.get("n").value == 1


def test_changes_report_what_each_write_did():
    m = KVMachine()
    _, ch = m.apply(1, cmd("c", 1, "put", "a", "v", 0))
    assert [(c.key, c.value, c.revision, c.deleted) for c in ch] == [("a", "v", 1, False)]
    _, ch = m.apply(2, cmd("c", 2, "delete", "a"))
    assert [(c.key, c.revision, c.deleted) for c in ch] == [("a", 2, True)]


def test_leases_expire_their_keys_at_the_same_log_position_everywhere():
    m = KVMachine()
    lease, _ = m.apply(1, cmd("c", 1, "grant", 1000, 50))
    m.apply(2, cmd("c", 2, "put", "lock", "n1", lease))
    m.apply(3, cmd("c", 3, "put", "plain", 1, 0))
    assert m.lease(lease).deadline_ms == 1050
    assert m.apply(4, cmd("c", 4, "keepalive", lease, 900))[0] is True      # deadline 1900
    assert m.apply(5, cmd("", 0, "expire", [[lease, 1050]]))[0] == []     # kept alive since
    expired, changes = m.apply(6, cmd("", 0, "expire", [[lease, 1900], [99, 5]]))
    assert expired == [lease] and [c.key for c in changes] == ["lock"]
    assert m.get("lock") is None and m.get("plain").value == 1
    assert isinstance(m.apply(7, cmd("c", 5, "put", "x", 1, lease))[0], ProtocolError)  # lease gone


def test_malformed_commands_are_errors_not_crashes():
    m = KVMachine()
    for i, raw in enumerate([b"", b"\xc1", b"\x93\x01\x02\x03", cmd("c", 1, "frobnicate"),
                             cmd("c", 2, "put", "", 1, 0), cmd("c", 3, "put", "k"),
                             cmd("c", 4, "grant", -5, 0)], start=1):
        result, changes = m.apply(i, raw)
        assert isinstance(result, ProtocolError) and changes == []
    with pytest.raises(ValueError):
        m.apply(3, cmd("c", 9, "put", "k", 1, 0))      # an index applied twice is a driver bug


def test_snapshot_restores_the_same_state_and_sessions():
    rng = random.Random(5)
    a = KVMachine()
    lease, _ = a.apply(1, cmd("c0", 1, "grant", 500, 0))
    for i in range(2, 300):
        op = rng.choice(["put", "delete", "cas"])
        key = f"k{rng.randrange(20)}"
        if op == "put":
            a.apply(i, cmd(f"c{i % 7}", i, "put", key, rng.randrange(100), rng.choice([0, lease])))
        elif op == "delete":
            a.apply(i, cmd(f"c{i % 7}", i, "delete", key))
        else:
            a.apply(i, cmd(f"c{i % 7}", i, "cas", key, rng.randrange(100), rng.randrange(100), 0))
    b = KVMachine()
    b.restore(a.snapshot())
    assert b.snapshot() == a.snapshot()
    # both answer a duplicate the same way, and both expire the lease's keys
    assert a.apply(300, cmd("c5", 299, "put", "k1", -1, 0)) == b.apply(300, cmd("c5", 299, "put", "k1", -1, 0))
    assert a.apply(301, cmd("", 0, "expire", [[lease, a.lease(lease).deadline_ms]])) == \
        b.apply(301, cmd("", 0, "expire", [[lease, b.lease(lease).deadline_ms]]))
    assert a.snapshot() == b.snapshot()


def test_a_client_with_many_writes_in_flight_gets_each_applied_once_in_any_order():
    m = KVMachine()
    assert m.apply(1, cmd("c", 6, "put", "b", 2, 0, ack=5))[0] == 1      # 6 commits before 5
    assert m.apply(2, cmd("c", 5, "put", "a", 1, 0, ack=5))[0] == 2
    assert m.get("a").value == 1 and m.get("b").value == 2
    assert m.apply(3, cmd("c", 5, "put", "a", 1, 0, ack=5)) == (2, [])    # a retry: answered, not applied
    assert m.get("a").mod_rev == 2
    m.apply(4, cmd("c", 7, "put", "c", 3, 0, ack=7))                      # 5 and 6 answered
    late = m.apply(5, cmd("c", 5, "put", "a", 99, 0, ack=5))[0]
    assert isinstance(late, ProtocolError) and "stale" in str(late) and m.get("a").value == 1
    b = KVMachine()
    b.restore(m.snapshot())
    assert b.apply(6, cmd("c", 7, "put", "c", 3, 0, ack=7))[0] == 4       # the answer survives a snapshot


def test_a_snapshot_of_the_older_format_still_restores_and_a_newer_one_is_refused_clearly():
    import msgpack
    old = msgpack.packb({"applied": 3, "revision": 3, "next_lease": 1, "data": [["k", 1, 2, 3, 2, 0]],
                         "leases": [], "sessions": [["c", 3, {"ok": 3}]]}, use_bin_type=True)
    m = KVMachine()
    m.restore(old)
    assert m.get("k").value == 1
    assert m.apply(4, cmd("c", 3, "put", "k", 9, 0))[0] == 3      # the old session still dedups
    newer = msgpack.packb({"format": 99}, use_bin_type=True)
    with pytest.raises(ProtocolError, match="format 99"):
        KVMachine().restore(newer)
