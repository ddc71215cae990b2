"""SQLite on the standard library driver, used on the event-loop thread.

`Database` (store/database.py) is the way in; this module is what it runs on SQLite: one writer
connection and a few readers, statements that never suspend (`Prepared` ones straight on the
driver), and the COMMIT on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, CursorResult, Result
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

from vibe_ensemble.store.prepared import Params, Prepared

T = TypeVar("T")


class SqliteConnection:
    """A SQLite connection used on the event-loop thread: `execute` never suspends.

    A SQLite statement on a small, indexed database takes microseconds, far less than a hop
    to a thread and back, so statements run where the caller is. Nothing else runs on the
    loop between two statements of a transaction, so the writer lock is never held across a
    real suspension except the commit (see `SqliteEngine.write`).
    """

    __slots__ = ("_conn", "_dbapi", "dialect")

    def __init__(self, conn: sa.Connection, dbapi: sqlite3.Connection) -> None:
        self._conn = conn
        self._dbapi = dbapi
        self.dialect = conn.dialect

    @overload
    async def execute(self, statement: Prepared, parameters: Params = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable | Prepared, parameters: Any = None) -> Result[Any]:
        if isinstance(statement, Prepared):
            plan = statement.plan(self.dialect)
            if not plan.needs_sqlalchemy(parameters):
                return plan.run(self._dbapi, parameters)
            statement = statement.statement
        return self._conn.execute(statement, parameters)


def create_private(path: Path) -> None:
    """Create the SQLite file (and any missing directories) readable by its owner only.

    Directories created here are 0700 and the file 0600; SQLite gives its -wal and -shm
    files the database file's permissions. Existing files and directories are left alone.
    """
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    if str(path) != ":memory:" and not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


class SqliteEngine:
    """One writer connection and a few readers, all used on the event-loop thread.

    The writer begins with `BEGIN IMMEDIATE`; its COMMIT (the one step that may wait on the
    disk: an fsync with synchronous=FULL) runs on one dedicated thread, so the loop keeps
    serving reads meanwhile. Readers are WAL snapshots beside the writer; idle ones are kept
    for reuse. `BEGIN IMMEDIATE` never waits inside SQLite for another process's lock (that
    would block the loop): it retries with an asynchronous back-off instead.
    """

    IDLE_READERS = 4
    BUSY_RETRY_S = 10.0

    def __init__(self, url: URL, *, synchronous: str) -> None:
        self._engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=NullPool,
            connect_args={"check_same_thread": False},
        )
        self._synchronous = synchronous
        sa_event.listen(self._engine, "connect", self._on_connect)
        self._writer: sa.Connection | None = None
        self._idle: list[sa.Connection] = []
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions begin where this module says
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, even across a power loss.
        # NORMAL (opt-in, docs/operations.md): safe against a process crash only.
        cur.execute(f"PRAGMA synchronous={self._synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=0")  # never wait inside SQLite on the event loop
        cur.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteConnection]:
        if self._writer is None:
            self._writer = self._engine.connect()
        conn = self._writer
        dbapi = driver(conn)
        await self._begin_immediate(dbapi)
        try:
            yield SqliteConnection(conn, dbapi)
        except BaseException:
            dbapi.execute("ROLLBACK")
            raise
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._committer, dbapi.execute, "COMMIT")
        except BaseException:
            if dbapi.in_transaction:
                dbapi.execute("ROLLBACK")
            raise

    async def _begin_immediate(self, dbapi: sqlite3.Connection) -> None:
        deadline = time.monotonic() + self.BUSY_RETRY_S
        delay = 0.001
        while True:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    @contextlib.contextmanager
    def read(self) -> Iterator[SqliteConnection]:
        conn = self._idle.pop() if self._idle else self._engine.connect()
        dbapi = driver(conn)
        dbapi.execute("BEGIN")
        try:
            yield SqliteConnection(conn, dbapi)
        finally:
            dbapi.execute("ROLLBACK")
            if len(self._idle) < self.IDLE_READERS:
                self._idle.append(conn)
            else:
                conn.close()

    def run_sync(self, fn: Callable[[sa.Connection], T], *, write: bool) -> T:
        with self._engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = fn(conn)
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT" if write else "ROLLBACK")
            return result

    def close(self) -> None:
        for conn in [*self._idle, *([self._writer] if self._writer else [])]:
            conn.close()
        self._idle.clear()
        self._writer = None
        self._committer.shutdown(wait=True)
        self._engine.dispose()


def driver(conn: sa.Connection) -> sqlite3.Connection:
    """The stdlib connection under SQLAlchemy's: transaction control and prepared plans run on it."""
    dbapi = conn.connection.dbapi_connection
    assert isinstance(dbapi, sqlite3.Connection)
    return dbapi
