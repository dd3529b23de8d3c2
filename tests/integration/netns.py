"""Separate hosts on one machine: Linux network namespaces joined by a switch.

Theory of operation
-------------------
* A :class:`Network` is one namespace holding a bridge (the *switch*) plus one namespace per
  :class:`Host`. Each host gets one veth pair: ``eth0`` inside the host with its own
  address, the other end a port of the bridge. Hosts therefore reach each other only across
  real (virtual) Ethernet, through ARP and the kernel's TCP stack, as separate machines would;
  their loopbacks are private.
* Namespaces carry a per-run prefix (the pid and a random suffix), so concurrent runs and
  leftovers of a crashed run never collide, and nothing is created in the root namespace.
  A process started in a host dies with the process that started it (PR_SET_PDEATHSIG), and
  a new :class:`Network` deletes the namespaces of runs whose process is gone, so even a
  test runner killed with SIGKILL leaves nothing running and little behind.
* :meth:`Network.cut` sets the host's port on the switch down: a cable pulled at the switch.
  The host's ``eth0`` loses its carrier and both sides go silent: no RST and no FIN crosses,
  so a peer notices only through its own timers (gossip), as with a real cable cut.
  :meth:`Network.heal` plugs it back in.
* :meth:`Network.close` deletes every namespace (the veths and the bridge go with them);
  callers first stop the processes they started inside, so no namespace outlives the test.
* Creating namespaces needs CAP_NET_ADMIN (and CAP_SYS_ADMIN for ``ip netns exec``); where
  the kernel or the sandbox refuses, :class:`KernelRefused` carries the kernel's message so a
  test can skip with it. Any other failure is an error.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_IP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1
_TAG = re.compile(r"^mesh(\d+)-[0-9a-f]{4}-")


class KernelRefused(Exception):
    """The kernel (or a missing ``ip``) refused to make namespaces or veths; the message says why."""


class NetnsError(Exception):
    """An ``ip`` command failed for another reason than a refusal (a bug here, not the host)."""


# Messages by which the kernel says "not here" rather than "you asked wrongly".
_REFUSALS = ("Operation not permitted", "Permission denied", "Operation not supported",
             "not supported", "Unknown device type", "No such file or directory",
             "Read-only file system", "Cannot create namespace")


def _ip(*args: str, refusal_ok: bool = False) -> str:
    """Run ``ip ARGS``; its stdout. Failures raise NetnsError, or KernelRefused when
    ``refusal_ok`` and the message is one of the kernel's refusals."""
    exe = shutil.which("ip")
    if exe is None:
        raise KernelRefused("the ip command (iproute2) is not installed")
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
        if refusal_ok and any(r in message for r in _REFUSALS):
            raise KernelRefused(f"ip {' '.join(args)}: {message}")
        raise NetnsError(f"ip {' '.join(args)}: {message}")
    return done.stdout


def namespaces() -> set[str]:
    """The names of the network namespaces that ``ip netns`` knows."""
    return {line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()}


@dataclass(frozen=True, slots=True)
class Host:
    """One simulated machine: a namespace with ``eth0`` at ``address`` on the switch."""
    name: str            # short name given by the test ("h1")
    netns: str           # the namespace's name
    address: str         # IPv4 address of eth0, without the prefix length
    port: str            # its port's name on the switch

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec``: the process is the
        command itself, exec'd after entering the namespace, so signals reach it directly)."""
        return [shutil.which("ip") or "ip", "netns", "exec", self.netns, *argv]

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start ``argv`` in this host; it is killed if the calling process dies first."""
        return subprocess.Popen(self.command(argv), preexec_fn=_die_with_parent, **kwargs)


def _die_with_parent() -> None:
    # runs in the child before exec; kept across the exec of ip and of the command it runs
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _remove_stale() -> None:
    """Delete namespaces left by runs whose process no longer exists (best effort)."""
    for name in namespaces():
        match = _TAG.match(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            try:
                _ip("netns", "delete", name)
                log.info("deleted stale namespace %s", name)
            except NetnsError as exc:
                log.warning("cannot delete stale namespace %s: %s", name, exc)


class Network:
    """A switch and the hosts on it (see the module docstring). Use as a context manager,
    or call :meth:`close`; close is idempotent and runs every step even if one fails."""

    def __init__(self, subnet: str = "10.77.0", prefix_len: int = 24, tag: str | None = None) -> None:
        self.subnet = subnet
        self.prefix_len = prefix_len
        self.tag = tag or f"mesh{os.getpid()}-{secrets.token_hex(2)}"
        self.hosts: dict[str, Host] = {}
        self._created: list[str] = []
        self.switch = f"{self.tag}-sw"
        # The first namespace is where a refusal shows up (no CAP_NET_ADMIN, no netns).
        self._add_namespace(self.switch, refusal_ok=True)
        try:
            _remove_stale()
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", refusal_ok=True)
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str, refusal_ok: bool = False) -> None:
        _ip("netns", "add", name, refusal_ok=refusal_ok)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, index: int) -> Host:
        """A new host ``name`` at ``<subnet>.<index>``, linked to the switch and up."""
        if name in self.hosts:
            raise ValueError(f"host {name!r} exists")
        host = Host(name, f"{self.tag}-{name}", f"{self.subnet}.{index}", f"p-{name}")
        try:
            self._add_namespace(host.netns)
            # both ends are made in place: no interface ever appears in the root namespace
            _ip("-n", self.switch, "link", "add", host.port, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns, refusal_ok=True)
            _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/{self.prefix_len}", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
        except BaseException:
            self.close()
            raise
        self.hosts[name] = host
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable at the switch: nothing passes either way until :meth:`heal`."""
        _ip("-n", self.switch, "link", "set", host.port, "down")
        log.info("cut %s (%s) off the switch", host.name, host.address)

    def heal(self, host: Host) -> None:
        _ip("-n", self.switch, "link", "set", host.port, "up")
        log.info("healed %s (%s)", host.name, host.address)

    def link_up(self, host: Host) -> bool:
        """Whether the host's port on the switch is administratively up."""
        return "UP" in _ip("-n", self.switch, "-o", "link", "show", host.port).split(">")[0]

    def close(self) -> None:
        """Delete every namespace made here (its veths and the bridge go with it)."""
        errors = []
        while self._created:
            name = self._created.pop()
            try:
                _ip("netns", "delete", name)
            except (NetnsError, KernelRefused, OSError, subprocess.SubprocessError) as exc:
                errors.append(str(exc))
        self.hosts.clear()
        if errors:
            raise NetnsError("; ".join(errors))

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
