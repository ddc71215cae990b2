"""Whole-server counts for /metrics (issues and agents by status, live leases, unread mail), cached.

Prometheus scrapes every 15 to 30 s, possibly from several scrapers; the counts are read at most once
per `CACHE_S` per process, in one read transaction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from vibe_ensemble.services.base import Service
from vibe_ensemble.store import stats as store

CACHE_S = 10.0


@dataclass(frozen=True)
class ServerStats:
    issues: dict[str, int]  # by status, every project
    agents: dict[str, int]  # agents not retired, by status
    live_leases: int
    unread_mail: int  # deliveries not yet read
    read_at: float  # time.monotonic() when they were read from the database


class StatsService(Service):
    _cached: tuple[float, ServerStats] | None = None
    _lock: asyncio.Lock | None = None

    async def current(self) -> ServerStats:
        """The counts, at most `CACHE_S` old; one scrape at a time reads them (the others wait)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < CACHE_S:
                return self._cached[1]
            async with self.read() as tx:
                issues = await store.issues_by_status(tx.conn)
                agents = await store.agents_by_status(tx.conn)
                live_leases = await store.live_leases(tx.conn, tx.now)
                unread_mail = await store.unread_mail(tx.conn)
            stats = ServerStats(issues, agents, live_leases, unread_mail, read_at=time.monotonic())
            self._cached = (now, stats)
            return stats
