"""A node's security settings, resolved once at construction: keys, trust, policy, audit.

Theory of operation
-------------------
* Security is on by default. A node with ``keys`` (its ``.key`` file, see ``python -m
  mesh.keys``) and ``trust`` (a folder or file of the cluster's public keys) runs every link
  under CURVE (:mod:`mesh.security.links`) and signs its membership record.
* Without keys a node runs in plaintext, and only when every address it binds or dials is
  local (loopback, ``ipc://``, ``inproc://``): a demo or a test on one machine. Then it logs
  a loud warning; ``insecure=True`` (``--insecure``) says the plaintext is meant, and the
  command-line tool insists on it. Anywhere else a node without keys refuses to start.
* ``acl`` (a TOML policy, :mod:`mesh.security.acl`) turns authorization on: default deny,
  denials reach the caller as ``Unauthorized`` and the ``audit_log`` file. No policy: every
  authenticated peer may do everything.
"""
from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from mesh.security.links import LinkSecurity, principal_of, split_seed

log = logging.getLogger(__name__)


class InsecureConfig(ValueError):
    """Plaintext was asked for (or keys left out) where it is not allowed."""


_LOCAL_NAMES = ("localhost",)


def is_local_address(address: str) -> bool:
    """True for endpoints that never leave this machine."""
    scheme, _, rest = address.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class NodeSecurity:
    """What the runtime needs: ``links`` (None = plaintext; with them, records are signed),
    the policy and its audit log."""

    links: LinkSecurity | None
    policy: Any = None          # mesh.security.acl.Policy, or None: no authorization
    audit: Any = None           # mesh.security.audit.AuditLog, or None


def resolve(node_id: str, bind: str, seeds: Iterable[str], keys: Any, trust: Any, acl: Any,
            audit_log: str | os.PathLike | None, insecure: bool) -> NodeSecurity:
    """Check the combination and load the files (errors name the file and the problem)."""
    seeds = list(seeds)
    links = None
    if keys is not None:
        if insecure:
            raise InsecureConfig("keys were given and insecure=True: choose one")
        from mesh.security.keys import load_keys
        from mesh.security.trust import TrustStore

        if isinstance(keys, (str, os.PathLike)):
            keys = load_keys(keys)
        if trust is None:
            raise InsecureConfig("keys without trust: give the folder or file of the cluster's public keys")
        if isinstance(trust, (str, os.PathLike)):
            trust = TrustStore.load(trust)
        if principal_of(node_id) != keys.node_id:
            raise InsecureConfig(f"node id {node_id!r} does not match its key, which is {keys.node_id!r}'s")
        links = LinkSecurity(keys, trust)
        for seed in seeds:
            seed_id, address = split_seed(seed)
            if seed_id is not None:
                links.seed_ids[address] = seed_id
    else:
        remote = [a for a in [bind, *(split_seed(s)[1] for s in seeds)] if not is_local_address(a)]
        if remote:
            raise InsecureConfig(
                f"security is on by default: {remote[0]} is not a loopback address, so this node needs "
                "keys (python -m mesh.keys generate) and a trust store; plaintext is only for loopback")
        log.warning("SECURITY OFF: node %s runs in plaintext, unauthenticated (loopback only%s)", node_id,
                    "; --insecure" if insecure else "; give keys= and trust= to turn it on")
    policy = audit = None
    if acl is not None:
        from mesh.security.acl import Policy
        from mesh.security.audit import AuditLog

        policy = Policy.load(acl) if isinstance(acl, (str, os.PathLike)) else acl
        audit = AuditLog(os.fspath(audit_log) if audit_log is not None else None)
    return NodeSecurity(links, policy, audit)
