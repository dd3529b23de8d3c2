// The live page of a mesh node: polls /api/mesh and redraws the members table, two line
// charts and the topology graph. No libraries: DOM and SVG by hand. Text from the mesh
// (node and agent names) only ever goes in through textContent, never as markup.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6fd8", "#e0662f", "#2a9d8f", "#b5489c", "#8a6d1f", "#5b8c2a", "#7a5cc7",
                 "#c2414b", "#1f8fb3", "#9c6b4e"];
const STATE_COLOUR = {alive: "#2e9d5b", suspect: "#d99a12", dead: "#d0453a", left: "#8a8f98"};
const FETCH_TIMEOUT_MS = 4000;

let colours = {};      // member id -> colour, stable for the life of the page
let updates = 0;

function colourOf(id) {
  if (!(id in colours)) colours[id] = PALETTE[Object.keys(colours).length % PALETTE.length];
  return colours[id];
}

function el(tag, attrs, text) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

function fmtRate(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 10000) return (v / 1000).toFixed(0) + "k";
  if (v >= 1000) return (v / 1000).toFixed(1) + "k";
  return v >= 10 ? v.toFixed(0) : v.toFixed(1);
}

function fmtMs(v) {
  if (v === null || v === undefined) return "–";
  if (v === 0) return "0";
  if (v < 1) return (v * 1000).toFixed(v < 0.01 ? 1 : 0) + " µs";
  if (v < 1000) return v.toFixed(v < 10 ? 2 : 1) + " ms";
  return (v / 1000).toFixed(2) + " s";
}

function cell(text, cls) {
  const td = el("td", cls ? {class: cls} : {});
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  return td;
}

// -- header -----------------------------------------------------------------------------------

function drawSummary(view) {
  document.getElementById("serving").textContent = "· " + view.node;
  const counts = {};
  for (const m of view.members) counts[m.state] = (counts[m.state] || 0) + 1;
  const box = document.getElementById("summary");
  box.replaceChildren();
  const parts = [["members", view.members.length]];
  for (const s of ["alive", "suspect", "dead", "left"]) if (counts[s]) parts.push([s, counts[s]]);
  for (const [label, n] of parts) {
    const span = el("span");
    span.append(el("b", {}, String(n)), " " + label);
    box.appendChild(span);
  }
  if (view.raft) {
    const r = el("span");
    r.append("raft leader ", el("b", {}, view.raft.leader || "(none)"), " · term ",
             el("b", {}, String(view.raft.term)), " · commit ", el("b", {}, String(view.raft.commit)));
    box.appendChild(r);
  }
}

// -- members table ----------------------------------------------------------------------------

function drawMembers(view) {
  const body = document.getElementById("members");
  body.replaceChildren();
  const leader = view.raft ? view.raft.leader : null;
  for (const m of view.members) {
    const fig = view.nodes[m.id] || {};
    const ok = fig.ok === true;
    const tr = el("tr", {"data-member": m.id, "data-state": m.state, class: ok || m.self ? "" : "gone"});
    const name = el("span");
    name.append(el("span", {class: "swatch"}), m.id);
    name.firstChild.style.background = colourOf(m.id);
    if (m.self) name.append(el("span", {class: "muted"}, " (this node)"));
    tr.appendChild(cell(name));
    tr.appendChild(cell(el("span", {class: "pill state-" + m.state}, m.state)));
    tr.appendChild(cell(m.link));
    tr.appendChild(cell(String(m.incarnation), "num"));
    const agents = el("span");
    for (const a of m.agents) {
      const load = ok ? fig.agents[a] : null;
      const chip = el("span", {class: "agent"}, a);
      if (load) chip.title = `${load.calls} calls · ${load.inflight} in flight · ${load.queued} queued · ` +
                             `${load.errors} errors · ${fmtMs(load.latency_ms)} avg`;
      agents.appendChild(chip);
    }
    if (m.system_agents) agents.append(el("span", {class: "muted"}, ` +${m.system_agents} system`));
    tr.appendChild(cell(agents));
    if (!ok) {
      const why = fig.error ? `no answer (${fig.error.type})` : `not asked (${m.state})`;
      const td = cell(why, "muted");
      td.colSpan = 8;
      tr.appendChild(td);
    } else {
      tr.appendChild(cell(fmtRate(fig.msgs_per_s), "num"));
      tr.appendChild(cell(fmtMs(fig.p50_ms), "num"));
      tr.appendChild(cell(fmtMs(fig.p99_ms), "num"));
      const raft = fig.raft;
      tr.appendChild(cell(raft ? raft.role : "–", raft && m.id === leader ? "leader" : ""));
      tr.appendChild(cell(raft ? String(raft.term) : "–", "num"));
      tr.appendChild(cell(raft ? String(raft.commit) : "–", "num"));
      tr.appendChild(cell(raft ? String(raft.applied) : "–", "num"));
      tr.appendChild(cell(fig.health === null || fig.health === undefined ? "–" : fig.health.toFixed(0), "num"));
    }
    body.appendChild(tr);
  }
}

// -- line charts --------------------------------------------------------------------------------

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// series: [{id, points: [[t, value], ...], dashed}]; format: tick label of a value.
function drawChart(svg, view, series, format) {
  const W = 420, H = 200, L = 52, R = 8, T = 8, B = 22;
  svg.replaceChildren();
  const now = view.time, span = view.history_s;
  const x = t => L + (W - L - R) * (1 - (now - t) / span);
  let top = 0;
  for (const s of series) for (const [, v] of s.points) if (v !== null && v > top) top = v;
  top = niceMax(top);
  const y = v => T + (H - T - B) * (1 - v / top);
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v);
    svg.appendChild(el("svg:line", {class: "grid", x1: L, x2: W - R, y1: yy, y2: yy}));
    svg.appendChild(el("svg:text", {class: "axis", x: L - 6, y: yy + 4, "text-anchor": "end"}, v ? format(v) : "0"));
  }
  for (const s of [60, 45, 30, 15, 0]) {
    if (s > span) continue;
    svg.appendChild(el("svg:text", {class: "axis", x: x(now - s), y: H - 6, "text-anchor": s ? "middle" : "end"},
                       s ? `-${s}s` : "now"));
  }
  let drawn = 0;
  for (const s of series) {
    let d = "", pen = false, n = 0, last = null;
    for (const [t, v] of s.points) {
      if (v === null || now - t > span) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + "," + y(v).toFixed(1);
      pen = true; n++; last = [t, v];
    }
    const path = el("svg:path", {class: "series" + (s.dashed ? " p50" : ""), d: d || "M0,0",
                                 "data-member": s.id, "data-points": String(n)});
    path.style.stroke = colourOf(s.id);
    svg.appendChild(path);
    if (last && !s.dashed) {
      const dot = el("svg:circle", {cx: x(last[0]), cy: y(last[1]), r: 3});
      dot.style.fill = colourOf(s.id);
      svg.appendChild(dot);
    }
    drawn += n;
  }
  const legend = svg.nextElementSibling;
  legend.replaceChildren();
  for (const id of new Set(series.map(s => s.id))) {
    const item = el("span", {}, id);
    const sw = el("span", {class: "swatch"});
    sw.style.background = colourOf(id);
    item.prepend(sw);
    legend.appendChild(item);
  }
  if (!drawn) {
    svg.appendChild(el("svg:text", {class: "empty", x: (L + W) / 2, y: H / 2, "text-anchor": "middle"},
                       "collecting… (a point per second)"));
  }
}

function drawCharts(view) {
  const rate = [], lat = [];
  for (const [id, pts] of Object.entries(view.series)) {
    rate.push({id, points: pts.map(p => [p[0], p[1]])});
    lat.push({id, points: pts.map(p => [p[0], p[3]])});
    lat.push({id, points: pts.map(p => [p[0], p[2]]), dashed: true});
  }
  drawChart(document.getElementById("chart-rate"), view, rate, fmtRate);
  drawChart(document.getElementById("chart-latency"), view, lat, fmtMs);
}

// -- topology -------------------------------------------------------------------------------------

function drawTopology(view) {
  const svg = document.getElementById("topology");
  svg.replaceChildren();
  const W = 320, H = 240, cx = W / 2, cy = H / 2, r = Math.min(W, H) / 2 - 36;
  const members = view.members.filter(m => m.state !== "left");
  const at = {};
  members.forEach((m, i) => {
    const a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(members.length, 1);
    at[m.id] = [cx + r * Math.cos(a), cy + r * Math.sin(a), a];
  });
  for (const [a, b, state] of view.edges) {
    if (!(a in at) || !(b in at)) continue;
    svg.appendChild(el("svg:line", {class: "edge " + state, "data-state": state, "data-edge": a + " " + b,
                                    x1: at[a][0], y1: at[a][1], x2: at[b][0], y2: at[b][1]}));
  }
  for (const m of members) {
    const [px, py, a] = at[m.id];
    const g = el("svg:g", {class: "node" + (m.self ? " self" : ""), "data-member": m.id, "data-state": m.state});
    const c = el("svg:circle", {cx: px, cy: py, r: 14});
    c.style.fill = STATE_COLOUR[m.state] || "#888";
    g.appendChild(c);
    const lx = px + 24 * Math.cos(a), ly = py + 24 * Math.sin(a) + 4;
    const anchor = Math.abs(Math.cos(a)) < 0.3 ? "middle" : (Math.cos(a) > 0 ? "start" : "end");
    g.appendChild(el("svg:text", {x: lx, y: ly + (Math.sin(a) > 0.7 ? 6 : 0), "text-anchor": anchor}, m.id));
    g.appendChild(el("svg:title", {}, `${m.id} · ${m.state} · ${m.address}`));
    svg.appendChild(g);
  }
}

// -- polling --------------------------------------------------------------------------------------

function setStatus(live, text) {
  document.getElementById("live-dot").className = "dot " + (live ? "live" : "stale");
  document.getElementById("updated").textContent = text;
}

async function poll() {
  let interval = 1000;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  try {
    const resp = await fetch("api/mesh", {cache: "no-store", signal: abort.signal});
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const view = await resp.json();
    interval = view.interval_s * 1000;
    drawSummary(view);
    drawMembers(view);
    drawCharts(view);
    drawTopology(view);
    document.body.dataset.updates = String(++updates);
    setStatus(true, "updated " + new Date(view.time * 1000).toLocaleTimeString());
  } catch (err) {
    setStatus(false, "no answer from the node (" + err.message + "), retrying");
  } finally {
    clearTimeout(timer);
    setTimeout(poll, interval);
  }
}

poll();
