"""Holding a key under a lease: the one primitive behind locks and singleton agents.

Theory of operation
-------------------
* ``campaign`` grants a lease and creates the key with compare-and-set (absent -> our
  value) under that lease. If someone else holds it, it watches the key and tries again
  when it is deleted: released by its holder, or expired with the holder's lease.
* While held, a background task renews the lease every ``ttl / 3``. The holder counts
  itself the holder only until ``last renewal sent + ttl`` by its own clock: the leader
  expires the lease no earlier than that (it stamps the renewal when it applies it, after
  we sent it). If renewals fail past that point (no quorum, the leader unreachable), or the
  leader says the lease is gone, :attr:`lost` is set and the holder must stop acting.
* ``resign`` deletes the key and revokes the lease, so the next holder need not wait a TTL.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mesh.errors import MeshError

log = logging.getLogger(__name__)


class Election:
    def __init__(self, kv: Any, key: str, value: Any, ttl: float = 5.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.kv = kv
        self.key = key
        self.value = value
        self.ttl = ttl
        self.lease = 0
        self.lost = asyncio.Event()
        self._holding = False
        self._valid_until = 0.0
        self._renewer: asyncio.Task | None = None

    @property
    def holding(self) -> bool:
        return self._holding and time.monotonic() < self._valid_until

    async def campaign(self) -> None:
        """Return once we hold the key (waits while someone else does)."""
        kv = self.kv
        while True:
            sent = time.monotonic()
            self.lease = await kv.grant(self.ttl)
            if await kv.cas(self.key, None, self.value, lease=self.lease):
                break
            await kv.revoke(self.lease)
            self.lease = 0
            await self._until_free()
        self._holding = True
        self._valid_until = sent + self.ttl
        self.lost.clear()
        self._renewer = asyncio.ensure_future(self._renew())

    async def resign(self, timeout: float = 2.0) -> None:
        """Give the key up (idempotent). Best effort: a failure leaves it to expire."""
        self._stop_renewing()
        if self.lease:
            try:
                await self.kv.cas(self.key, self.value, None, timeout=timeout)
                await self.kv.revoke(self.lease, timeout=timeout)
            except MeshError as exc:
                log.info("resigning %s: %s (the lease will expire)", self.key, exc)
            self.lease = 0

    async def _until_free(self) -> None:
        # Watch from the revision we read the holder at, so a release in between is seen.
        revision, items = await self.kv.range(self.key, revision=True)
        if self.key not in items:
            return
        async for event in self.kv.watch(self.key, after=revision):
            if (event.key == self.key and event.kind == "delete") or event.kind == "reset":
                return

    async def _renew(self) -> None:
        interval = self.ttl / 3
        try:
            while True:
                await asyncio.sleep(interval)
                sent = time.monotonic()
                left = self._valid_until - sent
                if left <= 0:
                    break
                try:
                    alive = await self.kv.keepalive(self.lease, timeout=left)
                except MeshError as exc:
                    log.info("renewing the lease of %s failed: %s", self.key, exc)
                    continue
                if not alive:
                    break
                self._valid_until = sent + self.ttl
        finally:
            if self._holding:
                self._holding = False
                self.lost.set()

    def _stop_renewing(self) -> None:
        self._holding = False
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None


class Lock:
    """A mutual-exclusion lock on the mesh: ``async with node.kv.lock("orders"):``.

    Held while its lease is renewed; if the holder loses the lease (see :class:`Election`),
    :attr:`lost` is set — long critical sections should check it before acting."""

    def __init__(self, kv: Any, name: str, owner: str, ttl: float = 10.0) -> None:
        self._election = Election(kv, "_locks/" + name, owner, ttl)

    @property
    def lost(self) -> asyncio.Event:
        return self._election.lost

    async def __aenter__(self) -> Lock:
        await self._election.campaign()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._election.resign()
