"""The running core shared by every front door: settings, database, services, duties."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from vibe_ensemble.auth.concurrency import ConcurrencyLimits
from vibe_ensemble.auth.ratelimit import RateLimiter
from vibe_ensemble.domain.caller import SYSTEM
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import DatabaseUnavailable, StorageFull
from vibe_ensemble.events.bridge import PostgresBridge
from vibe_ensemble.events.tasks import stop_task
from vibe_ensemble.ops import metrics
from vibe_ensemble.ops.config import Settings
from vibe_ensemble.services import ServiceContext, Services
from vibe_ensemble.services.base import Presence, open_database
from vibe_ensemble.services.tokens import AUTH_FAILURE
from vibe_ensemble.store import migrate
from vibe_ensemble.store.database import DatabaseError, Owner, OwnerLock
from vibe_ensemble.store.leader import Leadership

log = structlog.get_logger(__name__)

SAMPLE_S = 5.0  # with several workers, how often each refreshes its per-process metrics (pool, waiters)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = open_database(settings)
        limiter = RateLimiter(
            {**settings.rate_limit_per_minute, AUTH_FAILURE: settings.auth_failures_per_minute},
            settings.rate_limit_burst,
        )
        self.services = Services(
            ServiceContext(
                self.db,
                default_project=settings.default_project,
                limiter=limiter,
                open_limits=ConcurrencyLimits(
                    {"feed": settings.max_feeds_per_credential, "wait": settings.max_waits_per_credential}
                ),
                credential_cache_s=settings.credential_cache_s,
                presence=Presence(settings.offline_after_s),
            )
        )
        self._owner: OwnerLock | None = None
        self._duties: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None
        self.leadership = Leadership(self.db)
        self.is_leader = False  # runs the background duties now
        self.bridge: PostgresBridge | None = None
        self.draining = False  # SIGTERM received: not ready, every answer closes its connection

    async def start(
        self, *, apply_migrations: bool = False, own: bool = True, owner: Owner | None = None
    ) -> None:
        """Take ownership of a SQLite file, check (or apply) migrations, ensure the default project.
        `owner`: what this process is (a server, with its MCP URL), recorded in the file's owner lock
        for whoever meets it."""
        if self.db.path is not None and own:
            self._owner = OwnerLock(self.db.path)
            self._owner.acquire(owner)
        try:
            if apply_migrations:
                await migrate.upgrade(self.db)
            else:
                revision = await migrate.current_revision(self.db)
                if problem := migrate.schema_problem(revision, self.db.safe_url()):
                    raise DatabaseError(problem)
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

    async def start_live(self) -> None:
        """Start following the event log: the sequencer and the LISTEN bridge (PostgreSQL), the feeds'
        router and the mail dispatcher."""
        hub = self.services.ctx.hub
        if self.db.is_sqlite:
            # One process owns the file, so every commit is published here; start from the newest.
            hub.publish(await self.services.events.latest_id())
            metrics.EVENTS_LISTENING.set(1)
        elif self.bridge is None:
            sequencer = self.services.ctx.sequencer
            assert sequencer is not None  # PostgreSQL's
            sequencer.start()  # this process's commits' events are given their ids by it, and others' left
            # While deaf the bridge reads the newest id given; it runs no round of its own (the
            # sequencer's sweep gives the others' events their ids, each second)
            self.bridge = PostgresBridge(self.db.asyncpg_dsn(), hub, poll=self._newest_given)
            self.bridge.start()
            # The pool reached the database: a bridge waiting out its backoff reconnects now.
            self.db.on_new_connection(self.bridge.nudge)
            bridge = self.bridge
            metrics.add_sampler("events_listening", lambda: metrics.EVENTS_LISTENING.set(bridge.connected))
        await self.services.live.recent.start()
        await self.services.live.mail.start()
        metrics.add_sampler("mail_waiters", lambda: metrics.MAIL_WAITERS.set(self.services.live.mail.waiting))
        metrics.add_sampler("db_pool", self._sample_pool)
        if metrics.MULTIPROCESS and self._sampler is None:
            # A scrape reaches one worker; each refreshes its own per-process values meanwhile.
            self._sampler = asyncio.create_task(self._sample_every(SAMPLE_S), name="vibe-metrics-sampler")

    def _sample_pool(self) -> None:
        pool, size, in_use = self.db.pool_status()
        metrics.DB_POOL_SIZE.labels(pool).set(size)
        metrics.DB_POOL_IN_USE.labels(pool).set(in_use)

    async def _sample_every(self, interval_s: float) -> None:
        while True:
            metrics.sample()
            await asyncio.sleep(interval_s)

    def begin_shutdown(self) -> None:
        """End every feed and wake every waiter, so open streams do not hold the shutdown up."""
        self.services.ctx.hub.close()

    async def stop_live(self) -> None:
        await stop_task(self._sampler)
        self._sampler = None
        await self.services.live.mail.stop()
        await self.services.live.recent.stop()
        if self.bridge is not None:
            self.db.on_new_connection(None)
            await self.bridge.stop()
            self.bridge = None
        if self.services.ctx.sequencer is not None:
            await self.services.ctx.sequencer.stop()

    async def _newest_given(self) -> int:
        return await self.services.events.latest_id(order=False)

    def start_duties(self) -> None:
        self._duties = asyncio.create_task(self._run_duties(), name="vibe-duties")

    async def _run_duties(self) -> None:
        """Background duties, run by one process across replicas (see store/leader.py).

        The others try to take over every `leader_retry_s`, so the duties go on when the
        process that ran them dies.
        """
        s = self.settings
        while True:
            leader = await self.leadership.check()
            if leader != self.is_leader:
                log.info("duties_leader" if leader else "duties_follower")
                metrics.DUTY_LEADER.set(int(leader))
                self.is_leader = leader
            if leader:
                await self._duty_round()
            await asyncio.sleep(s.sweep_interval_s if leader else s.leader_retry_s)

    async def _duty_round(self) -> None:
        s = self.settings
        try:
            await self.services.agents.sweep_presence(
                offline_after=timedelta(seconds=s.offline_after_s),
                retire_after=timedelta(seconds=s.retire_after_s),
            )
        except (DatabaseUnavailable, StorageFull) as exc:
            _duty_waits("presence", exc)
        except Exception:
            log.exception("duty_failed", duty="presence")
        try:
            await self.services.reservations.sweep_expired()
        except (DatabaseUnavailable, StorageFull) as exc:
            _duty_waits("lease_expiry", exc)
        except Exception:
            log.exception("duty_failed", duty="lease_expiry")

    async def stop_duties(self) -> None:
        await stop_task(self._duties)
        self._duties = None
        await self.leadership.release()
        self.is_leader = False
        metrics.DUTY_LEADER.set(0)

    async def stop(self) -> None:
        await self.stop_duties()
        await self.stop_live()
        await self.services.tokens.settle()
        await self.services.ctx.presence.settle()
        await self.db.dispose()
        if self._owner is not None:
            self._owner.release()
            self._owner = None


def _duty_waits(duty: str, exc: DatabaseUnavailable | StorageFull) -> None:
    """A duty met the database's fault: a line, no traceback (the fault's story is told once, by
    store/faults.py); the next round tries again."""
    log.warning("duty_failed", duty=duty, error=exc.code)
