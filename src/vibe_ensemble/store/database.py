"""Connections to SQLite or PostgreSQL, with one explicit way to read and to write.

SQLite: WAL, one writer connection guarded by a lock, `BEGIN IMMEDIATE` on every
write transaction, and a small pool of read connections beside it. One process
owns a SQLite file (`OwnerLock`); a second one refuses to start on it.

PostgreSQL (asyncpg): one pool; every write transaction that appends events
takes a transaction-level advisory lock first (`store.events.append`), so event
ids become visible in id order.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from vibe_ensemble.domain.errors import InvalidInput


@contextmanager
def _out_of_range_is_invalid_input() -> Iterator[None]:
    """A value the database cannot hold (an id past 64 bits, a lone surrogate) is bad input.

    The doors bound ids and numbers where they declare them; this is the net under those bounds,
    so no such value ever becomes a 500.
    """
    try:
        yield
    except (OverflowError, UnicodeEncodeError, sa_exc.DBAPIError) as exc:
        causes = list(_causes(exc))
        if any(isinstance(e, UnicodeEncodeError) for e in causes):
            raise InvalidInput("request", "text must be valid Unicode (no lone surrogates)") from exc
        # SQLite raises OverflowError; asyncpg a DataError ("value out of int64 range").
        if any(isinstance(e, OverflowError | sa_exc.DataError | asyncpg.DataError) for e in causes):
            raise InvalidInput(
                "request", "a number or date is out of the range the server can store"
            ) from exc
        raise


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, then what caused it: `__cause__`, or the driver's original under SQLAlchemy's."""
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain; the bound only guards against a cycle
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or getattr(seen, "orig", None)


Connection = AsyncConnection
"""The connection every repository in `store/` takes and every service passes along.

Repositories use only `await conn.execute(<SQLAlchemy Core statement>)` and the result's
`.scalar()`, `.scalar_one()`, `.scalars()`, `.mappings()`, `.first()`, `.all()`, `.rowcount`
and `.inserted_primary_key`, so the implementation behind this name can change.
"""


class DatabaseError(Exception):
    """The database cannot be used as configured; the message says why."""


def normalise_url(url: str) -> str:
    """Accept the usual spellings and return one with an async driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://") :]
    if url.startswith("sqlite:///") and not url.startswith("sqlite+aiosqlite"):
        url = "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    return url


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise DatabaseError("an in-memory SQLite database cannot be shared; give a file path")
    return Path(url.database)


class Database:
    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url: URL = make_url(normalise_url(url))
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._write_lock = asyncio.Lock()
        if self.dialect == "sqlite":
            path = sqlite_path(self.url)
            assert path is not None
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = path
            self.writer = create_async_engine(self.url, pool_size=1, max_overflow=0)
            self.reader = create_async_engine(self.url, pool_size=4, max_overflow=4)
            _configure_sqlite(self.writer, begin="BEGIN IMMEDIATE")
            _configure_sqlite(self.reader, begin="BEGIN")
        else:
            self.path = None
            self.writer = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            self.reader = self.writer

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on error."""
        with _out_of_range_is_invalid_input():
            if self.is_sqlite:
                async with self._write_lock, self.writer.begin() as conn:
                    yield conn
            else:
                async with self.writer.begin() as conn:
                    yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A read-only snapshot (one transaction)."""
        with _out_of_range_is_invalid_input():
            async with self.reader.connect() as conn, conn.begin():
                yield conn

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def asyncpg_dsn(self) -> str:
        """PostgreSQL: a DSN for a raw asyncpg connection beside the pool (LISTEN, the duties lock)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)


def _configure_sqlite(engine: AsyncEngine, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)


class OwnerLock:
    """An exclusive lock on `<db>.lock`: one server process owns a SQLite file."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DatabaseError(
                f"{self.path.with_suffix('')} is already in use by another Vibe Ensemble server "
                f"(pid {holder}). One server owns a SQLite file: stop the other one, point this one "
                "at another --database-url, or use PostgreSQL to run several replicas."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
