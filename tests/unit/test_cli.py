"""``python -m mesh.node`` option parsing and configuration errors."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from mesh.node.cli import ConfigError, build_parser, load_agent, load_config, run


def parse(*argv):
    return load_config(build_parser().parse_args(list(argv)), environ={})


def test_flags_win_over_the_config_file(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "from-file"\nbind = "tcp://127.0.0.1:7001"\njoin = ["tcp://127.0.0.1:7000"]\n'
                   'default_timeout = 2\n')
    c = parse("--config", str(cfg), "--id", "from-flag")
    assert (c.id, c.bind, c.join, c.default_timeout) == ("from-flag", "tcp://127.0.0.1:7001",
                                                         ["tcp://127.0.0.1:7000"], 2.0)


@pytest.mark.parametrize("toml, message", [
    ('id = "n"\nbogus = 1\n', "unknown key 'bogus'"),
    ('id = "n"\njoin = "tcp://x"\n', "node.toml: join: must be a list of strings"),
    ('id = "n"\ndefault_timeout = "fast"\n', 'default_timeout: must be a positive number of seconds, got "fast"'),
    ('id = "n"\ndefault_timeout = -1\n', "default_timeout: must be a positive number of seconds, got -1"),
    ('id = "n"\nlog_level = "loud"\n', "log_level"),
    ('bind = "tcp://127.0.0.1:1"\n', "id: a node id is required"),
    ('id = \n', "not valid TOML"),
    ('id = "n"\n[gossip]\nprobe_intervl_ms = 5\n', r"unknown key 'probe_intervl_ms' in \[gossip\] \(did you mean probe_interval_ms"),
    ('id = "n"\n[gossip]\nprobe_interval_ms = "1s"\n', r"\[gossip\] probe_interval_ms: must be an integer"),
    ('id = "n"\n[gossip]\nprobe_interval_ms = 100\nprobe_timeout_ms = 200\n', "probe_timeout_ms must be shorter"),
])
def test_invalid_config_names_the_key(tmp_path, toml, message):
    cfg = tmp_path / "node.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        parse("--config", str(cfg))


def test_agent_specs():
    agent = load_agent("tests.integration.agents:Calc=calc-9")
    assert agent.name == "calc-9"
    assert load_agent("tests.integration.agents:Calc").name == "calc"
    assert load_agent("tests.integration.agents:Calc=_place.{id}", "n7").name == "_place.n7"
    for bad in ("nocolon", "no.such.module:X", "tests.integration.agents:Nope", "mesh.errors:MeshError"):
        with pytest.raises(ConfigError):
            load_agent(bad)


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "mesh.node", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--id", "--bind", "--join", "--agent", "--data-dir", "--config", "--log-level"):
        assert flag in out


def test_bad_config_exits_2_with_the_message(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mesh.node", "--bind", "tcp://127.0.0.1:*"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "node id is required" in r.stderr


def test_gossip_table_tunes_swim(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "n1"\n[gossip]\nprobe_interval_ms = 1000\nsuspicion_mult = 5\n')
    assert parse("--config", str(cfg)).gossip == {"probe_interval_ms": 1000, "suspicion_mult": 5}


def test_raft_voters_from_flag_or_table(tmp_path):
    assert parse("--id", "n1", "--data-dir", str(tmp_path), "--raft-voters", "n1, n2,n3").raft_voters == ["n1", "n2", "n3"]
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "n2"\ndata_dir = "d"\n[raft]\nvoters = ["n1", "n2"]\n')
    assert parse("--config", str(cfg)).raft_voters == ["n1", "n2"]
    with pytest.raises(ConfigError, match="data_dir: node 'n1' keeps a Raft log"):
        parse("--id", "n1", "--raft-voters", "n1,n2")
    cfg.write_text('id = "n2"\n[raft]\nvoterz = ["n1"]\n')
    with pytest.raises(ConfigError, match=r"unknown key 'voterz' in \[raft\] \(did you mean voters\?\)"):
        parse("--config", str(cfg))


def test_a_raft_member_is_not_a_bootstrap_voter_but_keeps_a_log(tmp_path):
    assert parse("--id", "n4", "--data-dir", str(tmp_path), "--raft-member").raft_member is True
    assert parse("--id", "n4").raft_member is False
    cfg = tmp_path / "node.toml"
    cfg.write_text('id = "n4"\ndata_dir = "d"\n[raft]\nvoters = ["n1"]\nmember = true\n')
    assert parse("--config", str(cfg)).raft_member is True
    with pytest.raises(ConfigError, match="data_dir: node 'n4' keeps a Raft log"):
        parse("--id", "n4", "--raft-member")
    cfg.write_text('id = "n4"\n[raft]\nmember = "yes"\n')
    with pytest.raises(ConfigError, match=r'\[raft\] member: must be true or false, got "yes"'):
        parse("--config", str(cfg))


def test_singletons_from_flag_or_file(tmp_path):
    assert parse("--id", "n1", "--singleton", "pkg.mod:Exec=exec").singleton == ["pkg.mod:Exec=exec"]
    cfg = tmp_path / "node.toml"
    cfg.write_text('id = "n1"\nsingleton = ["pkg.mod:Exec"]\n')
    assert parse("--config", str(cfg)).singleton == ["pkg.mod:Exec"]


class _FakeNode:
    """Stands in for mesh.Node to see what ``run`` passes it and prints; its start asks the
    process to stop at once (the real SIGTERM path)."""

    made: list[dict] = []

    def __init__(self, node_id, bind, seeds, data_dir, **kwargs):
        self.made.append(kwargs)
        self.node_id, self.address, self.metrics_url = node_id, "tcp://127.0.0.1:5555", None
        if kwargs["http_port"] is not None:
            self.http_url = f"http://{kwargs['http_host']}:{kwargs['http_port'] or 8080}/"

    def add(self, agent, singleton=False):
        pass

    async def start(self):
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    async def stop(self):
        pass


def test_run_passes_the_web_page_options_and_prints_its_url(monkeypatch, capsys):
    import mesh

    monkeypatch.setattr(mesh, "Node", _FakeNode)
    _FakeNode.made.clear()
    assert asyncio.run(run(parse("--id", "n1", "--insecure", "--http-port", "0", "--http-host", "127.0.0.2"))) == 0
    assert capsys.readouterr().out == "ready n1 tcp://127.0.0.1:5555 http=http://127.0.0.2:8080/\n"
    assert asyncio.run(run(parse("--id", "n1", "--insecure"))) == 0
    assert capsys.readouterr().out == "ready n1 tcp://127.0.0.1:5555\n"
    assert [(m["http_port"], m["http_host"]) for m in _FakeNode.made] == [(0, "127.0.0.2"), (None, "127.0.0.1")]


def test_security_is_on_unless_asked_off(tmp_path):
    """Without keys the node refuses to start, naming the way out; --insecure is refused
    off loopback; keys without trust, or keys with --insecure, are configuration errors."""
    import asyncio

    import pytest

    from mesh.node.cli import run

    with pytest.raises(ConfigError, match="keys: security is on by default.*--insecure"):
        asyncio.run(run(parse("--id", "n1")))
    with pytest.raises(ConfigError, match="not a loopback address"):
        asyncio.run(run(parse("--id", "n1", "--insecure", "--bind", "tcp://0.0.0.0:*")))
    with pytest.raises(ConfigError, match="trust: keys are given"):
        parse("--id", "n1", "--keys", str(tmp_path / "n1.key"))
    with pytest.raises(ConfigError, match="insecure: keys are given"):
        parse("--id", "n1", "--keys", "k", "--trust", "t", "--insecure")
