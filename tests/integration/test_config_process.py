"""``python -m mesh.node`` as a real process: settings from a TOML file, the environment and
flags at once (``--print-config`` shows the effective values and their sources), and a real
start with JSON logs whose every line on standard error is a JSON object."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tomllib

import pytest

from mesh.node.config import ENV_CONFIG, OPTIONS
from tests.integration.cluster import ROOT

pytestmark = pytest.mark.integration


def node_env(**settings: str) -> dict[str, str]:
    """The test's environment without any node setting it may carry, plus ``settings``."""
    ours = {o.env for o in OPTIONS} | {ENV_CONFIG}
    env = {k: v for k, v in os.environ.items() if k not in ours}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env["MESH_INSECURE"] = "1"       # plaintext on loopback: these tests are about configuration
    return env | settings


def test_file_env_and_flags_combine_in_print_config(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('id = "pc1"\nlog_level = "debug"\nagent = ["tests.integration.agents:Calc"]\n'
                   '[gossip]\nprobe_interval_ms = 1000\n')
    env = node_env(MESH_CONFIG=str(cfg), MESH_JOIN="tcp://127.0.0.1:7000,tcp://127.0.0.1:7001",
                   MESH_LOG_LEVEL="warning", MESH_GOSSIP_SUSPICION_MULT="6")
    r = subprocess.run([sys.executable, "-m", "mesh.node", "--log-level", "error", "--metrics-port", "0",
                        "--print-config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = tomllib.loads(r.stdout)
    node = doc["node"]
    assert (node["id"], node["agent"], node["join"], node["log_level"], node["metrics_port"]) == (
        "pc1", ["tests.integration.agents:Calc"], ["tcp://127.0.0.1:7000", "tcp://127.0.0.1:7001"], "error", 0)
    assert (doc["gossip"]["probe_interval_ms"], doc["gossip"]["suspicion_mult"]) == (1000, 6)
    source = {line.split("=")[0].strip(): line.rsplit("# ", 1)[1]
              for line in r.stdout.splitlines() if line and line[0] != "#" and "=" in line}
    assert (source["id"], source["join"], source["log_level"], source["metrics_port"], source["bind"]) == (
        str(cfg), "MESH_JOIN", "--log-level", "--metrics-port", "default")
    assert (source["probe_interval_ms"], source["suspicion_mult"]) == (str(cfg), "MESH_GOSSIP_SUSPICION_MULT")
    assert f"# Config file: {cfg} (from {ENV_CONFIG})." in r.stdout


def test_invalid_env_value_stops_the_process_with_the_key():
    r = subprocess.run([sys.executable, "-m", "mesh.node", "--id", "bad1"], cwd=ROOT,
                       env=node_env(MESH_METRICS_PORT="abc"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == ("mesh.node: configuration error: MESH_METRICS_PORT: must be an integer "
                                "0..65535, got 'abc'")


def test_a_node_started_with_json_logs_writes_only_json_on_stderr(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "js1"\nagent = ["tests.integration.agents:Calc=calc-js"]\n')
    proc = subprocess.Popen([sys.executable, "-m", "mesh.node", "--config", str(cfg), "--log-level", "debug",
                             "--http-port", "0"],
                            cwd=ROOT, env=node_env(MESH_LOG_FORMAT="json", MESH_METRICS_PORT="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        # the web page's URL comes after the metrics word
        assert re.fullmatch(r"ready js1 tcp://127\.0\.0\.1:\d+ metrics=http://127\.0\.0\.1:\d+/metrics "
                            r"http=http://127\.0\.0\.1:\d+/\n", line), line
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    records = [json.loads(line) for line in err.splitlines()]   # every line, or it raises
    assert records, "a node at debug level logs something"
    for rec in records:
        assert rec["node"] == "js1" and rec["level"] in ("debug", "info", "warning", "error", "critical")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["ts"]) and rec["logger"] and "msg" in rec
    msgs = [rec["msg"] for rec in records]
    assert "stopping (signal)" in msgs and any(m.startswith("node js1 listening on tcp://") for m in msgs)
