"""The trading system's fixed world: feeds and their symbols, the three lanes, and KV keys.

Section 4 of the design document has three market-data agents (one exchange feed each),
three analysis agents that all analyse the market data (its ``process_trading_signal``
gathers every analysis agent's verdict), and three strategy agents, strategy ``i`` following
analysis ``i`` (the diagram's TA -> ST1, FA -> ST2, SA -> ST3); every strategy sends its
orders through the risk check to the one order executor. Feed ``i`` publishes ``ticks.i``;
each analysis agent subscribes to ``ticks.*`` and publishes ``signals.<kind>``; strategy
``i`` subscribes to ``signals.<KINDS[i]>`` and trades all 24 symbols. A tick names its symbol
by its index in :data:`SYMBOLS`.

Keys in the Raft KV (all under ``trading/``): ``limits/<SYM>`` (the largest absolute position
a strategy may hold, read by the risk agents through a watch), ``positions/<strategy>/<SYM>``
(``[qty, last order key]``, written by the risk check), ``orders/<order key>`` (the
executor's record: ``["pending", epoch]`` then ``["filled", ...]``) and ``executor/epoch``
(bumped by each new executor; its revision is the executor's fencing epoch).
"""
from __future__ import annotations

FEEDS: tuple[tuple[str, ...], ...] = (
    ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AVGO"),
    ("JPM", "BAC", "WFC", "GS", "MS", "C", "BLK", "SCHW"),
    ("XOM", "CVX", "COP", "SLB", "EOG", "OXY", "PSX", "MPC"),
)
SYMBOLS: tuple[str, ...] = tuple(sym for feed in FEEDS for sym in feed)   # a tick names its symbol by index here
KINDS: tuple[str, ...] = ("technical", "fundamental", "sentiment")
LANES = len(FEEDS)
STRATEGIES: tuple[str, ...] = tuple(f"strategy-{i}" for i in range(LANES))
LOT = 100                       # shares per lot: strategies trade whole lots
DEFAULT_LIMIT = 500             # shares per strategy and symbol, unless trading/limits/<SYM> says otherwise

PREFIX = "trading/"
LIMITS = PREFIX + "limits/"
POSITIONS = PREFIX + "positions/"
ORDERS = PREFIX + "orders/"
EPOCH_KEY = PREFIX + "executor/epoch"


def ticks_topic(feed: int) -> str:
    return f"ticks.{feed}"


def signals_topic(kind: str) -> str:
    return f"signals.{kind}"


def first_symbol(feed: int) -> int:
    """The index in :data:`SYMBOLS` of feed ``feed``'s first symbol."""
    return sum(len(f) for f in FEEDS[:feed])


def topic_matches(pattern: str, topic: str) -> bool:
    """mesh's topic patterns: ``*`` is one dot-separated segment, a final ``#`` the rest."""
    want, have = pattern.split("."), topic.split(".")
    for i, part in enumerate(want):
        if part == "#" and i == len(want) - 1:
            return True
        if i >= len(have) or (part != "*" and part != have[i]):
            return False
    return len(want) == len(have)


def lane_of(name: str) -> int:
    """``md-1`` -> 1: the feed (or lane) an agent serves, from its name's last part."""
    tail = name.rsplit("-", 1)[-1]
    if not tail.isdigit() or int(tail) >= LANES:
        raise ValueError(f"agent name {name!r} must end in -0 .. -{LANES - 1} (its lane)")
    return int(tail)


def position_key(strategy: str, symbol: str) -> str:
    return f"{POSITIONS}{strategy}/{symbol}"


def order_key(strategy: str, seq: int) -> str:
    """The idempotency key of a strategy's ``seq``-th order: unique mesh-wide, stable across retries."""
    return f"{strategy}:{seq}"
