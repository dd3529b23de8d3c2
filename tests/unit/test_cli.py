"""``python -m mesh.node`` option parsing and configuration errors."""
from __future__ import annotations

import subprocess
import sys

import pytest

from mesh.node.cli import ConfigError, build_parser, load_agent, load_config


def parse(*argv):
    return load_config(build_parser().parse_args(list(argv)))


def test_flags_win_over_the_config_file(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "from-file"\nbind = "tcp://127.0.0.1:7001"\njoin = ["tcp://127.0.0.1:7000"]\n'
                   'default_timeout = 2\n')
    c = parse("--config", str(cfg), "--id", "from-flag")
    assert (c.id, c.bind, c.join, c.default_timeout) == ("from-flag", "tcp://127.0.0.1:7001",
                                                         ["tcp://127.0.0.1:7000"], 2.0)


@pytest.mark.parametrize("toml, message", [
    ('id = "n"\nbogus = 1\n', "unknown key 'bogus'"),
    ('id = "n"\njoin = "tcp://x"\n', "'join' must be a list of strings"),
    ('id = "n"\ndefault_timeout = "fast"\n', "'default_timeout' must be a float"),
    ('id = "n"\ndefault_timeout = -1\n', "default_timeout: must be positive"),
    ('id = "n"\nlog_level = "loud"\n', "log_level"),
    ('bind = "tcp://127.0.0.1:1"\n', "id: a node id is required"),
    ('id = \n', "not valid TOML"),
    ('id = "n"\n[gossip]\nprobe_intervl_ms = 5\n', "unknown key 'gossip.probe_intervl_ms'"),
    ('id = "n"\n[gossip]\nprobe_interval_ms = "1s"\n', "'gossip.probe_interval_ms' must be an integer"),
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
    with pytest.raises(ConfigError, match=r"\[raft\] table takes only 'voters' and 'member'"):
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
    with pytest.raises(ConfigError, match="raft.member"):
        parse("--config", str(cfg))


def test_singletons_from_flag_or_file(tmp_path):
    assert parse("--id", "n1", "--singleton", "pkg.mod:Exec=exec").singleton == ["pkg.mod:Exec=exec"]
    cfg = tmp_path / "node.toml"
    cfg.write_text('id = "n1"\nsingleton = ["pkg.mod:Exec"]\n')
    assert parse("--config", str(cfg)).singleton == ["pkg.mod:Exec"]
