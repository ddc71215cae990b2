"""The backup log: each backup, verification and restore is recorded in the audit log.

The audit log lives in the database every replica shares, so the age of the last good backup
(`vibe_backup_age_seconds` on /metrics, and `vibe-ensemble doctor`) is the same on every replica,
wherever the backup ran (a laptop, a Kubernetes CronJob). The backups themselves live in the backup
location (store/backup.py); this is only their record.
"""

from __future__ import annotations

import time
from datetime import datetime

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import audit as store

CREATED = "backup.created"
VERIFIED = "backup.verified"
RESTORED = "backup.restored"
CACHE_S = 15.0  # /metrics is scraped often; a new backup shows within this many seconds


class BackupLogService(Service):
    _cached: tuple[float, datetime | None] | None = None

    async def record(self, caller: Caller, action: str, outcome: str = "ok", **details: object) -> None:
        async with self.write() as tx:
            tx.audit(caller, action, outcome, **details)
        if action == CREATED:
            self._cached = None

    async def last_created(self, *, fresh: bool = False) -> datetime | None:
        """When the newest successful backup was taken (None: never), cached for CACHE_S."""
        now = time.monotonic()
        if not fresh and self._cached is not None and now - self._cached[0] < CACHE_S:
            return self._cached[1]
        async with self.snapshot() as conn:
            entries = await store.page(conn, action=CREATED, outcome="ok", limit=1)
        last = entries[0].time if entries else None
        self._cached = (now, last)
        return last

    async def age_s(self) -> float:
        """Seconds since the newest successful backup; infinity when none was ever recorded."""
        last = await self.last_created()
        return float("inf") if last is None else max(0.0, (self.ctx.clock() - last).total_seconds())
