# cython: language_level=3
# distutils: extra_compile_args = -ffp-contract=off
"""Load scores and the power-of-two-choices pick behind ``call_any``.

Theory of operation
-------------------
Each target (an agent that ``call_any`` may choose) has four numbers: calls in flight, an
exponentially weighted moving average (EWMA) of call latency in microseconds, an EWMA of the
error rate in [0, 1], and a capacity (relative weight, > 0). They combine into one score,
lower is better::

    load_score = (inflight + 1) / capacity            calls per unit of capacity, this one included
                 * (ewma_latency_us + LATENCY_FLOOR_US)   microseconds
                 * (1 + ERROR_PENALTY * error_rate)       dimensionless

i.e. roughly the microseconds a new call would wait, per unit of capacity, inflated by recent
failures. The latency floor keeps a target with no measured latency from scoring zero forever;
the penalty makes a target failing every call look eleven times as loaded.

The latency EWMA is of the latency *per call in flight*: a call that ended after
``latency_us`` with ``k`` calls in flight to its target (itself included) is a sample of
``latency_us / k``. ``(inflight + 1) *`` that is then the latency one more call may expect
whether the target works through its calls one at a time (its latency grows with ``k``, the
sample stays) or side by side (its latency stays, the sample shrinks); an average of raw
latencies, measured with ``k`` already in flight, would count the ``k`` twice and make a
target ten times slower but idle look better than a fast one with a few calls in flight.
The first sample sets the EWMA; later ones move it by ``alpha`` of the difference. With one
call in flight at a time the sample is the latency itself, as it always was. The error EWMA
starts at 0.0 and takes 0.0 for a success, 1.0 for a failure. A target never sampled scores
with ``default_latency_us``.

``pick`` uses the power of two choices (Mitzenmacher): draw two distinct candidates at random
and keep the lower score (the first drawn on a tie). Unlike "always the best" it does not herd
every caller onto the same target between score updates, and unlike uniform random it avoids
loaded targets. The loser of each comparison ages if it has no call in flight: its latency
and error averages shrink by ``LOSER_DECAY`` (a fraction), so a target judged on one stale bad
sample is tried again after about ln(score ratio) / LOSER_DECAY lost comparisons instead of
starving forever, while a target that really is slow gets only that trickle of probes (one
per ~46 lost comparisons when it scores 10x worse). Finagle's peak-EWMA decays by time for
the same reason; we decay by events so the core stays clock-free. A target with calls in
flight does not age: their answers will update it, and one that has stopped answering (a
stall) must not look better the longer its callers wait. The random numbers come from
xorshift64* seeded from ``seed``, written identically in both twins so that the same seed and
the same calls give the same picks.

Both twins (compiled and pure) implement this contract bit for bit.
"""
# -ffp-contract=off: a fused multiply-add rounds once where Python rounds twice, and the
# twins must agree to the last bit (it matters on targets with FMA, e.g. aarch64).
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, realloc
from libc.math cimport INFINITY

PUBLIC_API = ["LATENCY_FLOOR_US", "ERROR_PENALTY", "LOSER_DECAY", "load_score", "Scoreboard"]

LATENCY_FLOOR_US = 50.0
ERROR_PENALTY = 10.0
LOSER_DECAY = 0.05

cdef double _LATENCY_FLOOR_US = 50.0
cdef double _ERROR_PENALTY = 10.0
cdef double _LOSER_DECAY = 0.05
cdef uint64_t _SEED_MIX = 0x9E3779B97F4A7C15
cdef uint64_t _XORSHIFT_MUL = 0x2545F4914F6CDD1D


cdef struct _Stat:
    long long inflight
    double latency_us           # EWMA, microseconds
    double error_rate           # EWMA of 0.0 (ok) / 1.0 (failed)
    double capacity
    bint sampled                # has latency_us seen a sample yet


cdef inline double _load(double inflight, double latency_us, double error_rate,
                         double capacity) noexcept nogil:
    return ((inflight + 1.0) / capacity * (latency_us + _LATENCY_FLOOR_US)
            * (1.0 + _ERROR_PENALTY * error_rate))


def load_score(double inflight, double ewma_latency_us, double error_rate, double capacity):
    """(inflight + 1) / capacity * (ewma_latency_us + LATENCY_FLOOR_US) * (1 + ERROR_PENALTY * error_rate).

    ``inflight`` in calls, ``ewma_latency_us`` in microseconds, ``error_rate`` in [0, 1],
    ``capacity`` a relative weight > 0 (ValueError otherwise). Lower is better."""
    if not capacity > 0.0:
        raise ValueError(f"capacity must be > 0, got {capacity!r}")
    return _load(inflight, ewma_latency_us, error_rate, capacity)


cdef double _check_capacity(double capacity) except? -1.0:
    if not 0.0 < capacity < INFINITY:
        raise ValueError(f"capacity must be finite and > 0, got {capacity!r}")
    return capacity


cdef int _check_target(object target) except -1:
    if not isinstance(target, str):
        raise TypeError(f"target must be str, not {type(target).__name__}")
    return 0


cdef class Scoreboard:
    """Per-target load statistics and a seeded power-of-two-choices pick."""

    cdef _Stat* _stats              # slot -> stats
    cdef Py_ssize_t* _free          # stack of released slots
    cdef Py_ssize_t _nfree
    cdef Py_ssize_t _used           # slots ever handed out (high-water mark)
    cdef Py_ssize_t _allocated      # length of both arrays
    cdef dict _slots                # target -> slot (int)
    cdef uint64_t _state
    cdef double _alpha
    cdef double _default_latency_us

    def __cinit__(self):
        self._stats = NULL
        self._free = NULL
        self._slots = {}

    def __dealloc__(self):
        free(self._stats)
        free(self._free)

    def __init__(self, seed=0, alpha=0.2, default_latency_us=1000.0):
        if not isinstance(seed, int):
            raise TypeError(f"seed must be int, not {type(seed).__name__}")
        cdef double a = alpha
        if not 0.0 < a <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {a!r}")
        cdef double d = default_latency_us
        if not 0.0 <= d < INFINITY:
            raise ValueError(f"default_latency_us must be finite and >= 0, got {d!r}")
        state = (seed & 0xFFFFFFFFFFFFFFFF) ^ 0x9E3779B97F4A7C15
        self._state = state if state else _SEED_MIX   # xorshift must never hold 0
        self._alpha = a
        self._default_latency_us = d
        self._slots = {}
        self._nfree = 0
        self._used = 0

    cdef inline uint64_t _next(self) noexcept:
        # xorshift64* (Vigna 2016): 64-bit state, shifts 12/25/27, odd multiplier.
        cdef uint64_t x = self._state
        x ^= x >> 12
        x ^= x << 25
        x ^= x >> 27
        self._state = x
        return x * _XORSHIFT_MUL

    cdef inline Py_ssize_t _slot_of(self, object target) except -2:
        slot = self._slots.get(target)
        if slot is None:
            return -1
        return <Py_ssize_t>slot

    cdef Py_ssize_t _new_slot(self) except -1:
        cdef Py_ssize_t size
        cdef void* p
        if self._nfree:
            self._nfree -= 1
            return self._free[self._nfree]
        if self._used == self._allocated:
            size = self._allocated * 2 if self._allocated else 16
            p = realloc(self._stats, size * sizeof(_Stat))
            if p == NULL:
                raise MemoryError()
            self._stats = <_Stat*>p
            p = realloc(self._free, size * sizeof(Py_ssize_t))
            if p == NULL:
                raise MemoryError()
            self._free = <Py_ssize_t*>p
            self._allocated = size
        self._used += 1
        return self._used - 1

    cdef int _add(self, object target, double capacity) except -1:
        _check_target(target)
        capacity = _check_capacity(capacity)
        cdef Py_ssize_t slot = self._slot_of(target)
        if slot >= 0:
            self._stats[slot].capacity = capacity
            return 0
        slot = self._new_slot()
        self._stats[slot] = _Stat(0, self._default_latency_us, 0.0, capacity, False)
        self._slots[target] = slot
        return 0

    def add(self, target, capacity=1.0):
        """Track ``target`` (idempotent; updates the capacity if present). ValueError if capacity <= 0."""
        self._add(target, capacity)

    def remove(self, target):
        """Forget ``target``; no error if absent."""
        slot = self._slots.pop(target, None)
        if slot is not None:
            self._free[self._nfree] = <Py_ssize_t>slot
            self._nfree += 1

    def set_capacity(self, target, capacity):
        """Change the capacity of ``target``; ValueError if capacity <= 0, KeyError if unknown."""
        cdef double c = _check_capacity(capacity)
        self._stats[<Py_ssize_t>self._slots[target]].capacity = c

    def begin(self, target):
        """A call to ``target`` started: in-flight += 1 (the target is added if unknown)."""
        cdef Py_ssize_t slot = self._slot_of(target)
        if slot < 0:
            self._add(target, 1.0)
            slot = self._slot_of(target)
        self._stats[slot].inflight += 1

    def end(self, target, double latency_us, bint ok):
        """A call to ``target`` ended after ``latency_us`` microseconds: the latency EWMA takes
        latency_us / max(in-flight, 1), the error EWMA ``ok``, then in-flight -= 1
        (not below 0). ValueError if latency_us is negative or not finite; an unknown target is ignored."""
        if not 0.0 <= latency_us < INFINITY:
            raise ValueError(f"latency_us must be finite and >= 0, got {latency_us!r}")
        cdef Py_ssize_t slot = self._slot_of(target)
        if slot < 0:
            return
        cdef _Stat* st = &self._stats[slot]
        cdef double per_call = latency_us / <double>(st.inflight if st.inflight > 1 else 1)
        if st.inflight > 0:
            st.inflight -= 1
        if st.sampled:
            st.latency_us += self._alpha * (per_call - st.latency_us)
        else:
            st.latency_us = per_call
            st.sampled = True
        st.error_rate += self._alpha * ((0.0 if ok else 1.0) - st.error_rate)

    cdef double _score(self, object target) except? -1.0:
        cdef Py_ssize_t slot = self._slot_of(target)
        if slot < 0:
            return _load(0.0, self._default_latency_us, 0.0, 1.0)
        cdef _Stat* st = &self._stats[slot]
        return _load(<double>st.inflight, st.latency_us, st.error_rate, st.capacity)

    def score(self, target):
        """load_score of ``target``'s stats; an unknown target scores as a fresh one
        (0 in flight, default latency, no errors, capacity 1)."""
        return self._score(target)

    def stats(self, target):
        """(inflight, ewma_latency_us, error_rate, capacity) of ``target``; KeyError if unknown."""
        cdef _Stat st = self._stats[<Py_ssize_t>self._slots[target]]
        return (st.inflight, st.latency_us, st.error_rate, st.capacity)

    def pick(self, candidates):
        """One of ``candidates`` by the power of two choices; ValueError if empty.

        One candidate is returned as is. Otherwise two distinct indices are drawn,
        i = (rand >> 11) % n and j = (rand >> 11) % (n - 1), plus 1 if j >= i, and the
        candidate with the lower score wins (the first drawn on a tie); the loser ages unless it
        has calls in flight."""
        cdef Py_ssize_t n = len(candidates)
        if n == 0:
            raise ValueError("pick() needs at least one candidate")
        if n == 1:
            return candidates[0]
        cdef Py_ssize_t i = <Py_ssize_t>((self._next() >> 11) % <uint64_t>n)
        cdef Py_ssize_t j = <Py_ssize_t>((self._next() >> 11) % <uint64_t>(n - 1))
        if j >= i:
            j += 1
        if type(candidates) is tuple:
            first = (<tuple>candidates)[i]
            second = (<tuple>candidates)[j]
        elif type(candidates) is list:
            first = (<list>candidates)[i]
            second = (<list>candidates)[j]
        else:
            first = candidates[i]
            second = candidates[j]
        if self._score(second) < self._score(first):
            self._age(first)
            return second
        self._age(second)
        return first

    cdef int _age(self, object loser) except -1:
        cdef Py_ssize_t slot = self._slot_of(loser)
        if slot < 0:                  # a fresh loser must age like the rest, so track it
            self._add(loser, 1.0)
            slot = self._slot_of(loser)
        cdef _Stat* st = &self._stats[slot]
        if st.inflight > 0:           # answers are on their way: they, not comparisons, update it
            return 0
        st.latency_us *= 1.0 - _LOSER_DECAY
        st.error_rate *= 1.0 - _LOSER_DECAY
        return 0

    def __len__(self):
        return len(self._slots)

    def __contains__(self, target):
        return target in self._slots
