"""Analysis agents: technical, fundamental and sentiment; each turns a batch of ticks into a
batch of signals.

Theory of operation
-------------------
A *signal* is one analysis agent's verdict on one tick: a score in [-1, 1] for the tick's
symbol (above 0: buy, below: sell), carried with the tick's timestamp and price. Every
analysis agent follows every feed (``ticks.*``: the design document's
``process_trading_signal`` runs all analyses on the market data), so each tick makes three
signals. An agent keeps a little state per symbol and for every batch of ticks publishes one
batch of signals on ``signals.<kind>`` — the same columnar layout, the tick columns passed
through and a ``score`` column added. Throughput is counted in signals; the three analysis
agents share a node, so a tick batch crosses the network once for all three.

The models are deliberately cheap (a few float operations per tick) and deterministic given
the ticks and the seed: this example measures the mesh that carries the signals, not the
models.

* technical: fast and slow exponential moving averages of the price; the score is their
  relative gap, scaled and clipped (a moving-average crossover).
* fundamental: each symbol has a fair value that drifts slowly (seeded); the score is how far
  the price sits below it (cheap: buy) or above it (dear: sell).
* sentiment: seeded news arrives for a symbol with a small probability per tick and moves its
  sentiment, which then decays; the score is that sentiment.

Handlers are plain synchronous work plus one publish that does not wait, so they run to the
end on the dispatcher's stack (no task per batch). The subscription queue is bounded; a batch
that finds it full is dropped and counted by the node (``subscription_drops``).
"""
from __future__ import annotations

import random
import time
from typing import Any

import mesh
from mesh.observe.histogram import LogHistogram

from examples.trading.latency import to_wire
from examples.trading.universe import KINDS, SYMBOLS, signals_topic, topic_matches

QUEUE = 4096                 # batches waiting for a busy handler (about 4 s of one feed)


class TechnicalModel:
    FAST = 0.2
    SLOW = 0.02
    GAIN = 400.0             # a 0.25 % gap between the averages is a full-strength signal

    def __init__(self, symbols: int, seed: int) -> None:
        self.fast: list[float] = [0.0] * symbols
        self.slow: list[float] = [0.0] * symbols

    def scores(self, syms: list[int], pxs: list[float]) -> list[float]:
        fast, slow = self.fast, self.slow
        af, asl, gain = self.FAST, self.SLOW, self.GAIN
        out = []
        for s, p in zip(syms, pxs):
            f, sl = fast[s], slow[s]
            if not sl:
                f = sl = p
            f += af * (p - f)
            sl += asl * (p - sl)
            fast[s], slow[s] = f, sl
            x = (f - sl) / sl * gain
            out.append(1.0 if x > 1.0 else -1.0 if x < -1.0 else x)
        return out


class FundamentalModel:
    GAIN = 50.0              # 2 % away from fair value is a full-strength signal
    DRIFT = 0.0005           # fair value's relative random step per tick of the symbol

    def __init__(self, symbols: int, seed: int) -> None:
        self.rng = random.Random(f"trading-fundamental:{seed}")
        self.fair: list[float] = [0.0] * symbols

    def scores(self, syms: list[int], pxs: list[float]) -> list[float]:
        fair, rnd, gain, drift = self.fair, self.rng.random, self.GAIN, self.DRIFT
        out = []
        for s, p in zip(syms, pxs):
            fv = fair[s]
            if not fv:
                fv = p * (1.0 + 0.02 * (rnd() - 0.5))
            fv *= 1.0 + drift * (rnd() - 0.5)
            fair[s] = fv
            x = (fv - p) / fv * gain
            out.append(1.0 if x > 1.0 else -1.0 if x < -1.0 else x)
        return out


class SentimentModel:
    NEWS = 0.002             # chance that a tick comes with news about its symbol
    DECAY = 0.995            # sentiment kept per tick of the symbol

    def __init__(self, symbols: int, seed: int) -> None:
        self.rng = random.Random(f"trading-sentiment:{seed}")
        self.mood: list[float] = [0.0] * symbols

    def scores(self, syms: list[int], pxs: list[float]) -> list[float]:
        mood, rng, news, decay = self.mood, self.rng, self.NEWS, self.DECAY
        rnd = rng.random
        out = []
        for s in syms:
            m = mood[s] * decay
            if rnd() < news:
                m += rng.uniform(-1.5, 1.5)
            mood[s] = m
            out.append(1.0 if m > 1.0 else -1.0 if m < -1.0 else m)
        return out


class Analysis(mesh.Agent):
    """Base of the three analysis agents; subclasses name their kind and model."""

    capabilities = ("analysis",)
    kind = KINDS[0]
    model_class: type = TechnicalModel

    def __init__(self, name: str | None = None, seed: int = 7) -> None:
        super().__init__(name or self.kind)
        self.topic = signals_topic(self.kind)
        self.model = self.model_class(len(SYMBOLS), seed)
        self.batches = 0
        self.signals = 0
        self.age = LogHistogram()      # age of a batch's oldest tick when its signals leave (ns)

    @mesh.rpc
    def subscribed(self) -> bool:
        """Whether a live member has subscribed to this agent's signals (gossip has told us)."""
        return any(topic_matches(p, self.topic) for m in self.node.members()
                   if not m["self"] and m["state"] == "alive" for p in m["topics"])

    @mesh.rpc
    def start(self, seed: int) -> None:
        """A fresh model seeded with ``seed`` (the driver's ``--seed``)."""
        self.model = self.model_class(len(SYMBOLS), seed)

    @mesh.rpc
    def stats(self) -> dict[str, Any]:
        return {"agent": self.name, "node": self.node.node_id, "batches": self.batches, "signals": self.signals,
                "age": to_wire(self.age), "subscription_drops": self.node.stats()["subscription_drops"]}

    @mesh.on("ticks.*", queue=QUEUE, overflow="drop")
    async def on_ticks(self, topic: str, batch: dict[str, Any]) -> None:
        ts = batch["t"]
        scores = self.model.scores(batch["sym"], batch["px"])
        self.batches += 1
        self.signals += len(scores)
        self.age.record(time.monotonic_ns() - ts[0])
        await self.node.publish(self.topic, {"kind": self.kind, "feed": batch["feed"], "t": ts, "sym": batch["sym"],
                                             "px": batch["px"], "score": scores})


class TechnicalAnalysis(Analysis):
    kind = "technical"
    model_class = TechnicalModel


class FundamentalAnalysis(Analysis):
    kind = "fundamental"
    model_class = FundamentalModel


class SentimentAnalysis(Analysis):
    kind = "sentiment"
    model_class = SentimentModel
