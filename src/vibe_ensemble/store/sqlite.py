"""SQLite on the standard library driver, used on the event-loop thread.

`Database` (store/database.py) is the way in; this module is what it runs on SQLite: one writer
connection and a few readers, statements that never suspend (`Prepared` ones straight on the
driver), and the COMMIT on the loop while COMMITs are fast, else on one dedicated thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar, overload
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import URL, CursorResult, Result
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

from vibe_ensemble.store import faults
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

    @property
    def total_changes(self) -> int:
        """Rows inserted, updated or deleted on this connection since it was opened."""
        return self._dbapi.total_changes

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
    private_dirs(path.parent)
    if str(path) != ":memory:" and not path.exists():
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def private_dirs(directory: Path) -> list[Path]:
    """Create `directory` and any missing parents 0700 (readable by their owner only); existing ones
    are left alone. Returns the directories created, outermost first (to remove them again)."""
    missing = [p for p in (directory, *directory.parents) if not p.exists()]
    created = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made by another process meanwhile: not ours
        created.append(path)
    return created


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at `path` (device and inode), or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Batch:
    """Write transactions that share one COMMIT (see `SqliteEngine.write`)."""

    __slots__ = ("committed", "error", "members")

    def __init__(self) -> None:
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.members = 0  # write transactions released into it, waiting for its COMMIT
        self.error: BaseException | None = None  # set when SQLite ended the whole transaction


class SqliteEngine:
    """One writer connection and a few readers, all used on the event-loop thread.

    Writes are group-committed. A write transaction runs its statements inside a SAVEPOINT of
    the writer's open transaction (begun with `BEGIN IMMEDIATE` by the first writer), releases
    it, and waits for the COMMIT that makes it durable; only then is it acknowledged. Every writer
    that ran while the previous COMMIT was under way shares the next one: N concurrent writes cost
    one or two fsyncs, not N in a row. A write that fails rolls back to its savepoint and leaves
    the others alone; a COMMIT that fails fails every write it carried (none was acknowledged).
    The COMMIT (the one step that may wait on the disk: an fsync with synchronous=FULL) runs on
    the loop while COMMITs are fast (the last one took under `INLINE_COMMIT_S`, as with a local
    SSD), where the hop to a thread and back (a thread woken, the loop woken, the GIL passed
    twice) costs more CPU than the fsync takes; after a slow one it runs on one dedicated thread,
    the loop serving meanwhile, and a fast one there brings the next ones back. (A COMMIT that
    takes the WAL past 1,000 pages also checkpoints it, SQLite's default: a slow one, now and then.)
    Readers are WAL snapshots beside the writer; idle ones are kept for reuse. `BEGIN IMMEDIATE`
    never waits inside SQLite for another process's lock (that would block the loop): it
    retries with an asynchronous back-off instead.
    """

    IDLE_READERS = 4
    BUSY_RETRY_S = 10.0
    INLINE_COMMIT_S = 0.001  # a COMMIT that took less runs the next one on the loop (see above)

    def __init__(self, url: URL, path: Path, *, synchronous: str) -> None:
        self.path = path
        # The file this server serves. Connections open it only if it is there (mode=rw): a reader
        # never makes an empty database where the file was deleted. A COMMIT checks it is still the
        # file at `path` (`_commit_now`): writes to a deleted or replaced file are never acknowledged.
        self._identity = _identity(path)
        uri = f"file:{quote(str(path))}?mode=rw"
        self._engine = sa.create_engine(
            url.set(drivername="sqlite+pysqlite"),
            poolclass=NullPool,
            creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
            # JSON as written, not ASCII-escaped: FTS5 indexes the knowledge tags' JSON text, where
            # `café` escaped was the words `caf` and `u00e9` (migration 0013 rewrote the older rows)
            json_serializer=_json_text,
        )
        self._synchronous = synchronous
        sa_event.listen(self._engine, "connect", self._on_connect)
        self._writer: sa.Connection | None = None
        self._idle: list[sa.Connection] = []
        self._committer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-commit")
        # Held by the writer running its statements, and by a COMMIT: never both on the connection.
        self._lock = asyncio.Lock()
        self._batch: _Batch | None = None  # the open transaction's writes, until its COMMIT starts
        self._locked_since: float | None = None  # when BEGIN IMMEDIATE first met another's lock
        self._commits: set[asyncio.Task[None]] = set()
        self.commits = 0  # COMMITs that succeeded (each made one or more writes durable)
        self.commit_s = float("inf")  # how long the last COMMIT took: the first one runs on the thread
        # What a write transaction that will wait on the disk runs inside, whole (`write`): the app
        # gives up the request's place in its gate meanwhile (api/gate.py)
        self.aside: Callable[[], AbstractAsyncContextManager[object]] = contextlib.nullcontext

    def _on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions begin where this module says
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before it is acknowledged, even across a power loss.
        # NORMAL (opt-in, docs/operations.md): safe against a process crash only.
        cur.execute(f"PRAGMA synchronous={self._synchronous}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=0")  # never wait inside SQLite on the event loop
        # Scratch space in memory: with the default (a file), every INSERT … RETURNING made, wrote and
        # deleted a temporary file for its returned rows: more than half the time of an event's insert.
        # Only scratch data lives there (a sort, RETURNING's rows); what is committed goes to the WAL.
        cur.execute("PRAGMA temp_store=MEMORY")
        cur.close()

    @property
    def busy(self) -> bool:
        """Whether a write is running or waiting for its COMMIT (for /metrics)."""
        return self._lock.locked() or self._batch is not None

    @asynccontextmanager
    async def write(self) -> AsyncIterator[SqliteConnection]:
        if self._lock.locked() or self.commit_s >= self.INLINE_COMMIT_S:
            # The writer is taken (a write, a COMMIT on the thread) or COMMITs are slow: this write will
            # mostly wait on the disk, and runs aside (`aside`); so does a wait for another process's
            # lock on the file (`_begin_immediate`).
            async with self.aside(), self._write() as conn:
                yield conn
        else:  # its statements and its COMMIT run on the loop at once: it waits for nothing
            async with self._write() as conn:
                yield conn

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[SqliteConnection]:
        async with self._lock:
            if self._writer is None:
                self._writer = self._engine.connect()
            conn = self._writer
            dbapi = driver(conn)
            if self._batch is None:
                try:
                    await self._begin_immediate(dbapi)
                except sqlite3.Error as exc:
                    self._drop_read_only_writer(exc)
                    raise
                self._batch = _Batch()
            batch = self._batch
            refused: Exception | None = None
            dbapi.execute("SAVEPOINT write")
            try:
                yield SqliteConnection(conn, dbapi)
            except BaseException as exc:
                self._undo(dbapi, batch, exc)
                if self._batch is None:
                    self._drop_read_only_writer(exc)
                if not isinstance(exc, Exception) or batch.members == 0 or batch.error is not None:
                    raise
                refused = exc  # given once the writes it may have read are durable: below
            else:
                dbapi.execute("RELEASE write")
                batch.members += 1
                if batch.members == 1:  # its COMMIT waits for the lock: writers queued before it join
                    task = asyncio.create_task(self._commit(dbapi, batch))
                    self._commits.add(task)
                    task.add_done_callback(self._commits.discard)
        if refused is not None:
            # Refused (a claim already taken, a name in use), perhaps for what an earlier write of
            # the same transaction did, which is not durable yet. The refusal stands once it is; if
            # that COMMIT fails, the refusal rested on a write that never happened ("claimed by a2"
            # of a claim then lost), and the writer hears the COMMIT's failure instead, to retry.
            try:
                await asyncio.shield(batch.committed)
            except Exception as failure:
                raise failure from refused
            raise refused
        await asyncio.shield(batch.committed)

    def _drop_read_only_writer(self, exc: BaseException) -> None:
        """SQLite refused a write because it opened the file read-only (it was not writable then):
        the connection stays so, and the idle readers too hold the file's shared memory as they
        opened it. Closed, the next write opens a new connection, which writes as soon as the file is
        writable again (chmod back, remounted), with no restart."""
        if self._writer is not None and faults.read_only(exc):
            writer, self._writer = self._writer, None
            idle, self._idle = self._idle, []
            for conn in (writer, *idle):
                conn.close()

    def _undo(self, dbapi: sqlite3.Connection, batch: _Batch, exc: BaseException) -> None:
        """A write failed: roll back its savepoint, and the transaction if it carries nothing else."""
        if not dbapi.in_transaction:
            # SQLite itself ended the transaction (a full disk, an I/O error): the writes it carried
            # are gone, and their COMMIT will say so with this error.
            batch.error = exc if isinstance(exc, Exception) else sqlite3.OperationalError("write abandoned")
            self._batch = None
            return
        dbapi.execute("ROLLBACK TO write")
        dbapi.execute("RELEASE write")
        if batch.members == 0:
            dbapi.execute("ROLLBACK")
            self._batch = None

    async def _commit(self, dbapi: sqlite3.Connection, batch: _Batch) -> None:
        async with self._lock:
            if self._batch is batch:
                self._batch = None  # writers from here on begin the next transaction
            try:
                if batch.error is not None:
                    raise batch.error
                if self.commit_s < self.INLINE_COMMIT_S:
                    self._commit_now(dbapi)
                else:
                    await asyncio.get_running_loop().run_in_executor(self._committer, self._commit_now, dbapi)
            except asyncio.CancelledError:
                batch.committed.cancel()  # the loop is going away: no write of it is acknowledged
                raise
            except Exception as exc:
                if batch.error is None and dbapi.in_transaction:
                    dbapi.execute("ROLLBACK")
                batch.committed.set_exception(exc)
                batch.committed.exception()  # retrieved: a batch whose writers were all cancelled
            else:
                self.commits += 1
                batch.committed.set_result(None)

    def _commit_now(self, dbapi: sqlite3.Connection) -> None:
        """COMMIT (on the loop or the commit thread), timed, unless the file at `path` is no longer
        the one this server opened: deleted or replaced, the writes would go to a file nobody will
        read again."""
        started = time.perf_counter()
        self._check_file()
        dbapi.execute("COMMIT")
        self.commit_s = time.perf_counter() - started

    def _open_reader(self) -> sa.Connection:
        """A new reader, on the file this server opened (another at its path is not its database)."""
        self._check_file()
        return self._engine.connect()

    def _check_file(self) -> None:
        if _identity(self.path) != self._identity:
            raise faults.DatabaseFileGone(
                f"the SQLite file {self.path} was deleted or replaced while this server had it open; "
                "nothing more is written to it: stop the server, move its -wal and -shm files aside "
                "(they belong to the file it had open, and would be replayed onto the new one), then "
                "start it again (`vibe-ensemble backup restore` restores through SQLite, with no such step)"
            )

    async def settle(self) -> None:
        """Wait for every COMMIT under way (before the connections close)."""
        while self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)

    async def _begin_immediate(self, dbapi: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, retried while another process holds the file's write lock, for at most
        BUSY_RETRY_S from when the lock was first met: the writes queued behind this one (on `_lock`)
        are held up by the same lock, and waited their turn, then 10 s more each (the k-th gave up
        after k times 10 s). Past that, each gives up at its first try until one begins."""
        delay = 0.001
        while True:
            try:
                dbapi.execute("BEGIN IMMEDIATE")
                self._locked_since = None
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                now = time.monotonic()
                if self._locked_since is None:
                    self._locked_since = now
                if now - self._locked_since > self.BUSY_RETRY_S:
                    raise
            async with self.aside():  # another process writes: a wait on the disk (`write`)
                await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    @contextlib.contextmanager
    def read(self) -> Iterator[SqliteConnection]:
        # A kept reader reads on from the file it opened, deleted or replaced at the path since: a
        # server answered every read from a file no one will write again (one stat a read).
        self._check_file()
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

    async def run_sync_write(self, fn: Callable[[sa.Connection], T]) -> T:
        """`fn` in a write transaction of its own connection, once no write is open on the writer's."""
        while True:
            async with self._lock:
                if self._batch is None:
                    return self.run_sync(fn, write=True)
                batch = self._batch
            with contextlib.suppress(Exception):
                await asyncio.shield(batch.committed)

    def run_sync(self, fn: Callable[[sa.Connection], T], *, write: bool) -> T:
        # On the file this server opened, as every reader: a new connection by path to a replaced
        # file read the replacement beside the old file's WAL (/readyz said ready on a database
        # that answered every request with an internal error, and damaged it).
        with self._open_reader() as conn:
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
