"""When to add or remove replicas of a capability: a pure, clock-injected scaling policy.

Theory of operation
-------------------
The policy sees, every sampling period, one :class:`LoadSample` per live replica (calls in
flight, calls waiting in its mailbox, the EWMA of its handler latency, its call counter) and
the time (seconds, any monotonic origin). It answers a :class:`Decision`: how many replicas
there should be. It holds no socket, clock or task, so every rule below has a table test.

* **Demand** is the number of calls outstanding at the replicas (in flight + queued), summed
  over them. Demand is what does *not* jump when replicas are added: the same callers now
  wait on more servers. So demand is what gets smoothed (an EWMA with time constant
  ``smoothing_s``), and utilisation is computed from it and the current count each time::

      utilisation = max(demand / (replicas * target_outstanding),
                        latency_ms / target_latency_ms)          (the second term only if set)

  1.0 is the set point. ``latency_ms`` is the call-weighted mean of the replicas' latency
  EWMAs, counting only replicas that handled calls since the previous sample: an idle
  replica's EWMA is stale (it moves only when calls finish) and must not block shrinking.
* **Resizing** aims back at the set point: ``desired_replicas = ceil(replicas *
  utilisation)`` (the Kubernetes HPA rule), at most ``max_step_up`` added or
  ``max_step_down`` removed per decision. Growing is fast and shrinking slow: being short
  costs latency and errors, being long costs only idle replicas.
* **Hysteresis**: grow only while utilisation is above ``scale_up_at`` (>= 1), shrink only
  while below ``scale_down_at`` (< 1); in between, hold. A resize does not by itself throw
  the signal across the band: after shrinking it is at most 1 (below ``scale_up_at``);
  after growing from ``n`` it is at least ``n*u / (n*u + 1)`` (above 0.54 with the default
  ``scale_up_at`` of 1.2 and ``n*u`` > 1.2), above a ``scale_down_at`` of 0.5. The cooldowns
  cover the rest.
* **Sustain**: the signal must stay out of the band for ``up_after_s`` (``down_after_s``)
  without a break before anything happens: one burst or one quiet moment changes nothing.
* **Cooldowns**: after any change, no growth for ``up_cooldown_s`` (new replicas need a
  moment to take load and be sampled) and no shrinking for ``down_cooldown_s``. A decision
  is taken to be carried out; if the driver could not, the cooldown doubles as its backoff.
* **Bounds** are not load decisions: below ``min_replicas`` or above ``max_replicas`` the
  answer is the bound at once, whatever the load or the cooldowns (reconciliation).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable

__all__ = ["ScalingConfig", "LoadSample", "Decision", "ScalingPolicy", "utilisation",
           "desired_replicas", "ewma_alpha"]


@dataclass(frozen=True, slots=True)
class ScalingConfig:
    """How one capability scales. Times in seconds; loads in calls; latency in ms.

    ``target_outstanding``: calls per replica (in flight + queued) at the set point.
    ``target_latency_ms``: handler latency at the set point (None: latency is not a signal).
    It is handler time, queueing excluded (that shows as queue depth), so it signals slow
    handling — CPU contention, a slow dependency — and must be set above the handler's
    latency when idle, or the replicas grow to the maximum and stay there.
    ``scale_up_at`` / ``scale_down_at``: utilisation (1.0 = set point) above which to grow,
    below which to shrink; the gap between them is the hysteresis band.
    ``up_after_s`` / ``down_after_s``: how long utilisation must stay out of the band first.
    ``up_cooldown_s`` / ``down_cooldown_s``: quiet time after any change before growing /
    shrinking again. ``max_step_up`` / ``max_step_down``: replicas added / removed at most per
    decision. ``smoothing_s``: time constant of the demand EWMA (``alpha = 1 - exp(-dt /
    smoothing_s)``; 0 = no smoothing). ``min_health``: new replicas go only to nodes whose
    health score (design document 5.1, :mod:`mesh.observe.health`; an idle node scores 60) is
    at least this, while any node is; among equally loaded nodes the healthiest wins.
    """

    min_replicas: int = 1
    max_replicas: int = 4
    target_outstanding: float = 4.0
    target_latency_ms: float | None = None
    scale_up_at: float = 1.2
    scale_down_at: float = 0.5
    up_after_s: float = 1.0
    down_after_s: float = 5.0
    up_cooldown_s: float = 2.0
    down_cooldown_s: float = 5.0
    max_step_up: int = 2
    max_step_down: int = 1
    smoothing_s: float = 1.0
    min_health: float = 40.0

    def __post_init__(self) -> None:
        # min_replicas >= 1: demand is measured at the replicas, so from zero nothing would
        # ever say that one is needed again.
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"need 1 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}")
        if self.target_outstanding <= 0:
            raise ValueError("target_outstanding must be positive")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise ValueError("target_latency_ms must be positive (or None)")
        # scale_up_at >= 1: a resize aims at <= 1.0, which must not be above the band again.
        if not 0 < self.scale_down_at < 1.0 <= self.scale_up_at:
            raise ValueError(f"need 0 < scale_down_at < 1 <= scale_up_at (the hysteresis band), "
                             f"got {self.scale_down_at} and {self.scale_up_at}")
        for name in ("up_after_s", "down_after_s", "up_cooldown_s", "down_cooldown_s", "smoothing_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if not 0 <= self.min_health <= 100:
            raise ValueError(f"min_health is a health score, 0..100, got {self.min_health}")
        if self.max_step_up < 1 or self.max_step_down < 1:
            raise ValueError("max_step_up and max_step_down must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalingConfig:
        """From a stored map; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown scaling settings {sorted(unknown)} (known: {sorted(known)})")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LoadSample:
    """One replica's load at one moment (see ``Node.agent_load``). ``calls`` is cumulative."""

    name: str
    inflight: int = 0
    queued: int = 0
    latency_ms: float = 0.0
    calls: int = 0

    @property
    def outstanding(self) -> int:
        return self.inflight + self.queued


@dataclass(frozen=True, slots=True)
class Decision:
    """``desired`` replicas where there are ``replicas`` now, and why."""

    replicas: int
    desired: int
    reason: str
    utilisation: float = 0.0

    @property
    def delta(self) -> int:
        return self.desired - self.replicas


def ewma_alpha(dt_s: float, smoothing_s: float) -> float:
    """The weight of a new sample taken ``dt_s`` after the previous one: ``1 - exp(-dt/tau)``
    (so the smoothing does not depend on how often samples come); 1.0 when tau is 0."""
    if smoothing_s <= 0:
        return 1.0
    return 1.0 - math.exp(-max(dt_s, 0.0) / smoothing_s)


def utilisation(demand: float, latency_ms: float, replicas: int, cfg: ScalingConfig) -> float:
    """``max(demand / (replicas * target_outstanding), latency_ms / target_latency_ms)``;
    1.0 is the set point. With no replicas, any demand is unbounded utilisation."""
    if replicas <= 0:
        return math.inf if demand > 0 else 0.0
    u = demand / (replicas * cfg.target_outstanding)
    if cfg.target_latency_ms is not None:
        u = max(u, latency_ms / cfg.target_latency_ms)
    return u


def desired_replicas(replicas: int, util: float) -> int:
    """``ceil(replicas * utilisation)``: the count that brings utilisation to <= 1.0. A
    relative epsilon keeps float noise (3 * 0.6666... = 2.0000000001) from adding one."""
    if math.isinf(util):
        return replicas + 1
    return max(0, math.ceil(replicas * util * (1 - 1e-9)))


class ScalingPolicy:
    """The decision core for one capability (see the module docstring); keeps the smoothed
    demand, the start of the current out-of-band run and the time of the last change."""

    def __init__(self, cfg: ScalingConfig) -> None:
        self.cfg = cfg
        self.demand: float | None = None        # smoothed calls outstanding, all replicas
        self._last_sample_at: float | None = None
        self._calls: dict[str, int] = {}        # replica -> call counter at the previous sample
        self._run: tuple[int, float] | None = None   # (+1 above / -1 below the band, since)
        self._changed_at: float | None = None

    def decide(self, now: float, replicas: int, samples: Iterable[LoadSample]) -> Decision:
        """What to do at time ``now`` with ``replicas`` live replicas whose loads are
        ``samples``. A decision with a non-zero delta counts as carried out at ``now``."""
        cfg = self.cfg
        util = self._observe(now, samples, replicas)
        if replicas < cfg.min_replicas:
            return self._change(now, Decision(replicas, cfg.min_replicas, "below min_replicas", util))
        if replicas > cfg.max_replicas:
            return self._change(now, Decision(replicas, cfg.max_replicas, "above max_replicas", util))
        side = 1 if util > cfg.scale_up_at else -1 if util < cfg.scale_down_at else 0
        if side == 0:
            self._run = None
            return Decision(replicas, replicas, "within the band", util)
        if self._run is None or self._run[0] != side:
            self._run = (side, now)
        since = now - self._run[1]
        quiet = math.inf if self._changed_at is None else now - self._changed_at
        if side > 0:
            if replicas >= cfg.max_replicas:
                return Decision(replicas, replicas, "at max_replicas", util)
            if since < cfg.up_after_s:
                return Decision(replicas, replicas, "above the band, not yet sustained", util)
            if quiet < cfg.up_cooldown_s:
                return Decision(replicas, replicas, "above the band, cooling down", util)
            want = min(desired_replicas(replicas, util), replicas + cfg.max_step_up, cfg.max_replicas)
            return self._change(now, Decision(replicas, max(want, replicas + 1), "sustained load", util))
        if replicas <= cfg.min_replicas:
            return Decision(replicas, replicas, "at min_replicas", util)
        if since < cfg.down_after_s:
            return Decision(replicas, replicas, "below the band, not yet sustained", util)
        if quiet < cfg.down_cooldown_s:
            return Decision(replicas, replicas, "below the band, cooling down", util)
        want = max(desired_replicas(replicas, util), replicas - cfg.max_step_down, cfg.min_replicas)
        return self._change(now, Decision(replicas, min(want, replicas - 1), "sustained idleness", util))

    def _observe(self, now: float, samples: Iterable[LoadSample], replicas: int) -> float:
        samples = list(samples)
        demand = float(sum(s.outstanding for s in samples))
        if self.demand is None or self._last_sample_at is None:
            self.demand = demand
        else:
            self.demand += ewma_alpha(now - self._last_sample_at, self.cfg.smoothing_s) * (demand - self.demand)
        self._last_sample_at = now
        weight = latency = 0.0
        calls: dict[str, int] = {}
        for s in samples:
            calls[s.name] = s.calls
            recent = s.calls - self._calls.get(s.name, s.calls)
            if recent > 0:
                weight += recent
                latency += recent * s.latency_ms
        self._calls = calls
        return utilisation(self.demand, latency / weight if weight else 0.0, replicas, self.cfg)

    def _change(self, now: float, decision: Decision) -> Decision:
        if decision.delta:
            self._changed_at = now
            self._run = None      # the next change needs a fresh sustained run
        return decision
