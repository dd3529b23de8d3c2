"""How many cases each fuzz test runs, and with which randomness.

Theory of operation
-------------------
In CI every fuzz test runs a fixed number of hypothesis examples (its ``examples``) from a
fixed seed that differs between the two hot paths: the build is reproducible (a red run is the
change's fault, and ``pytest tests/fuzz`` replays it), while the compiled and the pure run
still try different inputs. Each example feeds its decoder many cases (see
:mod:`tests.fuzz.mutations`); :data:`tests.fuzz.targets.CASES` counts them and the summary at
the end of the run prints the counts.

For a long run set ``MESH_FUZZ_EXAMPLES`` to the examples each test should run (e.g. 200000):
the seed is then random (or ``--hypothesis-seed=N``), so every long run explores new inputs.
A failure prints the input; add it as an ``@example`` to the test once fixed.
"""
from __future__ import annotations

import os
import zlib
from typing import Any, Callable

from hypothesis import HealthCheck, seed, settings

from mesh._core import IMPLEMENTATION

ENV = "MESH_FUZZ_EXAMPLES"


def long_run() -> int | None:
    """The examples per test asked for by ``MESH_FUZZ_EXAMPLES``, or None in a CI run."""
    value = os.environ.get(ENV, "").strip()
    return int(value) if value else None


def fuzz(examples: int) -> Callable[[Any], Any]:
    """Decorate a ``@given`` test: ``examples`` in CI from a fixed seed, or a long run."""
    def apply(test: Any) -> Any:
        wanted = long_run()
        test = settings(max_examples=wanted or examples, deadline=None, database=None, print_blob=True,
                        suppress_health_check=list(HealthCheck))(test)
        if wanted is None:
            test = seed(zlib.crc32(f"{test.__name__}/{IMPLEMENTATION}".encode()))(test)
        return test
    return apply
