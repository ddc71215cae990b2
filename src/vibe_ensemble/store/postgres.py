"""PostgreSQL on asyncpg, through one SQLAlchemy pool.

`Database` (store/database.py) is the way in; this module is what it runs on PostgreSQL, and
only then is it imported: asyncpg and SQLAlchemy's asyncio layer (which loads its ORM) cost a
SQLite server's start and every CLI command nothing. One pool in AUTOCOMMIT, each transaction
begun and ended by asyncpg itself, so `Prepared` statements run on asyncpg directly beside the
ones SQLAlchemy executes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, CursorResult, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.base import Executable

from vibe_ensemble.store.prepared import Params, Prepared

T = TypeVar("T")

IDLE_PING_S = 1.0  # a pooled connection idle longer than this is pinged before it is used again


class PostgresConnection:
    """A pooled connection inside one asyncpg transaction of ours (see `PostgresEngine.connect`).

    `Prepared` statements run straight on asyncpg, which prepares each SQL text once per
    connection and reuses it; any other statement goes through SQLAlchemy on the same connection.
    """

    __slots__ = ("_conn", "_driver", "dialect")

    def __init__(self, conn: AsyncConnection, driver: asyncpg.Connection) -> None:
        self._conn = conn
        self._driver = driver
        self.dialect = conn.dialect

    @overload
    async def execute(self, statement: Prepared, parameters: Params = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable | Prepared, parameters: Any = None) -> Result[Any]:
        if isinstance(statement, Prepared):
            plan = statement.plan(self.dialect)
            if not plan.expanding:  # (an IN list is an array parameter here: store/prepared.py)
                return await plan.run_asyncpg(self._driver, parameters)
            statement = statement.statement
        result: Result[Any] = await self._conn.execute(statement, parameters)
        return result

    async def run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        return await self._conn.run_sync(fn)


def _check_on_checkout(engine: AsyncEngine) -> None:
    """Hand out only live connections, without a round trip per transaction.

    SQLAlchemy's `pool_pre_ping` pings on every checkout: a round trip more in each transaction (a
    third of a tool call's on PostgreSQL). Here a connection whose socket is closed (the server went
    away; asyncpg notices at once) is replaced without asking, and one idle for over `IDLE_PING_S`
    (it may have been cut by a restart or a proxy meanwhile) is pinged first; a connection in
    steady use is used as it is. A connection that fails mid-transaction fails that transaction
    (database_unavailable, retry) either way.
    """
    pool = engine.sync_engine

    @sa_event.listens_for(pool, "checkin")
    def _idle_from(_dbapi: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa_event.listens_for(pool, "checkout")
    def _live(dbapi: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi.driver_connection
        if driver.is_closed():
            raise sa_exc.DisconnectionError("the connection was closed")
        if time.monotonic() - record.info.get("idle_since", 0.0) > IDLE_PING_S:
            try:
                engine.dialect.do_ping(dbapi)
            except Exception as exc:
                raise sa_exc.DisconnectionError("the connection did not answer a ping") from exc


class PostgresEngine:
    """The pool (`pool_size` connections, as many again in overflow) and its transactions."""

    def __init__(self, url: URL, *, pool_size: int) -> None:
        self.pool_size = pool_size
        # SQLAlchemy never begins or ends a transaction here (AUTOCOMMIT): `connect` does, with
        # asyncpg's, so that statements through SQLAlchemy and prepared ones share it.
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, isolation_level="AUTOCOMMIT"
        )
        _check_on_checkout(self.engine)

    @asynccontextmanager
    async def connect(self, *, transaction: bool = True) -> AsyncIterator[PostgresConnection]:
        """A pooled connection in one transaction: committed when the block ends, rolled back on error.
        Without `transaction`, each statement commits by itself (reads only)."""
        async with self.engine.connect() as aconn:
            driver = (await aconn.get_raw_connection()).driver_connection
            assert isinstance(driver, asyncpg.Connection)
            if not transaction:
                yield PostgresConnection(aconn, driver)
                return
            tx = driver.transaction()
            await tx.start()
            try:
                yield PostgresConnection(aconn, driver)
            except BaseException:
                # A statement cut off mid-flight (a cancelled task: a stopping duty, a timeout) can
                # leave the connection closed, so the rollback fails too; the original error, a
                # cancellation among them, must go on, not that failure (the pool replaces the
                # connection at its next checkout).
                with contextlib.suppress(Exception):
                    await tx.rollback()
                raise
            await tx.commit()

    async def run_sync(self, fn: Callable[[sa.Connection], T]) -> T:
        async with self.connect() as conn:
            return await conn.run_sync(fn)

    def in_use(self) -> int:
        """Connections checked out of the pool now."""
        pool: Any = self.engine.pool
        return int(pool.checkedout())

    async def dispose(self) -> None:
        await self.engine.dispose()
