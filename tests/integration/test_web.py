"""The live web page (:mod:`mesh.observe.web`): its JSON from nodes in this process with known
traffic, its HTTP routes, and the page itself in headless Chromium against three node
processes, one of which is killed while the page watches."""
from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

import mesh
from mesh.observe.histogram import LogHistogram
from mesh.observe.web import MeshView, interval_figures, raft_summary, topology_edges
from tests.conftest import run_async
from tests.integration.agents import Calc
from tests.integration.cdp import Browser, find_chromium
from tests.integration.cluster import ROOT, NodeProcess

pytestmark = pytest.mark.integration


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# -- the figures, as pure functions --------------------------------------------------------

def sample(now_s: float, values_ns: list[int]) -> tuple[float, int, dict[int, int]]:
    h = LogHistogram()
    for v in values_ns:
        h.record(v)
    return now_s, h.count, {i: n for i, n in enumerate(h.counts) if n}


def test_interval_figures_read_only_the_runs_in_between():
    before = sample(10.0, [1_000] * 50)                               # 50 runs of 1 µs
    after = sample(12.0, [1_000] * 50 + [2_000_000] * 99 + [50_000_000])   # then 99 of 2 ms, 1 of 50 ms
    rate, p50, p99 = interval_figures(before, after)
    assert rate == 50.0                                   # 100 runs in 2 s of the node's clock
    assert p50 == pytest.approx(2.0, rel=1 / 64)          # the 1 µs runs before do not count
    assert p99 == pytest.approx(2.0, rel=1 / 64)
    assert interval_figures(before, sample(12.0, [1_000] * 50)) == (0.0, None, None)   # idle
    assert interval_figures(after, before) is None        # counts went down: a restart
    assert interval_figures(before, sample(10.0, [1_000] * 60)) is None   # no time passed


def test_topology_edges_are_down_when_any_side_says_so():
    members = [{"id": i, "state": s} for i, s in (("a", "alive"), ("b", "alive"), ("c", "suspect"), ("d", "left"))]
    links = {"a": {"b": "up", "c": "down", "d": "down"}, "b": {"a": "up", "c": "up", "x": "up"}}
    assert topology_edges(members, links) == [["a", "b", "up"], ["a", "c", "down"], ["b", "c", "up"]]
    links["b"]["a"] = "down"
    assert ["a", "b", "down"] in topology_edges(members, links)


def test_raft_summary_takes_the_highest_term():
    r = {"id": "a", "role": "follower", "term": 3, "leader": "b", "commit": 7, "voters": ["a", "b", "c"]}
    stale = {**r, "id": "c", "role": "leader", "term": 2, "leader": "c", "commit": 5}
    assert raft_summary({"a": r, "c": stale}) == {"leader": "b", "term": 3, "commit": 7, "voters": ["a", "b", "c"]}
    assert raft_summary({}) is None


# -- /api/mesh and the routes, nodes in this process ---------------------------------------

def test_api_mesh_reports_what_the_nodes_did(tmp_path):
    async def main():
        a = mesh.Node("a", http_port=0, data_dir=tmp_path / "a", raft_voters=["a"])
        await a.start()
        b = mesh.Node("b", seeds=[a.address])
        b.add(Calc("calc-b"))
        c = mesh.Node("c", seeds=[a.address])
        c.add(Calc("calc-c"))
        await b.start()
        await c.start()
        try:
            deadline = time.monotonic() + 10
            while not {"calc-b", "calc-c"} <= set(a.directory()):
                assert time.monotonic() < deadline, "agents never reached a's directory"
                await asyncio.sleep(0.02)
            await a.kv.put("web/x", 1)
            for i in range(40):
                await a.call("calc-b", "add", i, 1)

            view = MeshView(a, cache_s=0.0)
            first = await view.gather()
            assert first["node"] == "a"
            members = {m["id"]: m for m in first["members"]}
            assert sorted(members) == ["a", "b", "c"] and all(m["state"] == "alive" for m in members.values())
            assert members["b"]["agents"] == ["calc-b"] and members["b"]["system_agents"] == 1   # _ops.b
            assert members["a"]["self"] and members["a"]["link"] == "self" and members["b"]["link"] == "up"
            assert first["nodes"]["b"]["ok"] and first["nodes"]["b"]["runs"] == 40   # _ops calls not counted
            assert first["nodes"]["b"]["agents"]["calc-b"]["calls"] == 40
            assert first["nodes"]["c"]["runs"] == 0
            assert first["nodes"]["a"]["raft"]["role"] == "leader" and first["raft"]["leader"] == "a"
            assert first["nodes"]["a"]["raft"]["commit"] >= 2          # the no-op and the put
            assert first["nodes"]["b"]["raft"] is None
            assert first["edges"] == [["a", "b", "up"], ["a", "c", "up"], ["b", "c", "up"]]
            assert all(first["series"][n] == [] for n in "abc")         # one sample: no interval yet

            for i in range(25):
                await a.call("calc-b", "add", i, 1)
            second = await view.gather()
            nb = second["nodes"]["b"]
            assert nb["runs"] == 65 and nb["msgs_per_s"] > 0 and 0 < nb["p50_ms"] <= nb["p99_ms"]
            assert second["nodes"]["c"]["msgs_per_s"] == 0.0 and second["nodes"]["c"]["p99_ms"] is None
            (t, rate, p50, p99), = second["series"]["b"]
            assert (rate, p50, p99) == (nb["msgs_per_s"], nb["p50_ms"], nb["p99_ms"]) and t == second["time"]

            # a member whose _ops agent does not answer is shown as such; the rest is intact
            c.remove("_ops.c")
            third = await view.gather()
            assert third["nodes"]["c"] == {"ok": False, "error": {"type": "UnknownAgent",
                                                                   "message": third["nodes"]["c"]["error"]["message"]}}
            assert third["nodes"]["b"]["ok"] and third["series"]["c"][-1][1:] == [None, None, None]

            # over HTTP: the page, its script and style, the JSON, metrics and health
            url = a.http_url
            assert url.startswith("http://127.0.0.1:") and url.endswith("/")
            status, headers, body = await asyncio.to_thread(fetch, url)
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert b'src="page.js"' in body and b"://" not in body          # nothing from elsewhere
            assert "default-src 'self'" in headers["Content-Security-Policy"]
            for path, kind in (("page.js", "text/javascript"), ("page.css", "text/css"),
                               ("api/mesh", "application/json"), ("health", "application/json"),
                               ("metrics", "text/plain")):
                status, headers, body = await asyncio.to_thread(fetch, url + path)
                assert status == 200 and headers["Content-Type"].startswith(kind), path
                if path.startswith("page."):      # the SVG namespace is a name, not a download
                    assert b"://" not in body.replace(b"http://www.w3.org/2000/svg", b""), path
            api = json.loads((await asyncio.to_thread(fetch, url + "api/mesh"))[2])
            assert sorted(m["id"] for m in api["members"]) == ["a", "b", "c"]
            assert b"mesh_members" in (await asyncio.to_thread(fetch, url + "metrics"))[2]
            assert (await asyncio.to_thread(fetch, url + "nope"))[0] == 404
            status, headers, body = await asyncio.to_thread(fetch, url + "api/mesh", "HEAD")
            assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0
            assert (await asyncio.to_thread(fetch, url, "POST"))[0] == 405
        finally:
            await c.stop()
            await b.stop()
            await a.stop()
        assert a.http_url is None
    run_async(main)


def test_view_is_cached_and_gathered_once_for_many_readers():
    async def main():
        a = mesh.Node("solo", http_port=None)
        await a.start()
        try:
            now = [100.0]
            view = MeshView(a, cache_s=0.5, clock=lambda: now[0])
            gathered = 0
            real = view.gather

            async def counting():
                nonlocal gathered
                gathered += 1
                return await real()
            view.gather = counting
            bodies = await asyncio.gather(*(view.json() for _ in range(8)))
            assert gathered == 1 and len(set(bodies)) == 1
            now[0] += 0.4
            assert await view.json() == bodies[0] and gathered == 1     # still fresh
            now[0] += 0.2
            await view.json()
            assert gathered == 2
        finally:
            await a.stop()
    run_async(main)


# -- the page in a browser, three node processes ---------------------------------------------

class WebNodeProcess:
    """``python -m tests.integration.web_node``: a node process serving the page."""

    def __init__(self, node_id: str, args: list[str]) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.web_node", "--id", node_id, *args],
                                     cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready "):
            self.terminate()
            raise RuntimeError(f"web node {node_id} did not start: {line!r}")
        _, _, self.address, http = line.split()
        self.url = http.split("=", 1)[1]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait_for(browser: Browser, expression: str, what: str, timeout: float = 30.0):
    """Evaluate ``expression`` in the page until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            state = browser.evaluate("document.getElementById('members').innerText")
            raise AssertionError(f"the page never showed {what}; it shows:\n{state}")
        time.sleep(0.2)


ROWS_JS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('#members tr')]
    .map(tr => [tr.dataset.member, tr.dataset.state])))"""
POINTS_JS = """JSON.stringify(Object.fromEntries([...document.querySelectorAll('#chart-rate path.series')]
    .map(p => [p.dataset.member, +p.dataset.points])))"""
TOPOLOGY_JS = """JSON.stringify({nodes: Object.fromEntries([...document.querySelectorAll('#topology g.node')]
    .map(g => [g.dataset.member, g.dataset.state])),
    edges: [...document.querySelectorAll('#topology line.edge')].map(e => [e.dataset.edge, e.dataset.state])})"""


@pytest.mark.skipif(find_chromium() is None, reason="no chromium binary on PATH (Debian: apt-get install chromium)")
def test_page_shows_every_member_and_follows_a_kill(tmp_path):
    voters = ["n1", "n2", "n3"]
    web = WebNodeProcess("n1", ["--data-dir", str(tmp_path / "n1"), "--raft-voters", ",".join(voters),
                                "--traffic", "calc", "--rate", "50"])
    procs: list[NodeProcess] = []
    try:
        for nid in ("n2", "n3"):
            procs.append(NodeProcess(nid, [f"tests.integration.agents:Calc=calc-{nid}"], join=[web.address],
                                     data_dir=tmp_path / nid, raft_voters=voters).start())
        with Browser(find_chromium(), web.url) as browser:
            rows = json.loads(wait_for(browser, f"""(() => {{ const r = {ROWS_JS};
                const o = JSON.parse(r); return ['n1','n2','n3'].every(n => o[n] === 'alive') && r; }})()""",
                                       "three alive members"))
            assert rows == {"n1": "alive", "n2": "alive", "n3": "alive"}
            text = browser.evaluate("document.body.innerText")
            assert "calc-n2" in text and "calc-n3" in text and "raft leader" in text
            # charts: every member gets points as the page polls; traffic shows on the calc nodes
            points = json.loads(wait_for(browser, f"""(() => {{ const p = JSON.parse({POINTS_JS});
                return ['n1','n2','n3'].every(n => p[n] >= 2) && JSON.stringify(p); }})()""",
                                         "two chart points per member"))
            assert set(points) == {"n1", "n2", "n3"}
            api = json.loads(fetch(web.url + "api/mesh")[2])
            assert any(p[1] and p[1] > 0 and p[3] is not None for n in ("n2", "n3") for p in api["series"][n])
            topo = json.loads(browser.evaluate(TOPOLOGY_JS))
            assert topo["nodes"] == {"n1": "alive", "n2": "alive", "n3": "alive"}
            assert sorted(topo["edges"]) == [["n1 n2", "up"], ["n1 n3", "up"], ["n2 n3", "up"]]

            # kill -9 one node: the same page (never reloaded) must show it suspect or dead
            browser.evaluate("window.meshTestMark = 1")
            updates = int(browser.evaluate("document.body.dataset.updates"))
            procs[1].kill()
            state = wait_for(browser, """(() => { const tr = document.querySelector('#members tr[data-member="n3"]');
                return tr && ['suspect', 'dead'].includes(tr.dataset.state) && tr.dataset.state; })()""",
                             "n3 suspect or dead after kill -9")
            assert state in ("suspect", "dead")
            assert browser.evaluate("window.meshTestMark") == 1                      # not reloaded
            assert int(browser.evaluate("document.body.dataset.updates")) > updates
            assert json.loads(browser.evaluate(ROWS_JS))["n2"] == "alive"
            topo = json.loads(wait_for(browser, f"""(() => {{ const t = {TOPOLOGY_JS};
                return JSON.parse(t).edges.some(e => e[1] === 'down') && t; }})()""", "a link down"))
            assert topo["nodes"]["n3"] in ("suspect", "dead") and ["n1 n2", "up"] in topo["edges"]
    finally:
        for p in procs:
            p.kill()
        web.terminate()
