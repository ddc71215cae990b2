"""Database faults as clear answers: unreachable -> `DatabaseUnavailable`, disk full -> `StorageFull`.

`Database.read()` and `Database.write()` pass every driver error through `translate`, so the front
doors answer 503 `database_unavailable` (with Retry-After) or 507 `storage_full` instead of a 500,
and the log tells the story once: the first failure with its traceback, then one line every
`SUMMARY_EVERY_S` ("database unreachable, 412 requests refused in the last 10 s") until the
database answers again, then a recovery line.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import exc as sa_exc

from vibe_ensemble.domain.errors import DatabaseUnavailable, StorageFull

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 5.0  # what a refused client is told to wait; a restart of PostgreSQL takes about that
SUMMARY_EVERY_S = 10.0
RELAPSE_S = 300.0  # a fault of the same kind back within this of its recovery: told without its traceback

_ASYNCPG_UNREACHABLE = (
    "PostgresConnectionError",  # class 08: the connection failed or is gone
    "CannotConnectNowError",  # starting up or shutting down
    "AdminShutdownError",
    "CrashShutdownError",
    "TooManyConnectionsError",
    "InvalidCatalogNameError",  # the database is gone (dropped, renamed, a restore under way)
    "InvalidAuthorizationSpecificationError",  # the server refuses our role now (pg_hba, password)
    "ReadOnlySQLTransactionError",  # a standby after a failover: it cannot take writes
    "InternalClientError",  # a connection left mid-operation when its backend was terminated
)
# SQLSTATE 55000 is many things; the database refusing connections (ALLOW_CONNECTIONS false) is one
_NOT_ACCEPTING = "not currently accepting connections"
_SQLITE_FULL = 13
# SQLITE_BUSY (after busy_timeout), SQLITE_READONLY (the file, its directory or its file system made
# read-only), SQLITE_IOERR (the disk failing, a file system remounted read-only), SQLITE_CANTOPEN,
# SQLITE_NOTADB
_SQLITE_UNAVAILABLE = {5, 8, 10, 14, 26}
_SQLITE_READONLY = 8


def asyncpg_errors(*names: str) -> tuple[type[BaseException], ...]:
    """asyncpg's exception classes `names`; none while asyncpg is not loaded. Only a PostgreSQL
    database loads it (store/postgres.py), so on SQLite none of its errors can exist, and checking
    for them costs no import."""
    asyncpg = sys.modules.get("asyncpg")
    return () if asyncpg is None else tuple(getattr(asyncpg, name) for name in names)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or getattr(seen, "orig", None)


def root_cause(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's and our wrapping of it."""
    *_, last = _causes(exc)
    return last


def innermost(exc: BaseException) -> str:
    """The first line of the root cause of `exc` (the driver's own words: `database "x" does not
    exist`, `Connect call failed …`)."""
    root = root_cause(exc)
    said = str(root).strip().splitlines()
    if said:
        return said[0][:200]
    if isinstance(root, TimeoutError | asyncio.CancelledError):  # a wait given up: it says nothing
        return "no answer in time"
    return type(root).__name__


def permission_denied(exc: BaseException) -> bool:
    """PostgreSQL refused the role a table or a schema (SQLSTATE 42501: `permission denied for
    table …`): the role connects, but was never granted the tables another role made."""
    return any(getattr(e, "sqlstate", None) == "42501" for e in _causes(exc))


def no_rights(exc: BaseException, url: str) -> str:
    """What to do about `permission_denied`: the one line every command says."""
    return (
        f"the database role may not use the schema's tables ({innermost(exc)}) on {url}: connect as "
        "the role that ran `migrate` (it owns them), or grant this one their use "
        "(GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO it, and USAGE, SELECT "
        "ON ALL SEQUENCES)"
    )


SQLITE_CORRUPT, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 14, 26


def sqlite_code(exc: BaseException) -> int | None:
    """SQLite's primary result code for the root cause of `exc` (SQLITE_CANTOPEN, …), or None when
    that is not an error of SQLite's."""
    root = root_cause(exc)
    code = getattr(root, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(root, sqlite3.Error) and code is not None else None


def damaged(exc: BaseException) -> bool:
    """SQLite found its file damaged (a torn copy, a truncated file) or not a database at all."""
    return sqlite_code(exc) in (SQLITE_CORRUPT, SQLITE_NOTADB)


def read_only(exc: BaseException) -> bool:
    """SQLite refused a write on a connection it opened read-only (the file was not writable then):
    that connection stays so, and only a new one sees the file writable again."""
    return any(
        isinstance(e, sqlite3.Error)
        and (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF == _SQLITE_READONLY
        for e in _causes(exc)
    )


def classify(exc: BaseException) -> str | None:
    """'full', 'unavailable' or None (not a fault of the database's availability)."""
    disk_full = asyncpg_errors("DiskFullError")
    unreachable = (*asyncpg_errors(*_ASYNCPG_UNREACHABLE), ConnectionError, TimeoutError)
    not_now = asyncpg_errors("ObjectNotInPrerequisiteStateError")
    for e in _causes(exc):
        if isinstance(e, disk_full):
            return "full"
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return "full"
        if isinstance(e, sqlite3.Error):
            code = getattr(e, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == _SQLITE_FULL:
                return "full"
            if code is not None and code & 0xFF in _SQLITE_UNAVAILABLE:
                return "unavailable"
        if isinstance(e, unreachable):
            return "unavailable"
        if isinstance(e, not_now) and _NOT_ACCEPTING in str(e):
            return "unavailable"
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError | PermissionError):
            return "unavailable"  # connection refused, host unreachable, reset
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return "unavailable"
    return None


class FaultLog:
    """First failure with traceback, then a rate-limited summary, then a recovery line.

    A fault a write met ends only when a write succeeds: reads may go on while writes cannot
    (another process holding SQLite's write lock, a full disk), and /readyz asks `unwritable`.
    """

    def __init__(self) -> None:
        self.down_since: float | None = None
        self.kind = ""
        self.recovered: tuple[str, float] | None = None  # the last fault that ended: its kind, when
        self.by_write = False  # a write met this fault: only a write's success ends it
        self.refused = 0
        self.total = 0
        self.last_summary = 0.0

    def failed(self, kind: str, exc: BaseException, *, write: bool = False) -> None:
        now = time.monotonic()
        if self.down_since is None or kind != self.kind:
            self.down_since, self.kind, self.refused, self.total, self.last_summary = now, kind, 0, 0, now
            self.by_write = False
            event = "database_unreachable" if kind == "unavailable" else "database_storage_full"
            # the first line of the error, or what its type means when it says nothing (asyncpg's
            # connect timeout is a bare TimeoutError)
            silent = "no answer in time" if isinstance(exc, TimeoutError) else "no message"
            said = str(exc).splitlines() or [f"{type(exc).__name__} ({silent})"]
            last = self.recovered
            if last is not None and last[0] == kind and now - last[1] < RELAPSE_S:
                # Back soon after it ended (a small write went through a disk still full): the same
                # story going on, told in a line, without its traceback again.
                log.error(event, error=said[0][:300], again_after_s=round(now - last[1], 1))
            else:
                log.error(event, error=said[0][:300], exc_info=exc)
        self.by_write = self.by_write or write
        self.refused += 1
        self.total += 1
        if now - self.last_summary >= SUMMARY_EVERY_S:
            what = "database unreachable" if kind == "unavailable" else "database disk full"
            log.warning(
                f"{what}, {self.refused} request{'' if self.refused == 1 else 's'} refused in the last "
                f"{now - self.last_summary:.0f} s",
                down_for_s=round(now - self.down_since, 1),
            )
            self.refused, self.last_summary = 0, now

    @property
    def unreachable(self) -> bool:
        """The last request found the database unreachable (or not answering in its bound), and none
        has got through since."""
        return self.down_since is not None and self.kind == "unavailable"

    @property
    def unwritable(self) -> bool:
        """Writes cannot reach the database (unreachable or locked), and none has succeeded since."""
        return self.down_since is not None and self.kind == "unavailable" and self.by_write

    def succeeded(self, *, write: bool) -> None:
        if self.down_since is None or (not write and (self.kind == "full" or self.by_write)):
            return  # a read says nothing of a fault writes met (a full disk, another's write lock)
        log.info(
            "database_recovered",
            fault=self.kind,
            after_s=round(time.monotonic() - self.down_since, 1),
            refused=self.total,
        )
        self.down_since = None
        self.recovered = (self.kind, time.monotonic())


FAULTS = FaultLog()


class Outcome:
    """What `translate`'s block did: `wrote` is False for a write transaction that changed no row."""

    __slots__ = ("wrote",)

    def __init__(self) -> None:
        self.wrote = True


class DatabaseFileGone(ConnectionError):
    """The SQLite file was deleted or replaced while this server had it open (store/sqlite.py): an
    unreachable database (database_unavailable, nothing acknowledged) that no retry mends."""


class TransactionTimedOut(TimeoutError):
    """A PostgreSQL transaction not done within its bound (store/postgres.py): the database
    unreachable, overloaded, or a lock another session holds (a statement waiting for it looks the
    same from here). Its message is what the client is told; whether a COMMIT under way went
    through is not known."""

    def __init__(self, bound_s: float, *, committing: bool) -> None:
        outcome = (
            "it may have been carried out: look before sending it again"
            if committing
            else "nothing was changed"
        )
        super().__init__(
            f"the database did not finish this request within {bound_s:g} s (unreachable, overloaded, "
            f"or a lock another session holds); {outcome}"
        )


FILE_GONE = (
    "the server's database file was deleted or replaced while the server had it open; nothing was "
    "changed, and retrying will not help until its operator restarts it (the server's log says how)"
)


@contextmanager
def translate(*, write: bool) -> Iterator[Outcome]:
    """Turn a database fault into the domain error a client can act on; log it (rate-limited).

    A write transaction that changed no row (a duty that found nothing to do) does not end a fault
    writes met: SQLite begins and commits one on a file it cannot write, so it proves nothing.
    """
    outcome = Outcome()
    try:
        yield outcome
    except (DatabaseUnavailable, StorageFull):
        raise
    except Exception as exc:
        given_up = asyncpg_errors("DeadlockDetectedError", "SerializationError")
        if given_up and any(isinstance(e, given_up) for e in _causes(exc)):
            # PostgreSQL ended this transaction to let another go on (a deadlock, as with a restore's
            # DROP TABLE), or a restore refused it while it replaces the tables (store/backup_carry.py):
            # no fault, and the same request will very likely go through now.
            raise DatabaseUnavailable(
                1,
                "the database gave this request up to let another go on (a deadlock, or a restore "
                "replacing the data); nothing was changed: retry in 1 s",
            ) from exc
        kind = classify(exc)
        if kind is None:
            raise
        FAULTS.failed(kind, exc, write=write)
        if kind == "full":
            raise StorageFull() from exc
        if any(isinstance(e, DatabaseFileGone) for e in _causes(exc)):
            raise DatabaseUnavailable(RETRY_AFTER_S, FILE_GONE) from exc
        timed_out = next((e for e in _causes(exc) if isinstance(e, TransactionTimedOut)), None)
        if timed_out is not None:  # says how long, and what may have happened
            raise DatabaseUnavailable(RETRY_AFTER_S, f"{timed_out}: retry in {RETRY_AFTER_S:g} s") from exc
        raise DatabaseUnavailable(RETRY_AFTER_S) from exc
    else:
        FAULTS.succeeded(write=write and outcome.wrote)
