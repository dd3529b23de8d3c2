"""The health score of the design document (section 5.1, ``calculate_system_health``), per node
over a sliding window and for the mesh.

Theory of operation
-------------------
* The formula, unchanged from the document::

      health = 0.4 * (100 - min(avg_response_time_s * 10, 100))     # response time
             + 0.4 * (min(throughput_per_s / 100, 1) * 100)         # throughput
             + 0.2 * ((1 - error_rate) * 100)                       # errors

  so 0..100, 100 the best. **Units.** The document does not say; its response times are
  Python ``time.time()`` differences, i.e. seconds, and its throughput divides a count by 60
  (a one-minute window), i.e. requests per second. We keep both: response time in seconds
  (the term reaches 0 at a 10 s average; the document's own trading case, 50 ms on average,
  scores 99.5 as a healthy system should, where milliseconds would score it 0 and make its
  autoscaler scale up forever), throughput in requests per second (full marks from 100/s),
  error rate as a fraction 0..1.
* A node's inputs are the requests it served in the last ``window_s`` seconds (60, as in the
  document): requests are the handlers run plus the requests refused as Overloaded or
  dropped after their deadline; response time is their mean handler time (a refused request
  takes none), throughput their number per second, and the error rate the failed handlers
  plus the refused requests, over all of them.
* With no requests in the window the response and error terms are full and throughput is 0:
  an idle node scores 60. That is the document's formula read literally (it rewards load);
  compare scores of nodes under traffic, or read the parts.
* The mesh's health is the **mean** over live members (alive or suspect) of the health each
  published in its gossip load summary (``load["health"]``, :mod:`mesh.node.membership`),
  with this node's current score for itself; members that have not published one yet are
  left out. The minimum is reported beside it, to find the worst node.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Iterable

WINDOW_S = 60.0
_MAX_SAMPLES = 256


def calculate_system_health(avg_response_time_s: float, throughput_per_s: float, error_rate: float) -> float:
    """Health 0..100 (design document 5.1)::

        0.4 * (100 - min(avg_response_time_s * 10, 100))
      + 0.4 * min(throughput_per_s / 100, 1) * 100
      + 0.2 * (1 - error_rate) * 100

    ``avg_response_time_s``: mean response (handler) time in **seconds**; ``throughput_per_s``:
    requests per **second**; ``error_rate``: failed / all, a fraction 0..1. Inputs outside
    their range are clamped (a negative time counts as 0, an error rate to 0..1)."""
    return sum(w * t for w, t in zip((0.4, 0.4, 0.2), health_terms(avg_response_time_s, throughput_per_s,
                                                                   error_rate)))


def health_terms(avg_response_time_s: float, throughput_per_s: float, error_rate: float) -> tuple[float, float, float]:
    """The three unweighted terms of :func:`calculate_system_health`, each 0..100:
    (response time, throughput, errors)."""
    response = 100.0 - min(max(avg_response_time_s, 0.0) * 10.0, 100.0)
    throughput = min(max(throughput_per_s, 0.0) / 100.0, 1.0) * 100.0
    errors = (1.0 - min(max(error_rate, 0.0), 1.0)) * 100.0
    return response, throughput, errors


def mesh_health(scores: Iterable[float]) -> tuple[float | None, float | None]:
    """(mean, min) of the members' health scores; (None, None) when there are none. Scores
    come from the network: one that is not a finite number is left out, others are clamped
    to 0..100."""
    values = [min(max(float(s), 0.0), 100.0) for s in scores if math.isfinite(s)]
    if not values:
        return None, None
    return sum(values) / len(values), min(values)


class HealthWindow:
    """Cumulative totals sampled over time; the score covers the last ``window_s`` seconds.

    Feed :meth:`sample` the node's running totals now and then (the node does it with its
    load summary, every ``load_interval``): handled requests, failed ones (handler errors,
    refused, expired) and the handler seconds they took. :meth:`parts` compares the totals now
    with the last sample taken at or before the window's start (or the oldest one)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = window_s
        self._samples: deque[tuple[float, int, int, float]] = deque(maxlen=_MAX_SAMPLES)

    def sample(self, now: float, calls: int, errors: int, busy_s: float) -> None:
        samples = self._samples
        samples.append((now, calls, errors, busy_s))
        # keep one sample at or before the window's start as the baseline
        while len(samples) > 1 and samples[1][0] <= now - self.window_s:
            samples.popleft()

    def parts(self, now: float, calls: int, errors: int, busy_s: float) -> dict[str, float]:
        """The score and what it is made of, from the totals now."""
        if self._samples:
            # the newest sample at or before the window's start (else the oldest): the window
            # is at least window_s long once the node has run that long, at most one sampling
            # interval longer, and the rates divide by the time it really covers
            t0, calls0, errors0, busy0 = self._samples[0]
            for sample in self._samples:
                if sample[0] > now - self.window_s:
                    break
                t0, calls0, errors0, busy0 = sample
        else:
            t0, calls0, errors0, busy0 = now, calls, errors, busy_s
        n = max(calls - calls0, 0)
        failed = min(max(errors - errors0, 0), n) if n else 0
        elapsed = now - t0
        avg_s = (busy_s - busy0) / n if n else 0.0
        rate = n / elapsed if elapsed > 0 else 0.0
        error_rate = failed / n if n else 0.0
        response, throughput, errs = health_terms(avg_s, rate, error_rate)
        return {"score": calculate_system_health(avg_s, rate, error_rate),
                "response_time": response, "throughput": throughput, "errors": errs,
                "avg_response_time_s": avg_s, "throughput_per_s": rate, "error_rate": error_rate,
                "requests": n, "window_s": elapsed}
