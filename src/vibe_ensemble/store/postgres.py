"""PostgreSQL on asyncpg, with a pool of our own over SQLAlchemy's connections.

`Database` (store/database.py) is the way in; this module is what it runs on PostgreSQL, and
only then is it imported: asyncpg and SQLAlchemy's asyncio layer (which loads its ORM) cost a
SQLite server's start and every CLI command nothing. Each connection is SQLAlchemy's, in
AUTOCOMMIT, with asyncpg's under it; each transaction is begun and ended by asyncpg itself, so
`Prepared` statements run on asyncpg directly beside the ones SQLAlchemy executes.

The pool is ours (`PostgresEngine`), not SQLAlchemy's: taking a connection from SQLAlchemy's and
giving it back (its checkout and checkin through greenlets, the pool's events, the reset) cost
about 0.2 ms of CPU a transaction, an eighth of a tool call on PostgreSQL. Ours keeps each
connection open and checked out of SQLAlchemy for its whole life, and hands it from a list.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import URL, CursorResult, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

from vibe_ensemble.store.faults import TransactionTimedOut
from vibe_ensemble.store.prepared import Params, Prepared

T = TypeVar("T")

IDLE_PING_S = 1.0  # a pooled connection idle longer than this is pinged before it is used again
PING_TIMEOUT_S = 5.0  # a ping unanswered this long: the connection is given up
WAIT_TIMEOUT_S = 30.0  # every connection busy this long: the caller gets database_unavailable
CONNECT_TIMEOUT_S = 10.0  # a new connection not made in this long (asyncpg waits 60 s): unavailable
# A request's transaction (taking a connection, its statements, the COMMIT) not done in this long:
# the database is taken for unreachable (a network cut leaves a statement unanswered, with nothing
# to end it for minutes), and the caller gets database_unavailable before its client gives up.
TRANSACTION_TIMEOUT_S = 15.0


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


class _Held:
    """One connection of the pool: SQLAlchemy's, checked out of it for good, asyncpg's under it, and
    what repositories are given of them (made once, not for every transaction)."""

    __slots__ = ("conn", "connection", "driver", "idle_since")

    def __init__(self, conn: AsyncConnection, driver: asyncpg.Connection) -> None:
        self.conn = conn
        self.driver = driver
        self.connection = PostgresConnection(conn, driver)
        self.idle_since = time.monotonic()

    @property
    def broken(self) -> bool:
        """Closed (the server went away; asyncpg notices at once), invalidated by SQLAlchemy after a
        disconnect, left inside a transaction that could not be rolled back, or still cancelling a
        statement cut off mid-flight (a read past its bound outside a transaction): until PostgreSQL
        has answered the cancel, the next caller's statement could fail with "another operation is
        in progress", so the connection is closed rather than handed on."""
        return (
            self.driver.is_closed()
            or self.conn.invalidated
            or self.driver.is_in_transaction()
            # asyncpg's own pool asks the same before it reuses a connection
            or self.driver._protocol._is_cancelling()  # type: ignore[attr-defined]
        )


def _cut(held: _Held) -> None:
    """Close a connection's socket at once, with no round trip (the pool has counted it out).

    A graceful close asks the server first, and SQLAlchemy waits 2 s for a hung one to answer: a
    pool closing its idle connections one by one ran past the request's bound, and the cancellation
    left the rest to the garbage collector, whose finalizer closed them from wherever it ran (inside
    uvloop's own code: the process crashed with a segmentation fault)."""
    with contextlib.suppress(Exception):
        held.driver.terminate()


async def _shut(held: _Held) -> None:
    """Close a connection however it was left (the pool has already counted it out): its socket at
    once (`_cut`), then SQLAlchemy's record of it, which no cancellation interrupts (a record left
    open is closed by the garbage collector's finalizer, see `_cut`)."""
    _cut(held)
    await asyncio.shield(_forget_record(held))


async def _forget_record(held: _Held) -> None:
    with contextlib.suppress(Exception):
        await held.conn.invalidate()  # the socket is closed already: no round trip
    with contextlib.suppress(Exception):
        await held.conn.close()


class PostgresEngine:
    """The pool (up to `pool_size` connections, `VIBE_DB_POOL_SIZE`) and its transactions.

    A connection is opened when none is idle and fewer than the limit are open, and kept open.
    Taking one costs no round trip in steady use: one whose socket closed is replaced without
    asking, and one idle for over `IDLE_PING_S` (it may have been cut by a restart or a proxy
    meanwhile) is pinged first. A connection that fails mid-transaction fails that transaction
    (database_unavailable, retry) and is closed when given back, with the idle ones, which went
    through the same outage. When every connection is busy, callers wait their turn, first come
    first served, at most `WAIT_TIMEOUT_S`.
    """

    def __init__(self, url: URL, *, pool_size: int) -> None:
        self.limit = pool_size
        # SQLAlchemy never begins or ends a transaction here (AUTOCOMMIT): `connect` does, with
        # asyncpg's, so that statements through SQLAlchemy and prepared ones share it. No pool of
        # SQLAlchemy's: ours holds each connection for its life.
        self.engine: AsyncEngine = create_async_engine(
            url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"timeout": CONNECT_TIMEOUT_S}
        )
        self._idle: list[_Held] = []
        self._open = 0  # connections opened (or being opened) and not closed: idle and in use
        self._waiters: deque[asyncio.Future[_Held | None]] = deque()
        self._closed = False
        # Called (synchronously) each time a new connection is made: the database answers now.
        # The runtime tells the event bridge, which may be waiting out its reconnect backoff.
        self.on_connect: Callable[[], None] | None = None

    @asynccontextmanager
    async def connect(
        self, *, transaction: bool = True, writes: bool = False, bound_s: float | None = None
    ) -> AsyncIterator[PostgresConnection]:
        """A pooled connection in one transaction: committed when the block ends, rolled back on error.
        Without `transaction`, each statement commits by itself: reads, or (`writes`) a write that is
        one statement. With `bound_s`, the whole of it (the wait for a connection, the block, the
        COMMIT) is cut off past that many seconds with `TransactionTimedOut`, which `faults` takes
        for an unavailable database."""
        committing = False
        bound = asyncio.timeout(bound_s)
        try:
            async with bound:
                held = await self._acquire()
                try:
                    conn = held.connection
                    if not transaction:
                        committing = writes  # cut off, its statement may have committed
                        yield conn
                        return
                    tx = held.driver.transaction()
                    await tx.start()
                    try:
                        yield conn
                    except BaseException:
                        # A statement cut off mid-flight (a cancelled task: a stopping duty, a
                        # timeout) can leave the connection closed, or unanswered, so the rollback
                        # fails or hangs too; the original error, a cancellation among them, must go
                        # on, not that failure (the connection is broken then, and closed when given
                        # back).
                        with contextlib.suppress(Exception):
                            async with asyncio.timeout(PING_TIMEOUT_S):
                                await tx.rollback()
                        raise
                    committing = True
                    await tx.commit()
                finally:
                    await self._release(held)
        except TimeoutError as exc:
            if bound_s is None or not bound.expired():
                raise  # another timeout (a connect's, a ping's): says its own
            raise TransactionTimedOut(bound_s, committing=committing) from exc

    async def _acquire(self) -> _Held:
        while True:
            while self._idle:
                held = self._idle.pop()  # the most recently used: the likeliest to be warm and alive
                if held.driver.is_closed():
                    await self._close(held)
                    continue
                if time.monotonic() - held.idle_since > IDLE_PING_S:
                    try:
                        alive = await self._answers(held)
                    except BaseException:  # cancelled mid-ping: the connection's state is unknown
                        await self._close(held)
                        raise
                    if not alive:
                        await self._close_all_idle()  # they went through what this one did
                        await self._close(held)
                        continue
                return held
            if self._closed:
                raise ConnectionError("the database's connection pool is closed")
            if self._open < self.limit:
                return await self._open_one()
            waiter: asyncio.Future[_Held | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(WAIT_TIMEOUT_S):
                    handed = await waiter
            except BaseException as exc:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
                if waiter.done() and not waiter.cancelled():  # handed over just as this caller gave up
                    late = waiter.result()
                    if late is not None:
                        await self._release(late)
                    else:
                        self._wake(None)
                if isinstance(exc, TimeoutError):
                    raise TimeoutError(
                        f"all {self.limit} database connections were busy for {WAIT_TIMEOUT_S:.0f} s"
                    ) from None
                raise
            if handed is not None:
                return handed
            # None: a connection was closed, so one may be opened in its place; look again

    async def _open_one(self) -> _Held:
        self._open += 1
        try:
            conn = await self.engine.connect()
            raw = await conn.get_raw_connection()
        except BaseException:
            self._forget()  # a waiter may try in its place
            raise
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        if self.on_connect is not None:
            with contextlib.suppress(Exception):
                self.on_connect()
        return _Held(conn, driver)

    async def _answers(self, held: _Held) -> bool:
        try:
            await held.driver.execute("SELECT 1", timeout=PING_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            return False
        return True

    async def _release(self, held: _Held) -> None:
        if held.conn.in_transaction():  # SQLAlchemy's own bookkeeping (AUTOCOMMIT: no round trip)
            try:
                with contextlib.suppress(Exception):  # `broken` below tells whether it is usable
                    await held.conn.rollback()
            except BaseException:  # cancelled meanwhile: its state is unknown
                await self._close(held)
                raise
        if self._closed or held.broken:
            if not self._closed and held.driver.is_closed():
                await self._close_all_idle()  # the server went away: they did too
            await self._close(held)
            return
        held.idle_since = time.monotonic()
        if not self._wake(held):
            self._idle.append(held)

    def _wake(self, handed: _Held | None) -> bool:
        """Hand `handed` (or, for None, a free place) to the first caller waiting; False if none is."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    async def _close(self, held: _Held) -> None:
        self._forget()
        await _shut(held)

    async def _close_all_idle(self) -> None:
        idle, self._idle = self._idle, []
        for held in idle:  # counted out and cut first: a cancellation meanwhile leaks nothing
            self._forget()
            _cut(held)
        if idle:
            await asyncio.shield(asyncio.gather(*(_forget_record(held) for held in idle)))

    def _forget(self) -> None:
        """One connection fewer: its place goes to a caller waiting, if any."""
        self._open -= 1
        self._wake(None)

    async def run_sync(self, fn: Callable[[sa.Connection], T], *, bound_s: float | None = None) -> T:
        async with self.connect(bound_s=bound_s) as conn:
            return await conn.run_sync(fn)

    def in_use(self) -> int:
        """Connections taken from the pool now."""
        return self._open - len(self._idle)

    async def dispose(self) -> None:
        """Close the idle connections now, and the ones in use as they are given back."""
        self._closed = True
        await self._close_all_idle()
        await self.engine.dispose()
