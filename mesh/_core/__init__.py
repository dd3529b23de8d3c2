"""The compiled hot path and its pure-Python twins; this module is the only selector.

Each ``mesh/_core/X.pyx`` has a twin ``mesh/_core/_pure/X.py`` with the same public API
(``PUBLIC_API``). Import the selected one as ``from mesh._core import codec`` — never
``import mesh._core.codec`` directly, which would bypass the switch.

``MESH_PURE=1`` selects the twins; ``MESH_PURE=0`` insists on the compiled modules; unset,
the compiled modules are used when built and the twins otherwise (with a warning).
"""
from __future__ import annotations

import importlib
import logging
import os

MODULES = ("codec", "router", "scoring")

_log = logging.getLogger(__name__)


def _select() -> tuple[str, dict]:
    wanted = os.environ.get("MESH_PURE", "")
    if wanted != "1":
        try:
            return "cython", {n: importlib.import_module(f"mesh._core.{n}") for n in MODULES}
        except ImportError as exc:
            if wanted == "0":
                raise
            _log.warning("compiled hot path not built (%s); using the pure-Python twins", exc)
    return "pure", {n: importlib.import_module(f"mesh._core._pure.{n}") for n in MODULES}


IMPLEMENTATION, _modules = _select()
codec = _modules["codec"]
router = _modules["router"]
scoring = _modules["scoring"]



def compiled_twin(name: str):
    """The compiled module ``name`` itself, whatever is selected (for tests and benchmarks
    that compare the twins). Importing ``mesh._core.<name>`` sets this package's attribute
    of that name to the compiled module, which would switch every later ``from mesh._core
    import <name>`` to it under ``MESH_PURE=1``: the selection is put back at once.
    ImportError when it is not built."""
    try:
        return importlib.import_module(f"mesh._core.{name}")
    finally:
        globals()[name] = _modules[name]


__all__ = ["IMPLEMENTATION", "MODULES", "codec", "compiled_twin", "router", "scoring"]
