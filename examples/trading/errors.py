"""The trading example's own errors (mesh's are in :mod:`mesh.errors`; these belong to the
application built on it, so they live with it). Raised in a handler on another node, they
reach the caller as :class:`mesh.errors.RemoteError` whose ``type`` is the class name."""
from __future__ import annotations

from mesh.errors import MeshError


class TradingError(MeshError):
    """Base of the trading example's errors."""


class Fenced(TradingError):
    """The exchange refused a request carrying an older fencing token than one it has seen:
    the executor that sent it has been replaced (or the attempt was superseded)."""


class GaveUp(TradingError):
    """An order was still unacknowledged when the run's drain deadline passed."""
