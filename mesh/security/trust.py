"""The trust store: which node identities this node accepts.

Theory of operation
-------------------
A cluster trusts a **folder** (every ``*.pub`` file in it; hidden files and sub-folders are
skipped) or **one file**, which holds one identity or several as ``[[key]]`` tables, so the
same file can be shipped to every node (:func:`mesh.security.keys.identities_to_toml`,
``python -m mesh.keys bundle``). A trust file that holds a secret key is refused.

The store answers three questions, each a dict lookup on an immutable snapshot:

* ``node_of(curve_public)``: which node a CURVE key belongs to (the ZAP handler's question:
  a link from an unknown key is refused, a known one is told its node id);
* ``verify(node_id, data, sig)``: was ``data`` signed by that node (a gossip record must be
  signed by the member it describes)? True if any of the node's accepted Ed25519 keys verifies
  it; it never raises, whatever bytes it is handed;
* ``identities(node_id)``: the node's accepted identities, newest first.

A CURVE or Ed25519 key claimed by two different nodes makes the whole load fail: a node
could otherwise speak, or sign, as another.

Rotation without downtime
    A node may have several identities at once. To rotate node n1's keys:

    1. ``python -m mesh.keys generate --id n1 --out NEWDIR`` and add the new ``n1.pub`` to
       every node's trust folder under another name (``n1.2.pub``): both keys are accepted
       (links and signatures from either).
    2. Restart n1 with the new ``.key``; peers now see it under its new keys.
    3. Later, remove the old ``n1.pub`` from every trust folder.

    The old key can also be given an end instead: add ``expires = <unix seconds>`` to the old
    ``.pub`` in the trust folder; from then on it is not accepted, without touching the files
    again. Expiry is checked when a question is asked (against ``clock``), not at load.

Reload
    ``reload()`` re-reads the folder or file when it changed (names, sizes, mtimes, inodes of
    the ``*.pub`` files) and says whether the accepted set changed. A reload that fails (a
    half-copied or broken file) keeps the identities loaded before and logs the error once per
    change of the files, rather than locking every peer out; ``error`` holds it until a reload
    succeeds. The snapshot is replaced in one assignment, so a ZAP thread may read while the
    event loop reloads.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable

import nacl.bindings
import nacl.exceptions
from zmq.utils import z85

from mesh.security.errors import KeyFileError
from mesh.security.keys import (PUBLIC_SUFFIX, SIGNATURE_LEN, Z85_KEY_LEN, PublicIdentity,
                                parse_identities, read_text)

log = logging.getLogger(__name__)

MAX_IDENTITIES = 100_000     # a trust source with more is refused (bounded memory)

_Fingerprint = tuple


class _Snapshot:
    """Lookups by node, by CURVE key and by verify key; not changed after construction except
    for the order of a node's verify keys (see ``TrustStore.verify``)."""

    __slots__ = ("by_node", "by_curve", "verifiers", "expiring", "keyset", "origin")

    def __init__(self, found: Iterable[tuple[PublicIdentity, str]]) -> None:
        merged: dict[tuple[str, bytes, bytes], PublicIdentity] = {}
        origin: dict[tuple[str, bytes, bytes], str] = {}
        curve_owner: dict[bytes, tuple[str, str]] = {}
        verify_owner: dict[bytes, tuple[str, str]] = {}
        for ident, where in found:
            for owners, key, what in ((curve_owner, ident.curve_public, "curve_public"),
                                      (verify_owner, ident.verify_key, "verify_key")):
                other = owners.setdefault(key, (ident.node_id, where))
                if other[0] != ident.node_id:
                    raise KeyFileError(f"{where}: field {what!r}: the same key is also node "
                                       f"{other[0]!r}'s in {other[1]}; a node could act as another",
                                       path=where, field=what)
            k = (ident.node_id, ident.curve_public, ident.verify_key)
            have = merged.get(k)
            # the same identity listed twice (a folder and a bundle): keep the longer-lived copy
            if have is None or (have.expires is not None
                                and (ident.expires is None or ident.expires > have.expires)):
                merged[k] = ident
                origin[k] = where
        if len(merged) > MAX_IDENTITIES:
            raise KeyFileError(f"more than {MAX_IDENTITIES} identities", path="")
        by_node: dict[str, list[PublicIdentity]] = {}
        for ident in merged.values():
            by_node.setdefault(ident.node_id, []).append(ident)
        self.by_node = {n: tuple(sorted(ids, key=lambda i: (-i.created, i.curve_public)))
                        for n, ids in by_node.items()}
        self.by_curve = {i.curve_public: i for i in merged.values()}
        self.verifiers = {n: tuple((i.verify_key, i.expires) for i in ids)
                          for n, ids in self.by_node.items()}
        self.expiring = any(i.expires is not None for i in merged.values())
        self.keyset = frozenset(merged.values())
        self.origin = {merged[k]: w for k, w in origin.items()}


def _curve_text(curve_public: object) -> bytes | None:
    if isinstance(curve_public, str):
        curve_public = curve_public.encode("ascii", "replace")
    if isinstance(curve_public, (bytearray, memoryview)):
        curve_public = bytes(curve_public)
    if not isinstance(curve_public, bytes):
        return None
    if len(curve_public) == 32:                 # raw, as a ZAP request carries it
        return z85.encode(curve_public)
    return curve_public if len(curve_public) == Z85_KEY_LEN else None


class TrustStore:
    """The identities a node accepts; see the module docstring. ``clock`` gives unix seconds
    for ``expires`` (injectable for tests)."""

    def __init__(self, identities: Iterable[PublicIdentity] = (), source: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._source = source
        self._snap = _Snapshot((i, "<given>") for i in identities)
        self._seen: _Fingerprint | None = None
        self.error: str | None = None
        """The last failed reload's message; None once a reload succeeds."""

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], clock: Callable[[], float] = time.time) -> TrustStore:
        """A store of every ``*.pub`` in a folder, or of every identity in one file.
        KeyFileError names the file and field at fault."""
        source = os.fspath(path)
        store = cls(source=source, clock=clock)
        store._seen = _fingerprint(source)
        store._snap = _read(source)
        if not store._snap.keyset:
            log.warning("trust store %s holds no identity: every peer will be refused", source)
        return store

    def reload(self) -> bool:
        """Re-read the source if it changed; True if the accepted identities changed. A broken
        source keeps the identities loaded before (see the module docstring)."""
        if self._source is None:
            return False
        try:
            seen = _fingerprint(self._source)
        except KeyFileError as exc:
            seen = ("error", str(exc))
            if seen != self._seen:
                self._seen = seen
                self._failed(str(exc))
            return False
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            snap = _read(self._source)
        except KeyFileError as exc:
            self._failed(str(exc))
            return False
        self.error = None
        changed = snap.keyset != self._snap.keyset
        self._snap = snap
        if changed:
            log.info("trust store %s reloaded: %d identities of %d nodes", self._source,
                     len(snap.keyset), len(snap.by_node))
        return changed

    def _failed(self, message: str) -> None:
        self.error = message
        log.error("trust store reload failed, keeping the %d identities loaded before: %s",
                  len(self._snap.keyset), message)

    @property
    def source(self) -> str | None:
        """The folder or file the store was loaded from (None if built from a list)."""
        return self._source

    # -- questions -------------------------------------------------------------------------------

    def _live(self, ident: PublicIdentity) -> bool:
        return ident.expires is None or self._clock() < ident.expires

    def identities(self, node_id: str) -> tuple[PublicIdentity, ...]:
        """The node's accepted identities (not expired), newest first; () if none."""
        ids = self._snap.by_node.get(node_id, ()) if isinstance(node_id, str) else ()
        if ids and self._snap.expiring:
            ids = tuple(i for i in ids if self._live(i))
        return ids

    def all_identities(self) -> tuple[PublicIdentity, ...]:
        """Every identity loaded, expired ones too, by node id then newest first."""
        snap = self._snap
        return tuple(i for n in sorted(snap.by_node) for i in snap.by_node[n])

    def origin(self, ident: PublicIdentity) -> str | None:
        """The file (or ``file: key[i]``) an identity was loaded from."""
        return self._snap.origin.get(ident)

    def node_of(self, curve_public: bytes | str) -> str | None:
        """The node a CURVE public key (Z85, 40 bytes, or raw, 32 bytes) belongs to, or None if
        it is not trusted (unknown or expired)."""
        key = _curve_text(curve_public)
        ident = self._snap.by_curve.get(key) if key is not None else None
        if ident is None or (ident.expires is not None and not self._live(ident)):
            return None
        return ident.node_id

    def curve_key_ok(self, node_id: str, curve_public: bytes | str) -> bool:
        """True if the CURVE key is an accepted key of ``node_id``."""
        return self.node_of(curve_public) == node_id and isinstance(node_id, str)

    def verify_key_ok(self, node_id: str, verify_key: bytes) -> bool:
        """True if the raw Ed25519 key is an accepted key of ``node_id``."""
        for vk, expires in self._snap.verifiers.get(node_id, ()) if isinstance(node_id, str) else ():
            if vk == verify_key and (expires is None or self._clock() < expires):
                return True
        return False

    def verify(self, node_id: str, data: bytes, sig: bytes) -> bool:
        """True if ``sig`` is a valid Ed25519 signature of ``data`` by an accepted key of
        ``node_id``. Never raises: wrong types, lengths or garbage give False."""
        try:
            keys = self._snap.verifiers.get(node_id) if isinstance(node_id, str) else None
            if not keys:
                return False
            # bytes-like only: bytes(n) of an int would allocate n bytes
            if type(sig) is not bytes:
                if not isinstance(sig, (bytearray, memoryview)):
                    return False
                sig = bytes(sig)
            if type(data) is not bytes:
                if not isinstance(data, (bytearray, memoryview)):
                    return False
                data = bytes(data)
            if len(sig) != SIGNATURE_LEN:
                return False
            signed = sig + data
        except (TypeError, ValueError, BufferError):
            return False
        for i, (vk, expires) in enumerate(keys):
            if expires is not None and self._clock() >= expires:
                continue
            try:
                nacl.bindings.crypto_sign_open(signed, vk)
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
                continue
            if i:
                # in a rotation window a node signs with one key: try that one first next time
                # (same keys, other order; one dict store, safe beside a reading thread)
                self._snap.verifiers[node_id] = (keys[i],) + keys[:i] + keys[i + 1:]
            return True
        return False

    def node_ids(self) -> tuple[str, ...]:
        """The nodes with at least one accepted identity, sorted."""
        snap = self._snap
        if not snap.expiring:
            return tuple(sorted(snap.by_node))
        return tuple(sorted(n for n, ids in snap.by_node.items() if any(self._live(i) for i in ids)))

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and bool(self.identities(node_id))

    def __len__(self) -> int:
        """The number of accepted identities (keys, not nodes: a node in a rotation window
        counts twice)."""
        snap = self._snap
        if not snap.expiring:
            return len(snap.keyset)
        return sum(1 for i in snap.keyset if self._live(i))

    def __repr__(self) -> str:
        return f"TrustStore(source={self._source!r}, identities={len(self)}, nodes={len(self.node_ids())})"


# -- reading a source ------------------------------------------------------------------------------

def _pub_names(folder: str) -> list[str]:
    try:
        names = os.listdir(folder)
    except OSError as exc:
        raise KeyFileError(f"{folder}: cannot list the trust folder: {exc.strerror}", path=folder) from None
    return sorted(n for n in names if n.endswith(PUBLIC_SUFFIX) and not n.startswith(".")
                  and os.path.isfile(os.path.join(folder, n)))


def _fingerprint(source: str) -> _Fingerprint:
    """What changes when the source's content may have: names, sizes, mtimes, inodes."""
    try:
        if os.path.isdir(source):
            out = []
            for name in _pub_names(source):
                st = os.stat(os.path.join(source, name))
                out.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
            return ("dir", tuple(out))
        st = os.stat(source)
        return ("file", st.st_size, st.st_mtime_ns, st.st_ino)
    except FileNotFoundError:
        raise KeyFileError(f"{source}: no such trust folder or file", path=source) from None
    except OSError as exc:
        raise KeyFileError(f"{source}: {exc.strerror}", path=source) from None


def _read(source: str) -> _Snapshot:
    if os.path.isdir(source):
        files = [os.path.join(source, n) for n in _pub_names(source)]
    elif os.path.exists(source):
        files = [source]
    else:
        raise KeyFileError(f"{source}: no such trust folder or file", path=source)
    found: list[tuple[PublicIdentity, str]] = []
    for path in files:
        idents = parse_identities(read_text(path), path)
        found.extend((ident, f"{path}: key[{i}]" if len(idents) > 1 else path)
                     for i, ident in enumerate(idents))
        if len(found) > MAX_IDENTITIES:
            raise KeyFileError(f"{source}: more than {MAX_IDENTITIES} identities", path=source)
    return _Snapshot(found)
