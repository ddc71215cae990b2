"""Connections to SQLite or PostgreSQL, with one explicit way to read and to write.

SQLite (the stdlib driver, used on the event-loop thread): WAL, one writer
connection guarded by a lock, `BEGIN IMMEDIATE` on every write transaction, its
COMMIT on one dedicated thread, and a few read connections beside it. One process
owns a SQLite file (`OwnerLock`); a second one refuses to start on it.

PostgreSQL (asyncpg): one pool; every write transaction that appends events
takes a transaction-level advisory lock first (`store.events.append`), so event
ids become visible in id order.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar, overload

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, CursorResult, Dialect, IteratorResult, Result, make_url
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.store import faults


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


T = TypeVar("T")
Row = Mapping[str, Any] | None
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None  # one row, or many (executemany)


# SQLite's durability level (settings.sqlite_synchronous); checked here, so only these reach the PRAGMA.
SQLITE_SYNCHRONOUS = ("FULL", "NORMAL")


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


class Prepared:
    """A SELECT built once (at import, with named `sa.bindparam`s) for the hot paths.

    SQLAlchemy spends most of a small query's time building the statement and finding its
    compiled form again (~100-250 us against ~10 us for SQLite itself). A `Prepared` statement
    is compiled once per dialect; on SQLite it then runs straight on the driver, with the same
    type processing SQLAlchemy would apply, and returns an ordinary `Result`. On PostgreSQL it is
    handed to SQLAlchemy as the prebuilt statement it is (its cache key is computed once).
    Expanding `IN` parameters are not supported (they change the SQL per call).
    """

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: sa.Select[Any]) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def plan(self, dialect: Dialect) -> _Plan:
        found = self._plans.get(dialect.name)
        if found is None:
            found = self._plans[dialect.name] = _Plan(self.statement, dialect)
        return found


class _Plan:
    """A compiled `Prepared` for one dialect: SQL, parameter order and type processors."""

    __slots__ = ("binds", "defaults", "keys", "results", "sql")

    def __init__(self, statement: sa.Select[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("a Prepared statement cannot use expanding IN parameters")
        self.sql = compiled.string
        # Values the statement carries itself (inline literals); the named parameters come per call.
        self.defaults = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        self.binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or []
        ]
        self.keys: list[str] | None = None  # the names the SQL gives its columns, from the first run
        self.results = [
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in statement.selected_columns
        ]

    def run(self, dbapi: Any, parameters: Mapping[str, Any] | None) -> Result[Any]:
        values = {**self.defaults, **parameters} if parameters else self.defaults
        args = [values[name] if proc is None else proc(values[name]) for name, proc in self.binds]
        cursor = dbapi.execute(self.sql, args)
        if self.keys is None:
            self.keys = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
        if any(self.results):
            procs = self.results
            rows = [tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows]
        return IteratorResult(SimpleResultMetaData(self.keys), iter(rows))


class Connection(Protocol):
    """What repositories use of a connection: the dialect and `await conn.execute(statement)`.

    The same on both backends, so a repository never knows which one it runs on.
    """

    @property
    def dialect(self) -> Dialect: ...

    @overload
    async def execute(self, statement: Prepared, parameters: Row = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...


class _SqliteConnection:
    """A SQLite connection used on the event-loop thread: `execute` never suspends.

    A SQLite statement on a small, indexed database takes microseconds, far less than a hop
    to a thread and back, so statements run where the caller is. Nothing else runs on the
    loop between two statements of a transaction, so the writer lock is never held across a
    real suspension except the commit (see `_SqliteEngine.write`).
    """

    __slots__ = ("_conn", "dialect")

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    @overload
    async def execute(self, statement: Prepared, parameters: Row = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable | Prepared, parameters: Any = None) -> Result[Any]:
        if isinstance(statement, Prepared):
            return statement.plan(self.dialect).run(self._conn.connection.dbapi_connection, parameters)
        return self._conn.execute(statement, parameters)


class _PostgresConnection:
    """A pooled asyncpg connection through SQLAlchemy's async engine."""

    __slots__ = ("_conn", "dialect")

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self.dialect = conn.dialect

    @overload
    async def execute(self, statement: Prepared, parameters: Row = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...

    async def execute(self, statement: Executable | Prepared, parameters: Any = None) -> Result[Any]:
        prebuilt = statement.statement if isinstance(statement, Prepared) else statement
        result: Result[Any] = await self._conn.execute(prebuilt, parameters)
        return result


class Database:
    def __init__(self, url: str, *, pool_size: int = 10, sqlite_synchronous: str = "FULL") -> None:
        self.url: URL = make_url(normalise_url(url))
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise DatabaseError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._write_lock = asyncio.Lock()
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise DatabaseError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
        self.path: Path | None = None
        if self.dialect == "sqlite":
            self.path = sqlite_path(self.url)
            assert self.path is not None
            create_private(self.path)
            self._sqlite = _SqliteEngine(self.url, synchronous=sqlite_synchronous)
        else:
            self.engine: AsyncEngine = create_async_engine(
                self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on error."""
        with faults.translate(write=True), _out_of_range_is_invalid_input():
            if self.is_sqlite:
                async with self._write_lock, self._sqlite.write() as conn:
                    yield conn
            else:
                async with self.engine.begin() as aconn:
                    yield _PostgresConnection(aconn)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A read-only snapshot (one transaction)."""
        with faults.translate(write=False), _out_of_range_is_invalid_input():
            if self.is_sqlite:
                with self._sqlite.read() as conn:
                    yield conn
            else:
                async with self.engine.connect() as aconn, aconn.begin():
                    yield _PostgresConnection(aconn)

    async def run_sync(self, fn: Callable[[sa.Connection], T], *, write: bool = False) -> T:
        """Run `fn` with a plain SQLAlchemy connection in one transaction (migrations, inspection)."""
        if not self.is_sqlite:
            async with self.engine.begin() as aconn:
                return await aconn.run_sync(fn)
        if not write:
            return self._sqlite.run_sync(fn, write=False)
        async with self._write_lock:
            return self._sqlite.run_sync(fn, write=True)

    async def dispose(self) -> None:
        if self.is_sqlite:
            self._sqlite.close()
        else:
            await self.engine.dispose()

    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def asyncpg_dsn(self) -> str:
        """PostgreSQL: a DSN for a raw asyncpg connection beside the pool (LISTEN, the duties lock)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)


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


class _SqliteEngine:
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
    async def write(self) -> AsyncIterator[Connection]:
        if self._writer is None:
            self._writer = self._engine.connect()
        conn = self._writer
        await self._begin_immediate(conn)
        try:
            yield _SqliteConnection(conn)
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._committer, conn.exec_driver_sql, "COMMIT")
        except BaseException:
            if _in_transaction(conn):
                conn.exec_driver_sql("ROLLBACK")
            raise

    async def _begin_immediate(self, conn: sa.Connection) -> None:
        deadline = time.monotonic() + self.BUSY_RETRY_S
        delay = 0.001
        while True:
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except sa_exc.OperationalError as exc:
                if "locked" not in str(exc.orig) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        conn = self._idle.pop() if self._idle else self._engine.connect()
        conn.exec_driver_sql("BEGIN")
        try:
            yield _SqliteConnection(conn)
        finally:
            conn.exec_driver_sql("ROLLBACK")
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


def _in_transaction(conn: sa.Connection) -> bool:
    dbapi = conn.connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))


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
