"""Strategy agents: a decision for every signal, and orders sent until they are acknowledged.

Theory of operation
-------------------
* **Decisions.** A strategy follows one analysis agent's signals (``signals.<kind>``) on all
  24 symbols. For every signal it decides a target position in the signal's symbol (the
  score times the strategy's size, in whole lots, toward zero) and whether to trade toward
  it now. The decision latency of a signal is the time from its tick's moment at the
  exchange to the end of the handler call that decided it (one clock read per batch, after
  the last decision): feed batching, two hops across the mesh, both queues and the work of
  the analysis and the strategy are all inside it. Only ticks stamped at or after the
  measurement start count.
* **Orders.** A strategy trades a symbol only when no order of its own for that symbol is in
  flight (so its orders for one symbol are serialized, which keeps the risk check's
  compare-and-set free of contention) and when its token bucket allows (``orders_per_s``,
  a burst of a few). The order gets the idempotency key ``strategy:seq``, then:
  1. the risk check, ``call_any("risk", "check", order)``, asked again after any failure
     until it answers (a repeated check of the same order is recognised, see
     :mod:`examples.trading.risk`); a refused order is not sent;
  2. an approved order counts as **sent** and goes to the executor singleton,
     ``call("executor", "execute", order)``, again and again until acknowledged, with the
     same key. While the executor is unreachable (its node died and the singleton has not
     moved yet) only one order per strategy probes it (backoff 20 ms -> 200 ms) and the
     others wait for that probe to succeed, so a failover does not turn into a flood of
     failing calls (which would also trip the circuit breaker and delay the recovery).
* The order latency is from the tick that triggered it to the executor's acknowledgement.
* :meth:`Strategy.drain` stops new orders and waits for those in flight; what is still
  unacknowledged at its deadline is reported, never silently dropped. The keys sent are kept
  (one int each) for the exchange's audit at the end of a run.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import mesh
from mesh.errors import MeshError, RemoteError
from mesh.observe.histogram import LogHistogram
from mesh.resilience import detached

from examples.trading.errors import GaveUp
from examples.trading.latency import to_wire
from examples.trading.universe import KINDS, LOT, SYMBOLS, order_key

log = logging.getLogger(__name__)

QUEUE = 4096                   # signal batches waiting for a busy handler
BURST = 5                      # orders the token bucket lets through at once
COOL_NS = 100_000_000          # after a refusal, leave the symbol alone this long
RISK_TIMEOUT_S = 2.0
EXECUTE_TIMEOUT_S = 2.0


class Strategy(mesh.Agent):
    """Base of the three strategies; subclasses pick the analysis they follow (``lane``, an
    index into KINDS) and their size, and subscribe their handler to its signals (topics are
    fixed when a class is defined)."""

    capabilities = ("strategy",)
    lane = 0
    max_lots = 6                   # lots held at a full-strength signal

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name or f"strategy-{self.lane}")
        self.kind = KINDS[self.lane]
        self.symbols = SYMBOLS
        n = len(self.symbols)
        self.book: list[list[Any] | None] = [None] * n      # the risk agent's record: [qty, last key]
        self.busy = [False] * n
        self.cool_until = [0] * n
        self.from_ns = 0
        self.orders_per_s = 0.0
        self.trading = False
        self.tokens = 0.0
        self.refilled_ns = 0
        self.seq = 0
        self.sent: list[int] = []
        self.decision = LogHistogram()     # tick -> decision (ns), ticks in the window
        self.order = LogHistogram()        # tick -> executor's acknowledgement (ns)
        self.risk_rtt = LogHistogram()     # the risk check, retries included (ns)
        self.execute_rtt = LogHistogram()  # approval -> executor's acknowledgement, retries included (ns)
        self.counters = {"signals": 0, "in_window": 0, "trades": 0, "orders": 0, "rejected": 0, "sent": 0,
                         "acked": 0, "risk_retries": 0, "execute_retries": 0, "gave_up": 0}
        self.errors: dict[str, int] = {}   # "what: error type" -> count (a handful of kinds)
        self.last_ack_ns = 0
        self.max_ack_gap_ns = 0
        self.max_ack_gap_at_ns = 0
        self._executor_ok = asyncio.Event()
        self._executor_ok.set()
        self._prober = False               # an order is probing the executor for the others
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0
        self._give_up_ns = 0

    # -- control ----------------------------------------------------------------------------

    @mesh.rpc
    def start(self, from_ns: int, orders_per_s: float) -> None:
        """Count signals whose tick is at or after ``from_ns``; trade at most ``orders_per_s``."""
        self.from_ns = from_ns
        self.orders_per_s = orders_per_s
        self.tokens = min(BURST, orders_per_s)
        self.refilled_ns = time.monotonic_ns()
        self.trading = orders_per_s > 0

    @mesh.rpc
    async def drain(self, timeout: float) -> dict[str, Any]:
        """Send no new orders; wait up to ``timeout`` s for those in flight; return :meth:`report`."""
        self.trading = False
        self._give_up_ns = time.monotonic_ns() + int(timeout * 1e9)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout + 1.0)
        except asyncio.TimeoutError:
            pass
        return self.report()

    @mesh.rpc
    def progress(self) -> dict[str, Any]:
        return dict(self.counters, in_flight=self._in_flight,
                    p99_ms=self.decision.value_at_quantile(0.99) / 1e6)

    @mesh.rpc
    def report(self) -> dict[str, Any]:
        return {"agent": self.name, "node": self.node.node_id, "kind": self.kind, **self.counters,
                "in_flight": self._in_flight, "decision": to_wire(self.decision), "order": to_wire(self.order),
                "risk_rtt": to_wire(self.risk_rtt), "execute_rtt": to_wire(self.execute_rtt),
                "sent_seqs": list(self.sent), "max_ack_gap_ns": self.max_ack_gap_ns,
                "max_ack_gap_at_ns": self.max_ack_gap_at_ns, "errors": dict(self.errors),
                "book": {sym: rec[0] for sym, rec in zip(self.symbols, self.book) if rec is not None},
                "subscription_drops": self.node.stats()["subscription_drops"]}

    # -- decisions --------------------------------------------------------------------------

    def decide(self, batch: dict[str, Any]) -> None:
        ts = batch["t"]
        syms = batch["sym"]
        pxs = batch["px"]
        scores = batch["score"]
        c = self.counters
        c["signals"] += len(ts)
        if self.trading:
            now = time.monotonic_ns()
            self.tokens = min(BURST, self.tokens + (now - self.refilled_ns) * 1e-9 * self.orders_per_s)
            self.refilled_ns = now
            book, busy, cool, lots = self.book, self.busy, self.cool_until, self.max_lots
            for i, s in enumerate(syms):
                target = int(scores[i] * lots) * LOT
                held = book[s][0] if book[s] is not None else 0
                if target != held and not busy[s] and self.tokens >= 1.0 and now >= cool[s]:
                    self.tokens -= 1.0
                    busy[s] = True
                    c["trades"] += 1
                    self._launch(s, target - held, pxs[i], ts[i])
        decided = time.monotonic_ns()
        from_ns = self.from_ns
        if ts[-1] >= from_ns:
            record = self.decision.record
            n = 0
            for t in ts:
                if t >= from_ns:
                    record(decided - t)
                    n += 1
            c["in_window"] += n

    # -- orders -----------------------------------------------------------------------------

    def _launch(self, s: int, qty: int, px: float, tick_ns: int) -> None:
        self._in_flight += 1
        self._idle.clear()
        detached(self._order(s, qty, px, tick_ns))

    async def _order(self, s: int, qty: int, px: float, tick_ns: int) -> None:
        c = self.counters
        self.seq += 1
        seq = self.seq
        order = {"key": order_key(self.name, seq), "strategy": self.name, "sym": self.symbols[s], "qty": qty,
                 "px": px, "pos": self.book[s]}
        c["orders"] += 1
        try:
            t_risk = time.monotonic_ns()
            verdict = await self._risk_check(order)
            t_exec = time.monotonic_ns()
            self.risk_rtt.record(t_exec - t_risk)
            self.book[s] = verdict["pos"]
            if not verdict["ok"]:
                c["rejected"] += 1
                self.cool_until[s] = time.monotonic_ns() + COOL_NS
                return
            self.sent.append(seq)
            c["sent"] += 1
            await self._execute(order)
            now = time.monotonic_ns()
            self.execute_rtt.record(now - t_exec)
            c["acked"] += 1
            if tick_ns >= self.from_ns:
                self.order.record(now - tick_ns)
                if self.last_ack_ns and now - self.last_ack_ns > self.max_ack_gap_ns:
                    self.max_ack_gap_ns = now - self.last_ack_ns
                    self.max_ack_gap_at_ns = self.last_ack_ns
                self.last_ack_ns = now
        except GaveUp as exc:
            c["gave_up"] += 1
            log.warning("%s: %s", self.name, exc)
        finally:
            self.busy[s] = False
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _check_deadline(self, what: str, key: str) -> None:
        if self._give_up_ns and time.monotonic_ns() > self._give_up_ns:
            raise GaveUp(f"{what} of order {key} still unanswered at the drain deadline")

    async def _risk_check(self, order: dict[str, Any]) -> dict[str, Any]:
        delay = 0.01
        while True:
            try:
                return await self.node.call_any("risk", "check", order, timeout=RISK_TIMEOUT_S)
            except MeshError as exc:
                self.counters["risk_retries"] += 1
                self._note(exc, "risk check")
                self._check_deadline("the risk check", order["key"])
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)

    async def _execute(self, order: dict[str, Any]) -> dict[str, Any]:
        gate = self._executor_ok
        probing = False
        delay = 0.02
        try:
            while True:
                while not probing and not gate.is_set():
                    if not self._prober:       # the prober finished or gave up: this order probes
                        self._prober = probing = True
                        break
                    try:
                        await asyncio.wait_for(gate.wait(), 0.25)
                    except asyncio.TimeoutError:
                        self._check_deadline("the execution", order["key"])
                try:
                    fill = await self.node.call("executor", "execute", order, timeout=EXECUTE_TIMEOUT_S)
                except MeshError as exc:
                    self.counters["execute_retries"] += 1
                    self._note(exc, "execute")
                    self._check_deadline("the execution", order["key"])
                    if gate.is_set():          # the first to see the executor fail probes for the others
                        gate.clear()
                        self._prober = probing = True
                    if probing:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.2)
                    continue
                if probing:
                    gate.set()
                return fill
        finally:
            if probing:
                self._prober = False

    def _note(self, exc: MeshError, what: str) -> None:
        kind = f"{what}: {exc.type if isinstance(exc, RemoteError) else type(exc).__name__}"
        self.errors[kind] = self.errors.get(kind, 0) + 1
        level = logging.WARNING if isinstance(exc, RemoteError) and exc.type not in ("Fenced",) else logging.INFO
        log.log(level, "%s: %s failed (%s); trying again", self.name, what, exc)


class MomentumStrategy(Strategy):
    """ST1: follows the technical analysis (moving-average crossover)."""

    lane = 0
    max_lots = 6

    @mesh.on("signals.technical", queue=QUEUE, overflow="drop")
    def on_signals(self, topic: str, batch: dict[str, Any]) -> None:
        self.decide(batch)


class ValueStrategy(Strategy):
    """ST2: follows the fundamental analysis (price against fair value)."""

    lane = 1
    max_lots = 4

    @mesh.on("signals.fundamental", queue=QUEUE, overflow="drop")
    def on_signals(self, topic: str, batch: dict[str, Any]) -> None:
        self.decide(batch)


class NewsStrategy(Strategy):
    """ST3: follows the sentiment analysis (news)."""

    lane = 2
    max_lots = 5

    @mesh.on("signals.sentiment", queue=QUEUE, overflow="drop")
    def on_signals(self, topic: str, batch: dict[str, Any]) -> None:
        self.decide(batch)
