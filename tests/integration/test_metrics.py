"""Prometheus metrics and health on real sockets: nodes in this process serve /metrics, known
traffic is driven through them, and a scrape parsed with prometheus_client must show exactly
that traffic; the same through ``python -m mesh.node --metrics-port 0``."""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import mesh
from mesh.errors import RemoteError
from mesh.node.cli import ConfigError, build_parser, load_config
from tests.conftest import run_async
from tests.integration.cluster import ROOT

pytestmark = pytest.mark.integration


class Calc(mesh.Agent):
    @mesh.rpc
    async def add(self, a, b):
        if a < 0:
            raise ValueError("negative")
        return a + b

    @mesh.rpc
    def ping(self):
        return "pong"


def fetch(url: str, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


async def scrape(node: mesh.Node) -> dict[tuple[str, tuple], float]:
    """Every sample of ``node``'s /metrics as {(name, sorted labels): value} (off the loop thread:
    the server runs on the node's loop)."""
    status, ctype, text = await asyncio.to_thread(fetch, node.metrics_url)
    assert status == 200 and ctype.startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_scrape_matches_the_traffic_sent(tmp_path):
    async def main():
        a = mesh.Node("ma", metrics_port=0, load_interval=0.1, raft_voters=["ma"], data_dir=tmp_path / "ma")
        a.add(Calc("calc"))
        b = mesh.Node("mb", metrics_port=0, load_interval=0.1)
        await a.start()
        b.seeds = [a.address]
        await b.start()
        try:
            assert a.metrics_url.startswith("http://127.0.0.1:") and a.metrics_url != b.metrics_url
            failed = 0
            for i in range(100):                       # 100 calls from mb, 5 of which raise
                try:
                    await b.call("calc", "add", -1 if i % 20 == 0 else i, 1, timeout=5)
                except RemoteError:
                    failed += 1
            assert failed == 5
            for _ in range(10):                        # local calls are counted too
                assert await a.call("calc", "ping") == "pong"
            await a.kv.put("k", 1)

            sa, sb = await scrape(a), await scrape(b)
            calc = {"agent": "calc", "method": "add"}
            assert value(sa, "mesh_handler_messages_total", **calc) == 100
            assert value(sa, "mesh_handler_errors_total", **calc) == 5
            assert value(sa, "mesh_handler_duration_seconds_count", **calc) == 100
            assert value(sa, "mesh_handler_duration_seconds_bucket", le="+Inf", **calc) == 100
            assert 0 < value(sa, "mesh_handler_duration_seconds_sum", **calc) < 5
            buckets = sorted((float(dict(k[1])["le"]), v) for k, v in sa.items()
                             if k[0] == "mesh_handler_duration_seconds_bucket" and dict(k[1])["method"] == "add")
            assert [v for _, v in buckets] == sorted(v for _, v in buckets)      # cumulative
            p50 = value(sa, "mesh_handler_latency_seconds", quantile="0.5", **calc)
            p999 = value(sa, "mesh_handler_latency_seconds", quantile="0.999", **calc)
            assert 0 < p50 <= p999 < 5
            assert value(sa, "mesh_handler_messages_total", agent="calc", method="ping") == 10
            assert value(sa, "mesh_handler_errors_total", agent="calc", method="ping") == 0
            assert value(sa, "mesh_calls_received_total") == 100
            assert value(sa, "mesh_error_replies_sent_total") == 5
            assert value(sa, "mesh_request_handler_errors_total") == 5
            assert value(sb, "mesh_calls_sent_total") == 100
            assert value(sb, "mesh_calls_in_flight") == 0
            assert value(sa, "mesh_agent_in_flight", agent="calc") == 0
            assert value(sa, "mesh_agent_mailbox_depth", agent="calc") == 0
            assert value(sa, "mesh_frames_malformed_total") == 0
            assert value(sb, "mesh_sent_bytes_total") > 0
            assert value(sb, "mesh_breakers", state="closed") == 1              # mb's breaker for calc
            for s in (sa, sb):
                assert value(s, "mesh_members", state="alive") == 2
                assert value(s, "mesh_members", state="dead") == 0
            assert value(sa, "mesh_node_info", node="ma", address=a.address, implementation=mesh.IMPLEMENTATION) == 1
            # Raft on the voter, nothing of it on the other node
            assert value(sa, "mesh_raft_term") >= 1
            assert value(sa, "mesh_raft_is_leader") == 1
            assert value(sa, "mesh_raft_leader", leader="ma") == 1
            assert value(sa, "mesh_raft_role", role="leader") == 1
            assert value(sa, "mesh_raft_commit_index") >= 1
            assert value(sa, "mesh_raft_applied_index") == value(sa, "mesh_raft_commit_index")
            assert not any(name.startswith("mesh_raft_term") for name, _ in sb)
            # health: a gauge, the same figures as node.health()
            score = value(sa, "mesh_health_score")
            assert 0 <= score <= 100
            assert value(sa, "mesh_health_term_score", term="errors") < 100    # 5 failures in the window

            # the health score spreads by gossip: each node sees both in its mesh figure
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while loop.time() < deadline:
                hb = b.health()
                if hb["parts"]["members"] == 2 and a.health()["parts"]["members"] == 2:
                    break
                await asyncio.sleep(0.05)
            ha = a.health()
            assert ha["parts"]["members"] == 2 and hb["parts"]["members"] == 2
            assert set(ha) == {"node", "mesh", "parts"}
            assert {"response_time", "throughput", "errors", "avg_response_time_s", "throughput_per_s",
                    "error_rate", "mesh_min"} <= set(ha["parts"])
            assert ha["parts"]["error_rate"] > 0
            published = next(m for m in b.members() if m["id"] == "ma")["load"]["health"]
            assert 0 <= published <= 100
            assert min(published, hb["node"]) <= hb["mesh"] <= max(published, hb["node"])

            # the other endpoints
            status, ctype, body = await asyncio.to_thread(fetch, a.metrics_url.replace("/metrics", "/health"))
            assert status == 200 and ctype == "application/json" and set(json.loads(body)) == {"node", "mesh", "parts"}
            status, _, _ = await asyncio.to_thread(fetch, a.metrics_url.replace("/metrics", "/nope"))
            assert status == 404
            status, ctype, body = await asyncio.to_thread(fetch, a.metrics_url, "application/openmetrics-text")
            assert status == 200 and ctype.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
        finally:
            url = b.metrics_url
            await b.stop()
            await a.stop()
        assert a.metrics_url is None
        with pytest.raises(urllib.error.URLError):          # the server went with the node
            await asyncio.to_thread(urllib.request.urlopen, url, None, 2)

    run_async(main)


def test_no_metrics_server_unless_asked():
    async def main():
        async with mesh.Node("plain") as node:
            assert node.metrics_url is None
            assert node.health()["node"] == pytest.approx(60.0)      # idle: see mesh.observe.health

    run_async(main)


def test_metrics_port_from_flags_and_toml(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nid = "n1"\nmetrics_port = 9464\n')
    c = load_config(build_parser().parse_args(["--config", str(cfg)]))
    assert (c.metrics_port, c.metrics_host) == (9464, "127.0.0.1")
    c = load_config(build_parser().parse_args(["--config", str(cfg), "--metrics-port", "0",
                                               "--metrics-host", "0.0.0.0"]))
    assert (c.metrics_port, c.metrics_host) == (0, "0.0.0.0")
    assert load_config(build_parser().parse_args(["--id", "n1"])).metrics_port is None
    for bad in ('id = "n"\nmetrics_port = "x"\n', 'id = "n"\nmetrics_port = true\n', 'id = "n"\nmetrics_port = 70000\n'):
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match="metrics_port"):
            load_config(build_parser().parse_args(["--config", str(cfg)]))


def test_cli_metrics_port_zero_prints_the_url_after_the_address():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "mesh.node", "--insecure", "--id", "cm1", "--log-level", "warning",
                             "--agent", "tests.integration.agents:Calc=calc-cm", "--metrics-port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""
        words = line.split()
        assert words[:2] == ["ready", "cm1"] and words[2].startswith("tcp://"), line
        assert words[3].startswith("metrics=http://127.0.0.1:") and words[3].endswith("/metrics")
        status, _, text = fetch(words[3].split("=", 1)[1])
        assert status == 200
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        assert value(samples, "mesh_node_info", node="cm1", address=words[2], implementation=mesh.IMPLEMENTATION) == 1
        assert value(samples, "mesh_agent_in_flight", agent="calc-cm") == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
