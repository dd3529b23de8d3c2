"""SIGKILL a process that appends and syncs; what it reported as synced must survive.

The child appends batches, advances the commit index, syncs, and prints ``synced N`` after
each sync returns; now and then it snapshots and compacts. The parent kills it with
SIGKILL at a seeded random moment, reopens the folder, and checks that every index the
child reported is present with the right bytes, that the log is a valid prefix (every
entry present is the one the child wrote: nothing torn, nothing foreign), and that the
hard state's commit index is at least the last reported one. The next round reopens the
same folder, so recovery of the previous crash is exercised too.

A process kill keeps the page cache, so this checks what the process controls (record
framing, write ordering, partial writes, recovery, rotation, compaction under kills);
lost-page behaviour of a power cut is covered by the byte-cut tests in
tests/unit/test_storage.py.
"""
from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mesh.storage import RaftStorage

ROOT = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("MESH_CRASH_SEED", "20240611"))
ROUNDS = 8

CHILD = r"""
import random, sys
from mesh.storage import Entry, HardState, RaftStorage, SnapshotMeta

def data_for(index):
    return (b"%d;" % index) * (1 + index % 17)

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
st = RaftStorage.open(path, segment_bytes=8192)
hs = st.hard_state
term = max(hs.term, st.last_term) + 1              # a new term per life, as after an election
st.set_hard_state(HardState(term, "self", hs.commit))
st.sync()
print("open", st.first_index, st.last_index, flush=True)
nxt = st.last_index + 1
while True:
    n = rng.randint(1, 25)
    st.append([Entry(i, term, i % 3, data_for(i)) for i in range(nxt, nxt + n)])
    nxt += n
    st.set_hard_state(HardState(term, "self", nxt - 1))
    st.sync()
    print("synced", nxt - 1, flush=True)
    if rng.random() < 0.05:
        s = nxt - 1 - rng.randint(0, 30)
        if s > st.snapshot_meta.index:
            st.save_snapshot(SnapshotMeta(s, st.term_at(s), b"cfg"), b"applied through %d" % s)
            print("snapshot", s, flush=True)
"""


def data_for(index: int) -> bytes:
    return (b"%d;" % index) * (1 + index % 17)


def _run_and_kill(path: Path, seed: int, kill_after_s: float) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(seed)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    buf = b""
    started = None
    try:
        deadline = time.monotonic() + 30.0
        while True:
            now = time.monotonic()
            if started is not None and now - started >= kill_after_s:
                break
            if now > deadline:
                pytest.fail("child never got going")
            ready, _, _ = select.select([proc.stdout], [], [], 0.01)
            if ready:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    _, err = proc.communicate()
                    pytest.fail(f"child exited early ({proc.returncode}): {err.decode()}")
                buf += chunk
                if started is None and b"\n" in buf:
                    started = time.monotonic()      # the clock starts once it has opened
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
    # a line the child printed before it died was printed after its sync returned
    buf += rest
    lines = buf.decode().splitlines()
    if buf and not buf.endswith(b"\n"):
        lines.pop()                                   # the kill cut a line short: ignore it
    assert proc.returncode == -signal.SIGKILL
    return lines


def test_entries_reported_synced_survive_sigkill(tmp_path):
    rng = random.Random(SEED)
    path = tmp_path / "raft"
    reported = 0
    total_synced_lines = 0
    snapshots = 0
    for round_no in range(ROUNDS):
        lines = _run_and_kill(path, rng.randrange(1 << 30), rng.uniform(0.02, 0.6))
        opened = lines[0].split()
        assert opened[0] == "open", lines[:1]
        # what the child recovered on its own open already had to hold the previous rounds
        assert int(opened[2]) >= reported, (round_no, opened)
        synced = [int(line.split()[1]) for line in lines if line.startswith("synced ")]
        snapshots += sum(1 for line in lines if line.startswith("snapshot "))
        total_synced_lines += len(synced)
        if synced:
            assert synced == sorted(synced)
            reported = max(reported, synced[-1])
        with RaftStorage.open(path) as st:
            assert st.last_index >= reported, (round_no, st.last_index, reported)
            assert st.hard_state.commit >= reported
            meta = st.snapshot_meta
            if meta.index:
                got = st.load_snapshot()
                assert got is not None and got[1] == b"applied through %d" % meta.index
            present = st.entries(st.first_index, st.last_index + 1)
            assert [e.index for e in present] == list(range(st.first_index, st.last_index + 1))
            for e in present:
                assert e.data == data_for(e.index) and e.kind == e.index % 3, e.index
            terms = [e.term for e in present]
            assert terms == sorted(terms)
    assert total_synced_lines > ROUNDS          # the kills did land in the middle of real work
    assert reported > 100
