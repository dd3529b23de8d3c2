"""Node configuration (:mod:`mesh.node.config`): defaults < TOML file < ``MESH_*`` environment <
flags, one option table for all three, errors that name the key and its source, and
``--print-config`` output that parses back as the same configuration."""
from __future__ import annotations

import dataclasses
import tomllib

import pytest

from mesh.node.cli import build_parser, main
from mesh.node.config import OPTIONS, ConfigError, NodeConfig, render_toml, resolve_config
from mesh.swim.config import SwimConfig


@pytest.fixture
def setup(tmp_path):
    """resolve(*flags, env={...}, toml="...") -> ResolvedConfig, with only the given environment."""
    path = tmp_path / "node.toml"

    def resolve(*flags: str, env: dict[str, str] | None = None, toml: str | None = None):
        argv = list(flags)
        if toml is not None:
            path.write_text(toml)
            argv += ["--config", str(path)]
        return resolve_config(build_parser().parse_args(argv), environ=env or {})

    resolve.path = str(path)
    return resolve


# (key, TOML text, env value, flag value(s), the value each gives, a second value for the flag)
CASES = [
    ("metrics_port", "metrics_port = 9000", "9001", ["--metrics-port", "9002"], (9000, 9001, 9002)),
    ("http_port", "http_port = 8000", "8001", ["--http-port", "8002"], (8000, 8001, 8002)),
    ("log_format", 'log_format = "kv"', "JSON", ["--log-format", "text"], ("kv", "json", "text")),
    ("default_timeout", "default_timeout = 2", "2.5", ["--default-timeout", "3"], (2.0, 2.5, 3.0)),
    ("join", 'join = ["tcp://127.0.0.1:1"]', "tcp://127.0.0.1:2, tcp://127.0.0.1:3",
     ["--join", "tcp://127.0.0.1:4"],
     (["tcp://127.0.0.1:1"], ["tcp://127.0.0.1:2", "tcp://127.0.0.1:3"], ["tcp://127.0.0.1:4"])),
    ("raft_voters", '[raft]\nvoters = ["n1"]', "n1,n2", ["--raft-voters", "n1,n2,n3"],
     (["n1"], ["n1", "n2"], ["n1", "n2", "n3"])),
    ("raft_member", "[raft]\nmember = true", "off", ["--raft-member"], (True, False, True)),
    ("gossip.probe_interval_ms", "[gossip]\nprobe_interval_ms = 700", "800",
     ["--gossip-probe-interval-ms", "900"], (700, 800, 900)),
]


@pytest.mark.parametrize("key, toml, env_value, flag, expect", CASES, ids=[c[0] for c in CASES])
def test_each_source_beats_the_ones_below(setup, key, toml, env_value, flag, expect):
    opt = next(o for o in OPTIONS if o.key == key)
    file_v, env_v, flag_v = expect
    base = ("--id", "n1", "--data-dir", "d")
    toml_text = toml + "\n"
    env = {opt.env: env_value}

    r = setup(*base)
    assert (r.value(key), str(r.sources[key])) == (opt.default, "default")
    r = setup(*base, toml=toml_text)                                   # default < file
    assert (r.value(key), r.sources[key].kind, r.sources[key].name) == (file_v, "file", setup.path)
    r = setup(*base, env=env)                                          # default < env
    assert (r.value(key), str(r.sources[key])) == (env_v, opt.env)
    r = setup(*base, *flag)                                            # default < flag
    assert (r.value(key), str(r.sources[key])) == (flag_v, opt.flag)
    r = setup(*base, env=env, toml=toml_text)                          # file < env
    assert (r.value(key), str(r.sources[key])) == (env_v, opt.env)
    r = setup(*base, *flag, toml=toml_text)                            # file < flag
    assert (r.value(key), str(r.sources[key])) == (flag_v, opt.flag)
    r = setup(*base, *flag, env=env, toml=toml_text)                   # env < flag
    assert (r.value(key), str(r.sources[key])) == (flag_v, opt.flag)


def test_three_sources_for_three_keys_at_once(setup):
    r = setup("--metrics-port", "9464", toml='id = "from-file"\n[node]\nlog_level = "debug"\n',
              env={"MESH_JOIN": "tcp://127.0.0.1:7000", "MESH_LOG_LEVEL": "warning"})
    c = r.config
    assert (c.id, c.join, c.log_level, c.metrics_port) == ("from-file", ["tcp://127.0.0.1:7000"], "warning", 9464)
    assert {k: str(r.sources[k]) for k in ("id", "join", "log_level", "metrics_port", "bind")} == {
        "id": setup.path, "join": "MESH_JOIN", "log_level": "MESH_LOG_LEVEL", "metrics_port": "--metrics-port",
        "bind": "default"}


def test_config_file_from_mesh_config_and_the_flag_wins(setup, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text('id = "from-env-file"\n')
    r = setup(env={"MESH_CONFIG": str(other)})
    assert (r.config.id, r.config_path, r.config_named_by) == ("from-env-file", str(other), "MESH_CONFIG")
    r = setup(env={"MESH_CONFIG": str(other)}, toml='id = "from-flag-file"\n')
    assert (r.config.id, r.config_named_by) == ("from-flag-file", "--config")
    with pytest.raises(ConfigError, match=r"^MESH_CONFIG: cannot read .*nope.toml"):
        setup(env={"MESH_CONFIG": str(tmp_path / "nope.toml")})


def test_lists_from_env_and_repeated_flags(setup):
    env = {"MESH_AGENT": " a.b:C=c1 ,, a.b:D ", "MESH_SINGLETON": "x.y:Z"}
    c = setup("--id", "n1", "--join", "tcp://127.0.0.1:1,tcp://127.0.0.1:2", "--join", "tcp://127.0.0.1:3",
              env=env).config
    assert c.agent == ["a.b:C=c1", "a.b:D"] and c.singleton == ["x.y:Z"]
    assert c.join == ["tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"]
    # a flag's list replaces the file's, it does not extend it
    c = setup("--agent", "a.b:E", toml='id = "n1"\nagent = ["a.b:C", "a.b:D"]\n').config
    assert c.agent == ["a.b:E"]


def test_empty_env_is_unset_and_unknown_mesh_vars_are_ignored(setup):
    r = setup(toml='id = "n1"\nmetrics_port = 1\n',
              env={"MESH_METRICS_PORT": "", "MESH_PURE": "1", "MESH_SIM_SEEDS": "5", "MESH_WHATEVER": "x"})
    assert r.config.metrics_port == 1 and r.warnings == []


def test_a_near_miss_of_a_setting_is_warned_about(setup):
    r = setup("--id", "n1", env={"MESH_METRIC_PORT": "9464", "MESH_JION": "tcp://127.0.0.1:1"})
    assert r.config.metrics_port is None and r.config.join == []
    assert sorted(r.warnings) == [
        "environment variable MESH_JION is not a mesh.node setting; did you mean MESH_JOIN?",
        "environment variable MESH_METRIC_PORT is not a mesh.node setting; did you mean MESH_METRICS_PORT?"]


def test_booleans(setup):
    for word, want in [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("No", False)]:
        assert setup("--id", "n1", "--data-dir", "d", env={"MESH_RAFT_MEMBER": word}).config.raft_member is want
    assert setup("--id", "n1", "--no-raft-member", env={"MESH_RAFT_MEMBER": "1"}).config.raft_member is False


# (how to pass it, bad value, the message, anchored at its start)
_BAD = [
    ("metrics_port", "abc", "must be an integer 0..65535, got 'abc'"),
    ("metrics_port", "70000", "must be an integer 0..65535, got '70000'"),
    ("http_port", "-1", "must be an integer 0..65535, got '-1'"),
    ("default_timeout", "fast", "must be a positive number of seconds, got 'fast'"),
    ("join_timeout", "0", "must be a positive number of seconds, got '0'"),
    ("drain_timeout", "inf", "must be a positive number of seconds, got 'inf'"),
    ("log_level", "loud", "must be one of debug, info, warning, error, got 'loud'"),
    ("log_format", "xml", "must be one of text, kv, json, got 'xml'"),
    ("bind", "7001", "must be a ZeroMQ endpoint such as tcp://127.0.0.1:7001, got '7001'"),
    ("join", "tcp://127.0.0.1:1,localhost", "item must be a ZeroMQ endpoint such as tcp://127.0.0.1:7001 or n1@tcp://127.0.0.1:7001, "
                                            "got 'localhost'"),
    ("agent", "nocolon", "item must be MODULE:CLASS[=NAME], got 'nocolon'"),
    ("raft_voters", "n1,seed:x", "item must be 1..255 bytes of UTF-8, not starting with NUL or 'seed:', "
                                 "got 'seed:x'"),
    ("id", "x" * 256, "must be 1..255 bytes of UTF-8"),
    ("gossip.probe_interval_ms", "1s", "must be an integer >= 0, got '1s'"),
]


@pytest.mark.parametrize("key, bad, message", _BAD, ids=[f"{k}={b[:12]}" for k, b, _ in _BAD])
def test_invalid_env_and_flag_values_name_the_key_and_source(setup, key, bad, message):
    opt = next(o for o in OPTIONS if o.key == key)
    with pytest.raises(ConfigError) as err:
        setup("--id", "n1", env={opt.env: bad})
    assert str(err.value).startswith(f"{opt.env}: {message}")
    with pytest.raises(ConfigError) as err:
        setup("--id", "n1", opt.flag, bad)
    assert str(err.value).startswith(f"{opt.flag}: {message}")


@pytest.mark.parametrize("toml, message", [
    ('metrics_port = "x"', 'metrics_port: must be an integer 0..65535, got "x"'),
    ("[node]\nmetrics_port = true", '[node] metrics_port: must be an integer 0..65535, got true'),
    ("[node]\nhttp_port = 1.5", "[node] http_port: must be an integer 0..65535, got 1.5"),
    ("default_timeout = false", "default_timeout: must be a positive number of seconds, got false"),
    ('log_format = 1', "log_format: must be a string, got 1"),
    ('join = ["tcp://127.0.0.1:1", 2]', 'join: must be a list of strings, got ["tcp://127.0.0.1:1", 2]'),
    ('[raft]\nvoters = "n1"', '[raft] voters: must be a list of strings, got "n1"'),
    ('[raft]\nmember = 1', "[raft] member: must be true or false, got 1"),
    ('[gossip]\nsuspicion_mult = -2', "[gossip] suspicion_mult: must be an integer >= 0, got -2"),
    ('data_dir = ""', "data_dir: must not be empty"),
])
def test_invalid_file_values_name_the_file_table_and_key(setup, toml, message):
    with pytest.raises(ConfigError) as err:
        setup("--id", "n1", toml=toml + "\n")
    assert str(err.value) == f"{setup.path}: {message}"


@pytest.mark.parametrize("toml, message", [
    ("bogus = 1", "unknown key 'bogus' (known: agent, bind, "),
    ("metrics-prot = 1", "unknown key 'metrics-prot' (did you mean metrics_port?)"),
    ("[securityy]\nkey = 1", "unknown table [securityy]"),
    ('node = "n1"', "'node' must be a table ([node]), got \"n1\""),
    ('id = "a"\n[node]\nid = "b"', "id is set twice (top level and [node])"),
    ("[node]\ngossip = 1", "unknown key 'gossip' in [node]"),
])
def test_bad_file_layout(setup, toml, message):
    with pytest.raises(ConfigError) as err:
        setup("--id", "n1", toml=toml + "\n")
    assert str(err.value).startswith(f"{setup.path}: {message}")


def test_dashed_keys_and_the_node_table(setup):
    c = setup(toml='[node]\nid = "n1"\ndata-dir = "d"\nhttp-port = 0\nhttp_host = "0.0.0.0"\n').config
    assert (c.data_dir, c.http_port, c.http_host) == ("d", 0, "0.0.0.0")


def test_rules_across_options_name_the_sources(setup):
    with pytest.raises(ConfigError, match=r"^id: a node id is required \(--id, MESH_ID or id in the config file\)"):
        setup(env={"MESH_BIND": "tcp://127.0.0.1:1"})
    with pytest.raises(ConfigError, match=r"^data_dir: node 'n1' keeps a Raft log \(it is among raft_voters, "
                                          r"from MESH_RAFT_VOTERS\)"):
        setup("--id", "n1", env={"MESH_RAFT_VOTERS": "n1,n2"})
    with pytest.raises(ConfigError) as err:
        setup("--id", "n1", "--gossip-probe-timeout-ms", "600", toml="[gossip]\nprobe_interval_ms = 500\n")
    assert str(err.value) == (f"gossip: SwimConfig.probe_timeout_ms must be shorter than probe_interval_ms "
                              f"(probe_interval_ms = 500 from {setup.path}, "
                              f"probe_timeout_ms = 600 from --gossip-probe-timeout-ms)")


def test_one_table_drives_flags_env_and_toml():
    node_fields = {f.name for f in dataclasses.fields(NodeConfig)} - {"gossip"}
    keys = [o.key for o in OPTIONS]
    assert set(keys) == node_fields | {f"gossip.{f.name}" for f in dataclasses.fields(SwimConfig)}
    for spelling in ("flag", "env"):
        names = [getattr(o, spelling) for o in OPTIONS]
        assert len(set(names)) == len(names), spelling
    assert {(o.table, o.toml_key) for o in OPTIONS if o.table == "raft"} == {("raft", "voters"), ("raft", "member")}
    assert next(o for o in OPTIONS if o.key == "gossip.gossip_fanout").toml_key == "gossip_fanout"
    helptext = build_parser().format_help()
    for o in OPTIONS:
        assert o.flag in helptext and o.env in helptext, o.key


def test_print_config_parses_back_and_names_sources(setup, capsys, tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('id = "n\\"1 é"\ndata_dir = "d"\n[gossip]\nsuspicion_mult = 5\n[raft]\nvoters = ["n1"]\n')
    env = {"MESH_JOIN": "tcp://127.0.0.1:7000,tcp://127.0.0.1:7001", "MESH_PURE": "1"}
    rc = main(["--config", str(path), "--log-format", "json", "--print-config"], environ=env)
    out = capsys.readouterr().out
    assert rc == 0
    doc = tomllib.loads(out)
    assert doc["node"]["id"] == 'n"1 é' and doc["node"]["log_format"] == "json"
    assert doc["node"]["join"] == ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"]
    assert doc["gossip"]["suspicion_mult"] == 5 and doc["gossip"]["probe_interval_ms"] == 500
    assert doc["raft"] == {"voters": ["n1"], "member": False}
    assert "metrics_port" not in doc["node"]             # unset: a comment
    lines = {line.split("=")[0].strip(): line for line in out.splitlines() if "=" in line and line[0] != "#"}
    assert lines["id"].endswith(f"# {path}") and lines["join"].endswith("# MESH_JOIN")
    assert lines["log_format"].endswith("# --log-format") and lines["bind"].endswith("# default")
    assert lines["suspicion_mult"].endswith(f"# {path}") and lines["voters"].endswith(f"# {path}")
    assert f"# Config file: {path} (from --config)." in out
    assert any(line.startswith("# metrics_port is not set") and line.endswith("# default") for line in out.splitlines())

    # the printed file, given back as the only source, is the same configuration
    again = tmp_path / "again.toml"
    again.write_text(out)
    before = setup("--config", str(path), "--log-format", "json", env=env)
    after = setup("--config", str(again))
    b, a = before.config, after.config
    assert SwimConfig(**a.gossip) == SwimConfig(**b.gossip)
    assert dataclasses.replace(a, gossip={}) == dataclasses.replace(b, gossip={})
    assert tomllib.loads(render_toml(after)) == doc


def test_print_config_of_an_invalid_configuration_exits_2(capsys):
    assert main(["--id", "n1", "--print-config"], environ={"MESH_METRICS_PORT": "abc"}) == 2
    err = capsys.readouterr().err
    assert err.strip() == "mesh.node: configuration error: MESH_METRICS_PORT: must be an integer 0..65535, got 'abc'"


def test_print_config_warns_about_near_misses_on_stderr(capsys):
    assert main(["--id", "n1", "--print-config"], environ={"MESH_LOG_LEVL": "debug"}) == 0
    captured = capsys.readouterr()
    assert "did you mean MESH_LOG_LEVEL?" in captured.err
    assert tomllib.loads(captured.out)["node"]["log_level"] == "info"
