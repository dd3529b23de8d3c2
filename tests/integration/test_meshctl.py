"""``meshctl`` against a running mesh: three real node processes (Raft voters, each hosting a
``Calc``), meshctl run as a subprocess the way an operator runs it, every sub-command in human
and ``--json`` form. No timing assertions."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys

import pytest

from mesh.tools.meshctl import parse_value, percentile
from mesh.tools.tables import render
from tests.integration.cluster import ROOT, NodeProcess

pytestmark = pytest.mark.integration

VOTERS = ["n1", "n2", "n3"]
CALCS = ["calc-1", "calc-2", "calc-3"]


@pytest.fixture(scope="module")
def mesh_nodes(tmp_path_factory):
    base = tmp_path_factory.mktemp("meshctl")
    procs = []
    try:
        for i, nid in enumerate(VOTERS, 1):
            join = [procs[0].address] if procs else []
            procs.append(NodeProcess(nid, [f"tests.integration.agents:Calc=calc-{i}"], join=join,
                                     data_dir=base / nid, raft_voters=VOTERS).start())
        yield procs
    finally:
        for p in procs:
            p.terminate()


@pytest.fixture(scope="module")
def meshctl(mesh_nodes):
    seed = mesh_nodes[1].address

    def run(*args: str, expect: int | None = 0, env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mesh.tools.meshctl", "--join", seed, "--timeout", "10", *args]
        done = subprocess.run(cmd, cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=60)
        if expect is not None:
            assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
        return done
    # the store answers before any test asks (the first election may still be running)
    run("kv", "put", "meshctl-test/ready", "1")
    return run


def _env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("MESH_JOIN", None)
    env.update(extra or {})
    return env


def as_json(done: subprocess.CompletedProcess):
    return json.loads(done.stdout)


def test_status(meshctl):
    text = meshctl("status").stdout
    assert "3 alive" in text and all(c in text for c in CALCS) and "_ops" not in text
    data = as_json(meshctl("status", "--json"))
    assert sorted(data["members"]["alive"]) == VOTERS
    assert data["agents"] == {f"calc-{i}": f"n{i}" for i in (1, 2, 3)}
    assert data["system_agents"] >= 6                       # _ops.* and _raft.* on each node
    raft = data["raft"]
    assert raft["leader"] in VOTERS and raft["term"] >= 1 and raft["commit"] >= 1
    assert sorted(raft["voters"]) == VOTERS


def test_members(meshctl):
    lines = meshctl("members").stdout.splitlines()
    assert lines[0].split()[:3] == ["NODE", "ADDRESS", "STATE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(VOTERS) and all(r[2] == "alive" and r[5] == "1" for r in rows.values())
    data = as_json(meshctl("--json", "members"))           # --json before the sub-command too
    assert {m["id"]: m["state"] for m in data} == dict.fromkeys(VOTERS, "alive")
    assert all(m["link"] == "up" and f"_ops.{m['id']}" in m["agents"] for m in data)


def test_agents_hide_system_agents_unless_all(meshctl):
    text = meshctl("agents").stdout
    assert all(c in text for c in CALCS) and "_ops." not in text and "_raft." not in text
    everything = meshctl("agents", "--all").stdout
    assert "_ops.n1" in everything and "_raft.n3" in everything
    data = as_json(meshctl("agents", "--json"))
    assert [(a["name"], a["node"], a["capabilities"]) for a in data] == \
        [(f"calc-{i}", f"n{i}", ["calc"]) for i in (1, 2, 3)]
    assert all(set(a["load"]) >= {"inflight", "queued", "calls", "errors", "latency_ms"} for a in data)


def test_raft(meshctl):
    text = meshctl("raft").stdout
    assert all(v in text for v in VOTERS) and "leader" in text
    data = as_json(meshctl("raft", "--json"))
    assert data["leader"] in VOTERS and sorted(data["nodes"]) == VOTERS
    roles = sorted(s["role"] for s in data["nodes"].values())
    assert roles.count("leader") == 1 and data["nodes"][data["leader"]]["role"] == "leader"


def test_kv_put_get_ls_del(meshctl):
    assert meshctl("kv", "put", "meshctl-test/limit", '{"max": 1000}').stdout.startswith("revision ")
    put = as_json(meshctl("kv", "put", "meshctl-test/name", "hello", "--json"))
    assert put["value"] == "hello" and put["revision"] > 0              # not JSON: kept as a string
    assert json.loads(meshctl("kv", "get", "meshctl-test/limit").stdout) == {"max": 1000}
    assert meshctl("kv", "get", "meshctl-test/name").stdout == "hello\n"
    assert as_json(meshctl("kv", "get", "meshctl-test/limit", "--json"))["value"] == {"max": 1000}
    listed = as_json(meshctl("kv", "ls", "meshctl-test/", "--json"))["items"]
    assert listed["meshctl-test/limit"] == {"max": 1000} and listed["meshctl-test/name"] == "hello"
    assert "meshctl-test/name" in meshctl("kv", "ls", "meshctl-test/").stdout
    assert as_json(meshctl("kv", "del", "meshctl-test/name", "--json"))["deleted"] is True
    missing = meshctl("kv", "get", "meshctl-test/name", expect=1)
    assert missing.stdout == "" and "no key" in missing.stderr
    assert as_json(meshctl("kv", "get", "meshctl-test/name", "--json", expect=1))["found"] is False


@pytest.mark.parametrize("as_json_output", [False, True])
def test_kv_watch_sees_a_put_made_meanwhile(mesh_nodes, meshctl, as_json_output):
    cmd = [sys.executable, "-m", "mesh.tools.meshctl", "--join", mesh_nodes[0].address, "--timeout", "10",
           "kv", "watch", "meshctl-watch/", "--count", "2"] + (["--json"] if as_json_output else [])
    watch = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        ready, _, _ = select.select([watch.stderr], [], [], 30)
        assert ready and watch.stderr.readline().startswith("watching"), "the watch did not start"
        meshctl("kv", "put", "meshctl-watch/a", "[1, 2]")
        meshctl("kv", "del", "meshctl-watch/a")
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    if as_json_output:
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["kind"], e["key"], e["value"]) for e in events] == \
            [("put", "meshctl-watch/a", [1, 2]), ("delete", "meshctl-watch/a", None)]
        assert events[0]["revision"] < events[1]["revision"]
    else:
        lines = out.splitlines()
        assert len(lines) == 2 and lines[0].split()[1:] == ["put", "meshctl-watch/a", "[1,", "2]"]
        assert lines[1].split()[1:] == ["delete", "meshctl-watch/a"]


def test_call(meshctl):
    assert meshctl("call", "calc-2", "add", "2", "3").stdout == "5\n"
    assert as_json(meshctl("call", "calc-1", "add", "[1]", "[2]", "--json")) == {"result": [1, 2]}
    assert meshctl("call", "--any", "calc", "add", '"a"', "b").stdout == "ab\n"   # "b": not JSON, a string
    assert meshctl("call", "calc-3", "whoami").stdout == "n3\n"


def test_call_errors_exit_1_with_the_error_class(meshctl):
    unknown = meshctl("call", "no-such-agent", "add", "1", "2", expect=1)
    assert unknown.stdout == "" and unknown.stderr.startswith("UnknownAgent: ")
    data = as_json(meshctl("call", "no-such-agent", "add", "--json", expect=1))
    assert data["error"]["type"] == "UnknownAgent" and "no-such-agent" in data["error"]["message"]
    failed = meshctl("call", "calc-1", "fail", "bad input", expect=1)
    assert failed.stderr.startswith("RemoteError: ValueError") and "bad input" in failed.stderr
    assert as_json(meshctl("call", "calc-1", "fail", "--json", expect=1))["error"]["remote_type"] == "ValueError"
    assert meshctl("call", "calc-1", "no_such_method", expect=1).stderr.startswith("UnknownMethod: ")


def test_top(meshctl):
    text = meshctl("top", "--once", "--interval", "0.3").stdout
    assert all(c in text for c in CALCS) and all(v in text for v in VOTERS) and "CALLS/S" in text
    assert "_ops." not in text
    frames = [json.loads(line) for line in meshctl("top", "--iterations", "2", "--interval", "0.2",
                                                   "--json").stdout.splitlines()]
    assert len(frames) == 2
    for frame in frames:
        assert sorted(n["node"] for n in frame["nodes"]) == VOTERS
        assert sorted(a["agent"] for a in frame["agents"]) == CALCS
        assert all(a["calls_per_s"] is not None and a["calls_per_s"] >= 0 for a in frame["agents"])


def test_bench(meshctl):
    done = meshctl("bench", "calc-1", "add", "1", "2", "--calls", "200", "--concurrency", "4")
    assert "200 calls" in done.stdout and "p99" in done.stdout and "p999" in done.stdout
    assert "errors      none" in done.stdout and "200/200" in done.stderr      # the progress bar
    data = as_json(meshctl("bench", "--any", "calc", "add", "1", "2", "--calls", "200", "--json"))
    assert data["calls"] == 200 and data["ok"] == 200 and data["errors"] == {}
    assert 0 < data["rtt_us_p50"] <= data["rtt_us_p99"] <= data["rtt_us_p999"] <= data["rtt_us_max"]
    assert data["calls_per_s"] > 0
    assert meshctl("bench", "no-such-agent", "add", "--calls", "5", expect=1).stderr.startswith("UnknownAgent")


def test_join_from_the_environment_and_usage_errors(mesh_nodes):
    cmd = [sys.executable, "-m", "mesh.tools.meshctl", "members", "--json"]
    ok = subprocess.run(cmd, cwd=ROOT, env=_env({"MESH_JOIN": mesh_nodes[2].address}), capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and {m["id"] for m in json.loads(ok.stdout)} == set(VOTERS)
    none = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert none.returncode == 2 and "MESH_JOIN" in none.stderr


def test_formatting_helpers():
    assert parse_value("3") == 3 and parse_value('{"a": [1]}') == {"a": [1]} and parse_value("AAPL") == "AAPL"
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0 and percentile([5.0], 0.999) == 5.0
    assert percentile([], 0.5) is None
    assert render(["NAME", "N"], [["a", 1], ["long-name", 100]], numeric=(1,)).splitlines() == \
        ["NAME         N", "a            1", "long-name  100"]
