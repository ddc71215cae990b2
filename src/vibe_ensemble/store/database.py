"""Connections to SQLite or PostgreSQL, with one explicit way to read and to write.

SQLite (the stdlib driver, used on the event-loop thread, store/sqlite.py): WAL, one
writer connection guarded by a lock, each write transaction a savepoint of a `BEGIN IMMEDIATE`
transaction whose COMMIT (on the loop while COMMITs are fast, else on one dedicated thread) the
writes that ran meanwhile share, and a few read connections beside it. One process
owns a SQLite file (`OwnerLock`); a second one refuses to start on it.

PostgreSQL (asyncpg, store/postgres.py, imported only for a PostgreSQL URL): a pool of our own
over SQLAlchemy's connections in AUTOCOMMIT, each transaction begun and ended by asyncpg itself,
so `Prepared` statements run on asyncpg directly beside the ones SQLAlchemy executes;
an event is given its id inside its transaction's COMMIT, by a deferred trigger holding a
transaction-level advisory lock (`store.events.append`), so event ids become visible in id order.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, CursorResult, Dialect, Result, make_url
from sqlalchemy.sql.base import Executable

from vibe_ensemble.domain.errors import InvalidInput
from vibe_ensemble.store import faults, traced
from vibe_ensemble.store.prepared import Params, Prepared
from vibe_ensemble.store.sqlite import SqliteEngine, create_private, private_dirs

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer
    from sqlalchemy.ext.asyncio import AsyncEngine

    from vibe_ensemble.store.postgres import PostgresEngine


@contextmanager
def _out_of_range_is_invalid_input() -> Iterator[None]:
    """A value the database cannot hold (an id past 64 bits, a lone surrogate) is bad input.

    The doors bound ids and numbers where they declare them; this is the net under those bounds,
    so no such value ever becomes a 500.
    """
    try:
        yield
    except Exception as exc:
        data_error = faults.asyncpg_errors("DataError")
        if not isinstance(exc, (OverflowError, UnicodeEncodeError, sa_exc.DBAPIError, *data_error)):
            raise
        causes = list(_causes(exc))
        if any(isinstance(e, UnicodeEncodeError) for e in causes):
            raise InvalidInput("request", "text must be valid Unicode (no lone surrogates)") from exc
        # PostgreSQL's text holds no NUL (SQLSTATE 22021): a field the doors did not check for one
        if any(getattr(e, "sqlstate", None) == "22021" for e in causes):
            raise InvalidInput("request", "text must not contain NUL characters") from exc
        # SQLite raises OverflowError; asyncpg a DataError ("value out of int64 range").
        if any(isinstance(e, (OverflowError, sa_exc.DataError, *data_error)) for e in causes):
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


URL_EXAMPLES = "sqlite:///path/to/vibe.db or postgresql://user:password@host:5432/dbname"


def parse_url(url: str) -> URL:
    """The URL with an async driver, or a DatabaseError saying what is wrong and what a valid one is."""
    try:
        parsed = make_url(normalise_url(url))
    except (sa_exc.ArgumentError, ValueError):
        scheme = url.split("://", 1)[0] if "://" in url else ""
        shown = f" (it starts {scheme + '://'!r})" if scheme and scheme.isascii() and len(scheme) < 40 else ""
        # a file path where a URL belongs: the URL that names that file
        hint = "" if "://" in url else f" (for a SQLite file: sqlite:///{Path(url).expanduser().resolve()})"
        raise DatabaseError(
            f"cannot parse the database URL{shown}: a valid one looks like {URL_EXAMPLES}{hint}"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise DatabaseError(f"unsupported database {backend!r}: use SQLite or PostgreSQL: {URL_EXAMPLES}")
    return parsed


def sqlite_path(url: URL) -> Path | None:
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise DatabaseError("an in-memory SQLite database cannot be shared; give a file path")
    return Path(url.database)


class Connection(Protocol):
    """What repositories use of a connection: the dialect and `await conn.execute(statement)`.

    The same on both backends, so a repository never knows which one it runs on.
    """

    @property
    def dialect(self) -> Dialect: ...

    @overload
    async def execute(self, statement: Prepared, parameters: Params = None) -> Result[Any]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Params = None) -> CursorResult[Any]: ...


class Database:
    def __init__(self, url: str, *, pool_size: int = 20, sqlite_synchronous: str = "FULL") -> None:
        """`pool_size`: the PostgreSQL connections this process may open. What reads the settings
        passes `settings.db_pool_size`; the default here is that setting's, for a bare `Database`."""
        self.url: URL = parse_url(url)
        self.dialect = self.url.get_backend_name()
        # Tracing on (ops/tracing.py, set by the app): each transaction and statement is a span.
        self.tracer: Tracer | None = None
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise DatabaseError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
        self.path: Path | None = None
        if self.dialect == "sqlite":
            self.path = sqlite_path(self.url)
            assert self.path is not None
            create_private(self.path)
            self._sqlite = SqliteEngine(self.url, self.path, synchronous=sqlite_synchronous)
        else:
            # Here, not at the top: asyncpg and SQLAlchemy's asyncio layer are PostgreSQL's alone.
            from vibe_ensemble.store.postgres import TRANSACTION_TIMEOUT_S, PostgresEngine

            self._postgres: PostgresEngine = PostgresEngine(self.url, pool_size=pool_size)
            # a request's read or write on PostgreSQL, bounded (a network cut answers nothing)
            self.transaction_timeout_s: float | None = TRANSACTION_TIMEOUT_S
            self.engine: AsyncEngine = self._postgres.engine

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def writes_aside(self, aside: Callable[[], AbstractAsyncContextManager[object]]) -> None:
        """SQLite: run each write transaction that will wait on the disk (the writer taken, COMMITs
        slow), whole, inside `aside()`: the app steps out of its gate meanwhile. PostgreSQL: nothing."""
        if self.is_sqlite:
            self._sqlite.aside = aside

    def on_new_connection(self, callback: Callable[[], None] | None) -> None:
        """PostgreSQL: call `callback` whenever the pool makes a new connection (the database
        answers now, after an outage for one). SQLite: nothing."""
        if not self.is_sqlite:
            self._postgres.on_connect = callback

    def write(self, *, one_statement: bool = False) -> AbstractAsyncContextManager[Connection]:
        """A write transaction: committed when the block ends, rolled back on error.

        `one_statement`: the block runs a single writing statement (reads before it are fine). On
        PostgreSQL it then runs without BEGIN and COMMIT, and commits by itself as it ends (one round
        trip, not three); on SQLite it is an ordinary write, whose BEGIN and COMMIT cost no trip."""
        if self.tracer is None:  # tracing off: nothing more than this check (store/traced.py)
            return self._write(one_statement)
        return traced.transaction(self.tracer, "write", self.dialect, self._write(one_statement))

    def read(self, *, bound_s: float | None = None) -> AbstractAsyncContextManager[Connection]:
        """A read: on SQLite one snapshot (a read transaction). On PostgreSQL each statement reads
        what is committed when it runs, as it would in a transaction at PostgreSQL's READ COMMITTED,
        without the BEGIN and COMMIT round trips that would add nothing; bounded like a request's
        transaction, or by `bound_s` when given."""
        if self.tracer is None:
            return self._read(bound_s)
        return traced.transaction(self.tracer, "read", self.dialect, self._read(bound_s))

    @asynccontextmanager
    async def _write(self, one_statement: bool = False) -> AsyncIterator[Connection]:
        with faults.translate(write=True) as outcome, _out_of_range_is_invalid_input():
            if self.is_sqlite:
                async with self._sqlite.write() as conn:
                    before = conn.total_changes
                    yield conn
                    outcome.wrote = conn.total_changes != before
            else:
                connect = self._postgres.connect
                bound = self.transaction_timeout_s
                async with connect(transaction=not one_statement, writes=True, bound_s=bound) as conn:
                    yield conn

    @asynccontextmanager
    async def _read(self, bound_s: float | None = None) -> AsyncIterator[Connection]:
        with faults.translate(write=False), _out_of_range_is_invalid_input():
            if self.is_sqlite:
                with self._sqlite.read() as conn:
                    yield conn
            else:
                bound = bound_s or self.transaction_timeout_s
                async with self._postgres.connect(transaction=False, bound_s=bound) as conn:
                    yield conn

    async def probe_write(self) -> None:
        """A write that changes nothing: whether a write can go through now (/readyz). An empty
        transaction would not tell: SQLite begins and commits one on a read-only file, and
        PostgreSQL on a read-only standby."""
        async with self.write() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))

    async def run_sync(
        self, fn: Callable[[sa.Connection], T], *, write: bool = False, bound_s: float | None = None
    ) -> T:
        """Run `fn` with a plain SQLAlchemy connection in one transaction (migrations, inspection).
        On PostgreSQL a read is bounded, by `bound_s` or like a request's transaction (a cut network
        must not hold it and its connection for minutes); a write (a migration) is not."""
        if not self.is_sqlite:
            bound = None if write else bound_s or self.transaction_timeout_s
            return await self._postgres.run_sync(fn, bound_s=bound)
        if not write:
            return self._sqlite.run_sync(fn, write=False)
        return await self._sqlite.run_sync_write(fn)

    async def dispose(self) -> None:
        if self.is_sqlite:
            await self._sqlite.settle()
            self._sqlite.close()
        else:
            await self._postgres.dispose()

    def pool_status(self) -> tuple[str, int, int]:
        """(pool, size, in use) for /metrics: PostgreSQL's connection pool (the connections it may
        open, and those taken from it now); on SQLite the one writer (reads open their own
        connections)."""
        if self.is_sqlite:
            return "sqlite_writer", 1, int(self._sqlite.busy)
        return "postgresql", self._postgres.limit, self._postgres.in_use()

    def safe_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def asyncpg_dsn(self) -> str:
        """PostgreSQL: a DSN for a raw asyncpg connection beside the pool (LISTEN, the duties lock)."""
        return self.url.set(drivername="postgresql").render_as_string(hide_password=False)


# What may own a SQLite file (`Owner.process`), as a message names it.
OWNER_PROCESSES = {
    "serve": "`vibe-ensemble serve`",
    "mcp": "`vibe-ensemble mcp` on stdio",
    "restore": "`vibe-ensemble backup restore`",
    "migrate": "`vibe-ensemble migrate`",
}
_ONE_OFF = ("restore", "migrate")  # processes that end by themselves and serve nobody
_PID = re.compile(r"[1-9][0-9]{0,9}")
_URL = re.compile(r"https?://[!-~]{1,2040}")  # printable ASCII, no space: a URL as a person pastes it
_LOCK_READ = 4096  # more than a lock file holds: a pid, a process, a URL


def _url_word(value: str) -> bool:
    """Whether `value` is an http(s) URL with a host that one word of the lock file can hold."""
    if not _URL.fullmatch(value):
        return False
    try:
        return bool(urlsplit(value).hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return False


@dataclass(frozen=True)
class Owner:
    """The process that owns a SQLite file, as its lock file (`<db>.lock`) records it.

    The file is one line: the pid, then `key=value` words: `mcp_url=…`, the MCP URL a client on this
    machine reaches a server at, and `process=` `serve`, `mcp` (stdio), `restore` or `migrate`.
    Releases before these words wrote the pid alone: such an owner is read with its process and
    address unknown. A reader takes what it can check and skips the rest (a word of a later
    release, anything garbled), and an older release shows the whole line as "the pid", the URL
    readable in it.
    """

    pid: int | None = None
    process: str | None = None
    mcp_url: str | None = None

    def line(self) -> str:
        words = [str(self.pid)] if self.pid is not None else []
        # The URL first: an older release shows only the first 64 bytes. One that would not read back
        # as one word (a space in VIBE_PUBLIC_URL) is left out: the owner's address is then unknown.
        if self.mcp_url is not None and _url_word(self.mcp_url):
            words.append(f"mcp_url={self.mcp_url}")
        if self.process is not None:
            words.append(f"process={self.process}")
        return " ".join(words) + "\n"

    @classmethod
    def parse(cls, text: str) -> Owner:
        words = text.split()
        pid = int(words[0]) if words and _PID.fullmatch(words[0]) and int(words[0]) < 2**31 else None
        process = mcp_url = None
        for word in words:
            key, _, value = word.partition("=")
            if key == "process" and value in OWNER_PROCESSES:
                process = value
            elif key == "mcp_url" and _url_word(value):
                mcp_url = value
        return cls(pid, process, mcp_url)

    @property
    def noun(self) -> str:
        """What the owner is to a person: a server, or (a restore) a process."""
        return "process" if self.process in _ONE_OFF else "server"

    def describe(self) -> str:
        """The owner in parentheses: its pid, what it is and where it answers, or what is not known."""
        if self.pid is None and self.process is None and self.mcp_url is None:
            return "(its pid and address are not recorded)"
        who = f"pid {self.pid}" if self.pid is not None else "its pid is not recorded"
        if self.mcp_url is not None:
            where: str | None = f"MCP at {self.mcp_url}"
        elif self.process == "mcp":
            where = "which has no URL"
        elif self.process in _ONE_OFF:
            where = None
        else:
            where = "its address is not recorded"
        if self.process is None:
            return f"({who}; {where})"
        what = OWNER_PROCESSES[self.process]
        return f"({who}: {what}, {where})" if where else f"({who}: {what})"


class DatabaseInUse(DatabaseError):
    """Another process owns this SQLite file (`OwnerLock`); `owner` is what its lock file records
    (None when the file was reached under another path, whose lock file is beside that path)."""

    def __init__(self, message: str, owner: Owner | None = None) -> None:
        super().__init__(message)
        self.owner = owner


class OwnerLock:
    """An exclusive lock on `<db>.lock`, and on the database file itself: one server process owns a
    SQLite file. The first says who the owner is (`Owner`: its pid, and a server's MCP URL); the
    second is held on the file, not its name, so a second server reaching the same file under another
    path (a hard link) is refused too. (SQLite locks with fcntl's record locks, which Linux keeps
    apart from these `flock` locks.)"""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None
        self._db_fd: int | None = None

    def acquire(self, owner: Owner | None = None) -> None:
        """Own the file, recording this pid and `owner`'s process and MCP URL (none: the pid alone)."""
        private_dirs(self.path.parent)  # missing directories 0700, like the database's own
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = Owner.parse(os.read(fd, _LOCK_READ).decode(errors="replace"))
            os.close(fd)
            raise DatabaseInUse(
                f"{self.path.with_suffix('')} is already in use by another Vibe Ensemble {holder.noun} "
                f"{holder.describe()}. One server owns a SQLite file: stop the other one, point this one "
                "at another --database-url, or use PostgreSQL to run several replicas.",
                holder,
            ) from None
        try:
            self._db_fd = self._lock_file_itself()
        except DatabaseInUse:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, dataclasses.replace(owner or Owner(), pid=os.getpid()).line().encode())
        self._fd = fd

    def _lock_file_itself(self) -> int | None:
        """The database file's own lock (None while there is no file yet: a restore's new target)."""
        try:
            fd = os.open(self.db_path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DatabaseInUse(
                f"{self.db_path} is already in use by another Vibe Ensemble server, which reaches the "
                "same file under another path (a hard link): its pid and address are recorded in the "
                "lock file beside that path, not here. One server owns a SQLite file: stop the other "
                "one, or use PostgreSQL to run several replicas."
            ) from None
        return fd

    def release(self) -> None:
        if self._db_fd is not None:
            fcntl.flock(self._db_fd, fcntl.LOCK_UN)
            os.close(self._db_fd)
            self._db_fd = None
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # a lock file left behind names no owner that has gone
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
