"""The running core shared by every front door: settings, database, services, duties."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import structlog

from vibe_ensemble.auth.ratelimit import RateLimiter
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import ServiceContext, Services
from vibe_ensemble.services.tokens import AUTH_FAILURE
from vibe_ensemble.store import migrate
from vibe_ensemble.store.database import Database, DatabaseError, OwnerLock

log = structlog.get_logger(__name__)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        limiter = RateLimiter(
            {**settings.rate_limit_per_minute, AUTH_FAILURE: settings.auth_failures_per_minute},
            settings.rate_limit_burst,
        )
        self.services = Services(
            ServiceContext(self.db, default_project=settings.default_project, limiter=limiter)
        )
        self._owner: OwnerLock | None = None
        self._duties: asyncio.Task[None] | None = None

    async def start(self, *, apply_migrations: bool = False, own: bool = True) -> None:
        """Take ownership of a SQLite file, check (or apply) migrations, ensure the default project."""
        if self.db.path is not None and own:
            self._owner = OwnerLock(self.db.path)
            self._owner.acquire()
        try:
            if apply_migrations:
                await migrate.upgrade(self.db)
            elif not await migrate.is_current(self.db):
                raise DatabaseError(
                    f"the database at {self.db.safe_url()} is not migrated to the current schema: "
                    "run `vibe-ensemble migrate` first (or serve with --migrate)"
                )
            await self.services.projects.ensure(self.settings.default_project)
        except BaseException:
            await self.stop()
            raise

    async def bootstrap_admin_token(self) -> str | None:
        """On first start (no credentials at all) create an admin token and return it, once."""
        if await self.services.tokens.count() > 0:
            return None
        _, secret = await self.services.tokens.create(SYSTEM, role=TokenRole.ADMIN, label="bootstrap admin")
        return secret

    def start_duties(self) -> None:
        self._duties = asyncio.create_task(self._run_duties(), name="vibe-duties")

    async def _run_duties(self) -> None:
        """Background duties: presence sweeps. One owning process on SQLite runs them."""
        s = self.settings
        while True:
            try:
                await self.services.agents.sweep_presence(
                    offline_after=timedelta(seconds=s.offline_after_s),
                    retire_after=timedelta(seconds=s.retire_after_s),
                )
            except Exception:
                log.exception("duty_failed", duty="presence")
            await asyncio.sleep(s.sweep_interval_s)

    async def stop_duties(self) -> None:
        if self._duties is not None:
            self._duties.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._duties
            self._duties = None

    async def stop(self) -> None:
        await self.stop_duties()
        await self.db.dispose()
        if self._owner is not None:
            self._owner.release()
            self._owner = None
