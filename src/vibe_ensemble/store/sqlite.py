"""SQLite on the standard library driver, used on the event-loop thread, and prepared SELECTs.

`Database` (store/database.py) is the way in; this module is what it runs on SQLite: one writer
connection and a few readers, statements that never suspend, the COMMIT on one dedicated thread,
and `Prepared` statements compiled once per dialect.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, CursorResult, Dialect, IteratorResult, Result
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

T = TypeVar("T")
Row = Mapping[str, Any] | None
Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None  # one row, or many (executemany)
Statement = sa.Select[Any] | sa.Insert | sa.Update | sa.Delete  # what a `Prepared` may hold


class Prepared:
    """A statement built once (at import, with named `sa.bindparam`s) for the hot paths.

    SQLAlchemy spends most of a small statement's time building it and finding its compiled
    form again (~100-250 us against ~10 us for SQLite itself). A `Prepared` statement is
    compiled once per dialect; on SQLite it then runs straight on the driver, with the same
    type processing SQLAlchemy would apply, and returns an ordinary `Result` (with `rowcount`).
    On PostgreSQL it is handed to SQLAlchemy as the prebuilt statement it is (its cache key is
    computed once). SELECT, INSERT, UPDATE and DELETE, with or without RETURNING; a list of
    parameter rows runs as executemany. Expanding `IN` parameters (`sa.bindparam(..., expanding=True)`)
    are filled in per call; an empty list runs through SQLAlchemy, which knows its SQL.
    Python-side column defaults are not applied: give every value.
    """

    __slots__ = ("_plans", "statement")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._plans: dict[str, Plan] = {}

    @classmethod
    def insert_row(cls, table: sa.Table) -> Prepared:
        """INSERT of every column but `id` (each a parameter of the column's name), RETURNING id."""
        values: dict[Any, Any] = {c: sa.bindparam(c.name) for c in table.c if c.name != "id"}
        return cls(table.insert().values(values).returning(table.c.id))

    def plan(self, dialect: Dialect) -> Plan:
        found = self._plans.get(dialect.name)
        if found is None:
            found = self._plans[dialect.name] = Plan(self.statement, dialect)
        return found


class PreparedResult(IteratorResult[Any]):
    """The rows a `Plan` returned, and how many rows its statement changed."""

    def __init__(self, keys: list[str], rows: list[Any], rowcount: int) -> None:
        super().__init__(SimpleResultMetaData(keys), iter(rows))
        self.rowcount = rowcount


class Plan:
    """A compiled `Prepared` for one dialect: SQL, parameter order and type processors."""

    __slots__ = ("binds", "defaults", "expanding", "keys", "results", "sql")

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # Values the statement carries itself (inline literals); the named parameters come per call.
        self.defaults = {n: b.effective_value for n, b in compiled.binds.items() if not b.required}
        self.binds = [
            (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup or []
        ]
        self.expanding = {name for name, b in compiled.binds.items() if b.expanding}
        self.keys: list[str] | None = None  # the names the SQL gives its columns, from the first run
        self.results = [  # the columns selected, or RETURNING's (none for plain DML)
            c.type.dialect_impl(dialect).result_processor(dialect, None) for c in statement.exported_columns
        ]

    def arguments(self, parameters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        """The SQL for these parameters (expanding IN filled in) and its positional arguments."""
        values = {**self.defaults, **parameters} if parameters else self.defaults
        if not self.expanding:
            return self.sql, [values[n] if proc is None else proc(values[n]) for n, proc in self.binds]
        sql, args = self.sql, list[Any]()
        for name, proc in self.binds:
            value: Any = values[name]
            if name in self.expanding:
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * len(value)))
                args.extend(value if proc is None else [proc(v) for v in value])
            else:
                args.append(value if proc is None else proc(value))
        return sql, args

    def run(self, dbapi: Any, parameters: Params) -> PreparedResult:
        if parameters is not None and not isinstance(parameters, Mapping):
            many = list(parameters)
            sql = self.arguments(many[0])[0] if many else self.sql
            cursor = dbapi.executemany(sql, [self.arguments(row)[1] for row in many])
            return PreparedResult([], [], cursor.rowcount)
        sql, args = self.arguments(parameters)
        cursor = dbapi.execute(sql, args)
        if cursor.description is None:
            return PreparedResult([], [], cursor.rowcount)
        if self.keys is None:
            self.keys = [d[0] for d in cursor.description]
        rows: list[Any] = cursor.fetchall()
        if any(self.results):
            procs = self.results
            rows = [tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows]
        return PreparedResult(self.keys, rows, cursor.rowcount)

    def needs_sqlalchemy(self, parameters: Params) -> bool:
        """An empty expanding list: SQLAlchemy renders its own SQL for `IN ()`."""
        if not self.expanding or not isinstance(parameters, Mapping):
            return False
        return any(not parameters.get(name) for name in self.expanding)


class SqliteConnection:
    """A SQLite connection used on the event-loop thread: `execute` never suspends.

    A SQLite statement on a small, indexed database takes microseconds, far less than a hop
    to a thread and back, so statements run where the caller is. Nothing else runs on the
    loop between two statements of a transaction, so the writer lock is never held across a
    real suspension except the commit (see `SqliteEngine.write`).
    """

    __slots__ = ("_conn", "_dbapi", "dialect")

    def __init__(self, conn: sa.Connection) -> None:
        self._conn = conn
        self._dbapi = driver(conn)
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
            yield SqliteConnection(conn)
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
            yield SqliteConnection(conn)
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
