"""Who runs the background duties: exactly one process, across any number of replicas.

SQLite: one process owns the database file (`OwnerLock`), so it is the leader.

PostgreSQL: the leader is the process holding a session-level advisory lock on
a dedicated connection. The lock lives exactly as long as that connection: when
the leader dies, or loses the database, PostgreSQL releases it and another
replica takes it on its next try. The leader asks its connection before every
round of duties, so a leader that lost the lock stops at once.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import structlog

from vibe_ensemble.store.database import Database

if TYPE_CHECKING:
    import asyncpg

log = structlog.get_logger(__name__)

DUTY_LOCK_KEY = 0x56494244  # "VIBD": a different key from the event-order lock
TIMEOUT_S = 5.0
APP_NAME = "vibe-ensemble duties"  # how the lock's connection shows in pg_stat_activity


class Leadership:
    def __init__(self, db: Database) -> None:
        self._sqlite = db.is_sqlite
        self._dsn = db.asyncpg_dsn()
        self._conn: asyncpg.Connection | None = None
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._sqlite or self._leader

    async def check(self) -> bool:
        """Am I the leader now? Takes the lock when it is free; notices when it was lost."""
        if self._sqlite:
            return True
        try:
            if self._conn is None or self._conn.is_closed():
                import asyncpg  # here: on PostgreSQL only (a SQLite server never loads it)

                self._leader = False
                self._conn = await asyncpg.connect(
                    self._dsn, timeout=TIMEOUT_S, server_settings={"application_name": APP_NAME}
                )
            if self._leader:
                await self._conn.fetchval("SELECT 1", timeout=TIMEOUT_S)
            else:
                took = await self._conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", DUTY_LOCK_KEY, timeout=TIMEOUT_S
                )
                self._leader = bool(took)
        except Exception as exc:
            if self._leader:
                log.warning("duties_leadership_lost", error=str(exc) or type(exc).__name__)
            await self.release()
            return False
        return self._leader

    async def release(self) -> None:
        """Give the lock up (closing the connection releases it)."""
        self._leader = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
            if not conn.is_closed():
                conn.terminate()
