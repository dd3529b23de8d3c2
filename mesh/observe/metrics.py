"""Prometheus metrics of one node, read from its own state at scrape time.

Theory of operation
-------------------
* Each node has its own :class:`prometheus_client.CollectorRegistry` (several nodes may share
  a process, as in tests) with one :class:`NodeCollector`. The collector keeps no numbers of
  its own: at each scrape it reads what the node keeps anyway — ``node.stats()`` (its counters
  and those of transport, gossip and Raft), each agent's mailbox (``node.agent_load``), the
  per-method handler statistics (:mod:`mesh.observe.handlers`), circuit breakers, gossip
  members, Raft status and the health window. The hot path pays only for the handler
  histograms, which nothing else could give.
* :class:`MetricsServer` answers ``GET /metrics`` (text format 0.0.4, or OpenMetrics when the
  scraper asks for it) and ``GET /health`` (``node.health()`` as JSON) over plain HTTP on the
  node's event loop, so a scrape reads the node between two loop iterations, never while a
  handler changes it; there is no thread (:mod:`mesh.observe.http`, shared with the web page,
  which serves the same two paths through :func:`metrics_routes`). It listens on 127.0.0.1
  unless told otherwise, and serves one request per connection, a bounded number at once.
* Names follow Prometheus conventions: ``mesh_`` prefix, base units (seconds, bytes) last,
  ``_total`` on counters. Labels are bounded: agents and methods hosted here (methods come
  from the agents' rpc tables), breakers only while not closed, Raft followers.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from mesh.observe.http import Handler, NodeServer, Request, Response

if TYPE_CHECKING:
    from mesh.node.runtime import Node

log = logging.getLogger(__name__)

# Handler-time histogram boundaries, seconds (the Prometheus ``le`` buckets).
BUCKETS_S = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
             0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKETS_NS = tuple(round(b * 1e9) for b in BUCKETS_S)
# Quantiles of the handler-time summary, read from the log-bucketed data (1.6 % resolution).
QUANTILES = (0.5, 0.9, 0.99, 0.999)

# node.stats() key -> (metric name, help). Counters get ``_total`` added by the client.
COUNTERS = {
    "calls_out": ("mesh_calls_sent", "Calls this node made to agents on other nodes."),
    "calls_in": ("mesh_calls_received", "Calls received from other nodes (answered or not)."),
    "sends_out": ("mesh_sends_sent", "One-way messages sent to agents on other nodes."),
    "sends_in": ("mesh_sends_received", "One-way messages received from other nodes."),
    "publishes_out": ("mesh_publishes_sent", "Messages published by this node."),
    "publishes_in": ("mesh_publishes_received", "Published messages received from other nodes."),
    "errors_out": ("mesh_error_replies_sent", "ERROR replies sent to callers on other nodes."),
    "handler_errors": ("mesh_request_handler_errors", "Handlers of requests from other nodes that raised."),
    "timeouts": ("mesh_call_timeouts", "Calls made here that timed out."),
    "expired": ("mesh_requests_expired", "Requests dropped because their deadline had passed."),
    "late_replies": ("mesh_late_replies", "Replies that came after their caller had given up."),
    "malformed": ("mesh_malformed_messages", "Messages dropped because their body did not decode."),
    "protocol_errors": ("mesh_protocol_errors", "Messages or metadata that broke the protocol, dropped."),
    "rejected": ("mesh_requests_rejected", "Requests refused as Overloaded (mailbox full)."),
    "circuit_open": ("mesh_circuit_open_rejections", "Calls failed fast because a circuit breaker was open."),
    "retries": ("mesh_call_retries", "Retries of idempotent calls."),
    "frames_in": ("mesh_frames_received", "ZeroMQ frames received."),
    "frames_out": ("mesh_frames_sent", "ZeroMQ frames sent."),
    "bytes_in": ("mesh_received_bytes", "Bytes received in frames."),
    "bytes_out": ("mesh_sent_bytes", "Bytes sent in frames."),
    "unroutable": ("mesh_frames_unroutable", "Frames dropped because no link could carry them."),
    "malformed_frames": ("mesh_frames_malformed", "Frames dropped because they did not decode."),
    "internal_errors": ("mesh_transport_internal_errors", "Frames whose handling failed inside the node."),
    "empty_wakeups": ("mesh_transport_empty_wakeups", "Socket wake-ups that found no frame."),
    "gossip_in": ("mesh_gossip_messages_received", "SWIM messages received."),
    "gossip_out": ("mesh_gossip_messages_sent", "SWIM messages sent."),
    "gossip_malformed": ("mesh_gossip_malformed", "SWIM messages dropped as malformed."),
    "gossip_dropped": ("mesh_gossip_dropped", "SWIM messages dropped before sending (no link, queue full)."),
    "raft_in": ("mesh_raft_messages_received", "Raft messages received."),
    "raft_out": ("mesh_raft_messages_sent", "Raft messages sent."),
    "raft_malformed": ("mesh_raft_malformed", "Raft messages dropped as malformed."),
    "raft_readies": ("mesh_raft_readies", "Raft Ready batches carried out."),
    "raft_fsyncs": ("mesh_raft_fsyncs", "fsync calls of the Raft log."),
    "subscription_drops": ("mesh_subscription_drops", "Published messages dropped by full subscriptions."),
    "gossip_forged": ("mesh_gossip_records_forged", "Membership records dropped: their signature failed."),
    "unauthorized": ("mesh_acl_denials", "Requests, publishes, subscriptions and KV operations the ACL denied."),
    "frames_throttled": ("mesh_frames_throttled", "Frames dropped unread: their peer sent over its rate."),
    "frames_banned": ("mesh_frames_banned", "Frames dropped unread: their peer is banned."),
    "bad_frames": ("mesh_peer_bad_frames", "Frames a decoder rejected, counted against their peer."),
    "peers_banned": ("mesh_peers_banned", "Bans of misbehaving peers (flooding or malformed frames)."),
    "links_refused": ("mesh_links_refused", "Connections refused: key not trusted, banned, or not its node's."),
    "handshakes_failed": ("mesh_link_handshakes_failed", "CURVE handshakes of our links that failed."),
    "no_trusted_key": ("mesh_links_without_key", "Links not opened: no trusted key for the peer."),
}
GAUGES = {
    "pending_calls": ("mesh_calls_in_flight", "Calls made here still waiting for an answer."),
    "running_handlers": ("mesh_handlers_running", "Handler and delivery tasks running on this node."),
    "gossip_health": ("mesh_gossip_local_health", "Lifeguard local health (0 is healthy)."),
    "incarnation": ("mesh_gossip_incarnation", "This node's SWIM incarnation."),
}
_SKIPPED = {"members_live", "breakers_open"}     # exported with labels below
_MEMBER_STATES = ("alive", "suspect", "dead", "left")
_BREAKER_STATES = ("closed", "open", "half_open")


class NodeCollector:
    """Reads one node's state into metric families at each scrape (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily("mesh_node_info", "This node: id, bound address, hot-path implementation.",
                                 labels=["node", "address", "implementation"])
        info.add_metric([node.node_id, node.address, node.implementation], 1)
        yield info
        yield GaugeMetricFamily("mesh_node_start_time_seconds", "When the node object was made (Unix time).",
                                value=node.boot / 1e9)
        yield from self._stats(node.stats())
        yield from self._health()
        yield from self._agents()
        yield from self._handlers()
        yield from self._subscriptions()
        yield from self._breakers()
        yield from self._members()
        yield from self._raft()

    def _stats(self, stats: dict[str, Any]) -> Iterator[Metric]:
        for key, value in stats.items():
            if key in COUNTERS:
                name, doc = COUNTERS[key]
                yield CounterMetricFamily(name, doc, value=value)
            elif key in GAUGES:
                name, doc = GAUGES[key]
                yield GaugeMetricFamily(name, doc, value=value)
            elif key not in _SKIPPED and isinstance(value, (int, float)):
                m = Metric(f"mesh_stats_{key}", f"node.stats()[{key!r}] (not yet given a metric of its own).",
                           "unknown")
                m.add_sample(m.name, {}, value)
                yield m

    def _health(self) -> Iterator[Metric]:
        h = self.node.health()
        parts = h["parts"]
        yield GaugeMetricFamily("mesh_health_score", "Health of this node, 0..100 (design document 5.1) "
                                "over the last window.", value=h["node"])
        term = GaugeMetricFamily("mesh_health_term_score", "The unweighted terms of the health score, 0..100.",
                                 labels=["term"])
        for name in ("response_time", "throughput", "errors"):
            term.add_metric([name], parts[name])
        yield term
        if h["mesh"] is not None:
            yield GaugeMetricFamily("mesh_health_mesh_mean_score", "Mean health of the live members that "
                                    "published one (this node included).", value=h["mesh"])
            yield GaugeMetricFamily("mesh_health_mesh_min_score", "Lowest health among the live members.",
                                    value=parts["mesh_min"])

    def _agents(self) -> Iterator[Metric]:
        node = self.node
        labels = ["agent"]
        inflight = GaugeMetricFamily("mesh_agent_in_flight", "Handlers of the agent running now.", labels=labels)
        depth = GaugeMetricFamily("mesh_agent_mailbox_depth", "Requests waiting in the agent's mailbox.",
                                  labels=labels)
        capacity = GaugeMetricFamily("mesh_agent_mailbox_capacity", "Requests the mailbox may hold.", labels=labels)
        limit = GaugeMetricFamily("mesh_agent_concurrency_limit", "Handlers the agent may run at once.",
                                  labels=labels)
        latency = GaugeMetricFamily("mesh_agent_latency_ewma_seconds", "EWMA of the agent's handler time.",
                                    labels=labels)
        rejected = CounterMetricFamily("mesh_agent_rejected", "Requests refused as Overloaded.", labels=labels)
        expired = CounterMetricFamily("mesh_agent_expired", "Queued requests dropped after their deadline.",
                                      labels=labels)
        for name, box in list(node._boxes.items()):
            load = node.agent_load(name)
            inflight.add_metric([name], load["inflight"])
            depth.add_metric([name], load["queued"])
            capacity.add_metric([name], box.capacity)
            limit.add_metric([name], box.limit)
            latency.add_metric([name], load["latency_ms"] / 1000.0)
            rejected.add_metric([name], load["rejected"])
            expired.add_metric([name], load["expired"])
        yield from (inflight, depth, capacity, limit, latency, rejected, expired)

    def _handlers(self) -> Iterator[Metric]:
        labels = ["agent", "method"]
        messages = CounterMetricFamily("mesh_handler_messages", "Requests and one-way messages handled, by "
                                       "agent and method.", labels=labels)
        errors = CounterMetricFamily("mesh_handler_errors", "Handlers that raised or timed out, by agent and "
                                     "method.", labels=labels)
        hist = HistogramMetricFamily("mesh_handler_duration_seconds", "Handler time, by agent and method.",
                                     labels=labels)
        summary = Metric("mesh_handler_latency_seconds", "Handler time quantiles from the node's log-bucketed "
                         "histograms (1.6 % resolution), since the node started.", "summary")
        for (agent, method), stats in list(self.node._handled.by_method.items()):
            h = stats.histogram
            messages.add_metric([agent, method], h.count)
            errors.add_metric([agent, method], stats.errors)
            cumulative = h.cumulative(_BUCKETS_NS)
            buckets = [(_le(b), n) for b, n in zip(BUCKETS_S, cumulative)] + [("+Inf", h.count)]
            hist.add_metric([agent, method], buckets, h.total / 1e9)
            series = {"agent": agent, "method": method}
            for q in QUANTILES:
                summary.add_sample(summary.name, dict(series, quantile=str(q)), h.value_at_quantile(q) / 1e9)
            summary.add_sample(summary.name + "_count", series, h.count)
            summary.add_sample(summary.name + "_sum", series, h.total / 1e9)
        yield from (messages, errors, hist, summary)

    def _subscriptions(self) -> Iterator[Metric]:
        labels = ["agent", "handler"]
        queued = GaugeMetricFamily("mesh_subscription_queued", "Messages waiting for a subscribing handler.",
                                   labels=labels)
        delivered = CounterMetricFamily("mesh_subscription_delivered", "Messages delivered to a subscribing "
                                        "handler.", labels=labels)
        dropped = CounterMetricFamily("mesh_subscription_dropped", "Messages a full subscription dropped.",
                                      labels=labels)
        errors = CounterMetricFamily("mesh_subscription_errors", "Subscribing handler runs that raised.",
                                     labels=labels)
        for s in self.node.subscription_stats():
            key = [s["agent"], s["handler"]]
            queued.add_metric(key, s["queued"])
            delivered.add_metric(key, s["delivered"])
            dropped.add_metric(key, s["dropped"])
            errors.add_metric(key, s["errors"])
        yield from (queued, delivered, dropped, errors)

    def _breakers(self) -> Iterator[Metric]:
        node = self.node
        counts = dict.fromkeys(_BREAKER_STATES, 0)
        state = GaugeMetricFamily("mesh_breaker_state", "1 for each target agent whose circuit breaker here "
                                  "is not closed, labelled with its state.", labels=["target", "state"])
        for target in list(node._breakers):
            s = node.breaker_state(target)
            counts[s] = counts.get(s, 0) + 1
            if s != "closed":
                state.add_metric([target, s], 1)
        total = GaugeMetricFamily("mesh_breakers", "Circuit breakers kept by this node, by state.",
                                  labels=["state"])
        for s, n in counts.items():
            total.add_metric([s], n)
        yield from (total, state)

    def _members(self) -> Iterator[Metric]:
        counts = dict.fromkeys(_MEMBER_STATES, 0)
        for m in self.node._gossip.members():
            s = m.state.name.lower()
            counts[s] = counts.get(s, 0) + 1
        fam = GaugeMetricFamily("mesh_members", "Members this node knows (itself included), by SWIM state.",
                                labels=["state"])
        for s, n in counts.items():
            fam.add_metric([s], n)
        yield fam

    def _raft(self) -> Iterator[Metric]:
        raft = self.node._raft
        if raft is None or raft._core is None:
            return
        st = raft.status()
        for key, name, doc in (("term", "mesh_raft_term", "Current Raft term."),
                               ("commit", "mesh_raft_commit_index", "Highest log index known committed."),
                               ("applied", "mesh_raft_applied_index", "Highest log index carried out (KV commands and Raft no-op or configuration entries)."),
                               ("last_index", "mesh_raft_last_index", "Last index of the local log."),
                               ("snapshot_index", "mesh_raft_snapshot_index", "Index of the latest snapshot.")):
            yield GaugeMetricFamily(name, doc, value=st[key])
        yield GaugeMetricFamily("mesh_raft_is_leader", "1 while this node leads the Raft group.",
                                value=1 if st["leader"] == st["id"] else 0)
        leader = GaugeMetricFamily("mesh_raft_leader", "1, labelled with the leader this node knows of.",
                                   labels=["leader"])
        if st["leader"] is not None:
            leader.add_metric([st["leader"]], 1)
        yield leader
        role = GaugeMetricFamily("mesh_raft_role", "1, labelled with this node's Raft role.", labels=["role"])
        role.add_metric([st["role"]], 1)
        yield role
        yield GaugeMetricFamily("mesh_raft_voters", "Voters in the Raft configuration.", value=len(st["voters"]))
        yield GaugeMetricFamily("mesh_raft_learners", "Learners in the Raft configuration.",
                                value=len(st["learners"]))
        yield GaugeMetricFamily("mesh_raft_failed", "1 if the Raft storage failed (restart needed).",
                                value=1 if st["failed"] else 0)
        lag = GaugeMetricFamily("mesh_raft_follower_lag_entries", "On the leader: log entries each follower "
                                "is behind the leader's last index.", labels=["follower"])
        if raft.is_leader:
            for peer in (*st["voters"], *st["learners"]):
                if peer != st["id"]:
                    match = raft.match_index(peer)
                    if match is not None:
                        lag.add_metric([peer], max(st["last_index"] - match, 0))
        yield lag


def _le(bound: float) -> str:
    return repr(float(bound))


def make_registry(node: Node) -> CollectorRegistry:
    """A registry of its own for ``node``, holding its :class:`NodeCollector`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def metrics_routes(node: Node, registry: CollectorRegistry) -> dict[str, Handler]:
    """``/metrics`` (Prometheus text, or OpenMetrics when the scraper asks) and ``/health``
    (``node.health()`` as JSON): the routes every HTTP server of a node offers."""
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, content_type, encoder(registry))

    def health(request: Request) -> Response:
        return Response(200, "application/json", json.dumps(node.health()).encode() + b"\n")
    return {"/metrics": metrics, "/health": health}


class MetricsServer(NodeServer):
    """``GET /metrics`` and ``GET /health`` over HTTP/1.1 on the running event loop
    (:class:`mesh.observe.http.HttpServer`)."""

    home = "/metrics"

    def __init__(self, node: Node, host: str = "127.0.0.1", port: int = 0,
                 registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry if registry is not None else make_registry(node)
        routes = metrics_routes(node, self.registry)
        routes["/"] = routes["/metrics"]
        super().__init__(node.node_id, routes, host, port, name="metrics", not_found="not found: try /metrics")
