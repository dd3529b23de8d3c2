"""Security: node keys, the trust store, the ACL policy and its audit log.

* :mod:`mesh.security.keys`: a node's Curve25519 (ZeroMQ CURVE) and Ed25519 (signature) key
  pairs and their files; ``python -m mesh.keys`` is the command line.
* :mod:`mesh.security.trust`: which node identities a node accepts (links, signed records),
  with key rotation.
* :mod:`mesh.security.acl`: the TOML policy and its per-message ``check``.
* :mod:`mesh.security.audit`: denials as rate-limited, rotated JSON lines.
* :mod:`mesh.security.links`: CURVE on every link and the ZAP handler that admits only
  trusted keys; :mod:`mesh.security.records`: signed membership records;
  :mod:`mesh.security.guard`: throttling and banning of misbehaving peers;
  :mod:`mesh.security.settings`: a node's combination of these, checked at construction.

Errors are :class:`mesh.security.errors.KeyFileError` and ``PolicyError`` (both
:class:`mesh.errors.MeshError`); a denied caller gets :class:`mesh.errors.Unauthorized`.
"""
from __future__ import annotations

from mesh.security.acl import Action, Decision, Policy
from mesh.security.audit import AuditLog
from mesh.security.errors import KeyFileError, PolicyError
from mesh.security.keys import NodeKeys, PublicIdentity, generate, load_keys, load_public, write_keys
from mesh.security.trust import TrustStore

__all__ = ["Action", "AuditLog", "Decision", "KeyFileError", "NodeKeys", "Policy", "PolicyError",
           "PublicIdentity", "TrustStore", "generate", "load_keys", "load_public", "write_keys"]
