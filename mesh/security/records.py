"""Signed membership records: a member vouches for its own address, agents and incarnation.

Theory of operation
-------------------
* A member's gossip record is (node id, incarnation, address, metadata); the metadata lists
  its agents, capabilities and topics. The member signs it (Ed25519) whenever it changes, and
  the signature travels with every copy of the record (:attr:`mesh.swim.messages.Update.sig`),
  so a relay passes it on but cannot alter it or make one up for someone else.
* The signed bytes are a msgpack array with a domain tag, so a record signature can never be
  mistaken for a signature of anything else a key signs.
* Receivers check every ALIVE record before the SWIM core sees it and drop what fails
  (counted). Accusations (SUSPECT, DEAD) are claims of the authenticated peer that sends them,
  not records; where a full-state sync attaches an address to one, the address is kept only
  if its signature holds.
* Replays: the SWIM core already ignores a record older than (or equal to) what it has, and
  a node refutes any claim about itself at or above its incarnation; a genuine old record
  replayed later is therefore ignored, and a restarted node starts above its last incarnation
  (the runtime seeds it with the boot time).
* Checking costs about one Ed25519 verify per new record; every record is gossiped several
  times, so :class:`RecordVerifier` remembers the records it found good (bounded; forgotten
  when the trust store changes, so a removed key stops vouching at once).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgpack

from mesh.security.links import principal_of

DOMAIN = "mesh-member-record-v1"
_CACHE_SIZE = 4096


def record_bytes(node: str, incarnation: int, address: str, meta: bytes) -> bytes:
    """The exact bytes a member signs for its record."""
    return msgpack.packb([DOMAIN, node, incarnation, address, meta], use_bin_type=True)


class RecordSigner:
    """Signs our own record (handed to the SWIM core as its ``signer``)."""

    def __init__(self, keys: Any) -> None:
        self._keys = keys

    def __call__(self, node: str, incarnation: int, address: str, meta: bytes) -> bytes:
        return self._keys.sign(record_bytes(node, incarnation, address, meta))


class RecordVerifier:
    """Checks a record's signature against the trusted keys of the node it is about."""

    def __init__(self, trust: Any, cache_size: int = _CACHE_SIZE) -> None:
        self._trust = trust
        self._good: OrderedDict[tuple, None] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, node: str, incarnation: int, address: str, meta: bytes, sig: bytes) -> bool:
        key = (node, incarnation, address, meta, sig)
        if key in self._good:
            self._good.move_to_end(key)
            return True
        if not (sig and self._trust.verify(principal_of(node), record_bytes(node, incarnation, address, meta),
                                           sig)):
            return False
        self._good[key] = None
        if len(self._good) > self._cache_size:
            self._good.popitem(last=False)
        return True

    def forget(self) -> None:
        """The trust store changed: check everything again."""
        self._good.clear()
