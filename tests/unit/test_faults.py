"""Which database errors are faults of availability, the log they leave, and the credential fallback."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from structlog.testing import capture_logs

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import TokenRole
from vibe_ensemble.domain.errors import DatabaseUnavailable, NotFound, StorageFull
from vibe_ensemble.services.tokens import RecentCredentials
from vibe_ensemble.store import faults


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    err = sqlite3.OperationalError(message)
    err.sqlite_errorcode = code  # type: ignore[attr-defined]
    return err


def _wrapped(orig: BaseException) -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_wrapped(_sqlite_error(13, "database or disk is full")), "full"),
        (_wrapped(_sqlite_error(14, "unable to open database file")), "unavailable"),
        (_wrapped(_sqlite_error(5, "database is locked")), "unavailable"),
        (_wrapped(_sqlite_error(19, "UNIQUE constraint failed")), None),
        (asyncpg.DiskFullError("no space"), "full"),
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (ConnectionRefusedError(111, "Connect call failed"), "unavailable"),
        (asyncpg.CannotConnectNowError("the database system is starting up"), "unavailable"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), "unavailable"),
        (TimeoutError(), "unavailable"),
        (
            asyncpg.ObjectNotInPrerequisiteStateError('database "d" is not currently accepting connections'),
            "unavailable",
        ),
        (asyncpg.ObjectNotInPrerequisiteStateError("currval of sequence is not yet defined"), None),
        (asyncpg.InvalidCatalogNameError('database "d" does not exist'), "unavailable"),
        (asyncpg.InvalidPasswordError("password authentication failed"), "unavailable"),
        (
            asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
            "unavailable",
        ),
        (
            asyncpg.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
            "unavailable",
        ),
        (asyncpg.UniqueViolationError("duplicate key"), None),
        (PermissionError(errno.EACCES, "denied"), None),
        (ValueError("not a database fault"), None),
    ],
)
def test_classify(error: BaseException, kind: str | None) -> None:
    assert faults.classify(error) == kind


def test_translate_gives_domain_errors_and_leaves_others_alone() -> None:
    faults.FAULTS = faults.FaultLog()
    with pytest.raises(DatabaseUnavailable) as down, faults.translate(write=False):
        raise ConnectionRefusedError(111, "refused")
    assert down.value.http_status == 503 and down.value.retry_after == faults.RETRY_AFTER_S
    assert "retry in 5 s" in down.value.message
    with pytest.raises(StorageFull), faults.translate(write=True):
        raise _wrapped(_sqlite_error(13, "database or disk is full"))
    with pytest.raises(NotFound), faults.translate(write=True):
        raise NotFound("no such issue")


def test_a_deadlock_postgresql_broke_is_a_retry_not_an_internal_error_nor_an_outage() -> None:
    """A request PostgreSQL gave up to break a deadlock (a restore's DROP TABLE beside a write) got
    `[internal] internal server error`; it is told to retry, and no outage is recorded."""
    faults.FAULTS = faults.FaultLog()
    for given_up in (asyncpg.DeadlockDetectedError("deadlock detected"), asyncpg.SerializationError("x")):
        with pytest.raises(DatabaseUnavailable) as retry, faults.translate(write=True):
            raise _wrapped(given_up)
        assert retry.value.retry_after == 1 and "deadlock" in retry.value.message
        assert retry.value.message.endswith("nothing was changed: retry in 1 s")
    assert faults.FAULTS.down_since is None


def test_one_traceback_then_summaries_then_a_recovery_line(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(faults.time, "monotonic", lambda: clock[0])
    log = faults.FaultLog()
    with capture_logs() as logs:
        for _ in range(300):  # 30 s of refusals, ten a second
            log.failed("unavailable", ConnectionRefusedError(111, "refused"))
            clock[0] += 0.1
        log.succeeded(write=False)
    events = [e["event"] for e in logs]
    assert events[0] == "database_unreachable" and "exc_info" in logs[0]
    summaries = [e for e in events if e.startswith("database unreachable,")]
    assert len(summaries) == 2 and "requests refused in the last 10 s" in summaries[0]
    assert sum("exc_info" in e for e in logs) == 1
    assert events[-1] == "database_recovered" and logs[-1]["refused"] == 300


def test_a_full_disk_recovers_only_on_a_write() -> None:
    log = faults.FaultLog()
    log.failed("full", OSError(errno.ENOSPC, "full"))
    log.succeeded(write=False)
    assert log.down_since is not None
    log.succeeded(write=True)
    assert log.down_since is None


def test_a_full_disk_back_soon_after_a_small_write_went_through_is_told_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a disk still full, a small write now and then goes through (a page SQLite had free): the
    story goes on in a line each time, not a traceback per relapse; a fault long after is a new one."""
    clock = [1000.0]
    monkeypatch.setattr(faults.time, "monotonic", lambda: clock[0])
    log = faults.FaultLog()
    full = OSError(errno.ENOSPC, "No space left on device")
    with capture_logs() as logs:
        log.failed("full", full, write=True)
        clock[0] += 0.6
        log.succeeded(write=True)  # a background write found room
        clock[0] += 2.5
        log.failed("full", full, write=True)
        clock[0] += 7.5
        log.succeeded(write=True)
        clock[0] += faults.RELAPSE_S + 1
        log.failed("full", full, write=True)
    told = [(e["event"], "exc_info" in e, e.get("again_after_s")) for e in logs]
    assert told == [
        ("database_storage_full", True, None),
        ("database_recovered", False, None),
        ("database_storage_full", False, 2.5),
        ("database_recovered", False, None),
        ("database_storage_full", True, None),
    ]


def test_a_fault_a_write_met_ends_only_on_a_write() -> None:
    log = faults.FaultLog()
    log.failed("unavailable", _wrapped(_sqlite_error(5, "database is locked")), write=True)
    assert log.unwritable
    log.failed("unavailable", ConnectionRefusedError(111, "refused"))  # a read refused too: still one fault
    log.succeeded(write=False)  # reads work beside another process's write lock
    assert log.unwritable and log.down_since is not None
    log.succeeded(write=True)
    assert not log.unwritable and log.down_since is None
    log.failed("unavailable", ConnectionRefusedError(111, "refused"))  # only reads met this one
    assert not log.unwritable
    log.succeeded(write=False)
    assert log.down_since is None


def test_recent_credentials_are_bounded_expire_and_forget_revoked() -> None:
    now = datetime.now(UTC)
    recent = RecentCredentials(ttl_s=60, max_entries=2)
    ann = Caller(credential_id=1, role=TokenRole.WORKER)
    bob = Caller(credential_id=2, role=TokenRole.WORKER)
    recent.remember("a", ann, None)
    recent.remember("b", bob, now + timedelta(seconds=5))
    assert recent.recall("a", now) == ann
    assert recent.recall("b", now + timedelta(seconds=6)) is None  # expired meanwhile
    recent.remember("b", bob, None)
    recent.remember("c", ann, None)  # over the bound: the least recently verified goes
    assert recent.recall("a", now) is None
    recent.forget(1)
    assert recent.recall("c", now) is None and recent.recall("b", now) == bob
    stale = RecentCredentials(ttl_s=-1)
    stale.remember("a", ann, None)
    assert stale.recall("a", now) is None


def test_an_error_that_says_nothing_is_logged_by_its_type() -> None:
    """asyncpg's connect timeout is a TimeoutError with no message: the outage's first line names it
    (it raised IndexError inside the logger, and the outage went unlogged)."""
    log = faults.FaultLog()
    with capture_logs() as logs:
        log.failed("unavailable", TimeoutError())
    assert [(e["event"], e["error"]) for e in logs] == [
        ("database_unreachable", "TimeoutError (no answer in time)")
    ]


def test_a_wait_given_up_is_named_as_such_not_as_cancelled_error() -> None:
    """doctor on a PostgreSQL that accepts connections and never answers said `unreachable:
    CancelledError`."""
    try:
        try:
            raise asyncio.CancelledError()
        except asyncio.CancelledError as cancelled:
            raise TimeoutError() from cancelled
    except TimeoutError as exc:
        assert faults.innermost(exc) == "no answer in time"
    assert (
        faults.innermost(ConnectionRefusedError(111, "Connection refused"))
        == "[Errno 111] Connection refused"
    )


def test_a_nul_postgresql_refused_is_invalid_input_saying_so() -> None:
    """The net under the doors' checks: PostgreSQL's "invalid byte sequence … 0x00" (SQLSTATE
    22021) read as a number or date out of range."""
    import asyncpg

    from vibe_ensemble.domain.errors import InvalidInput
    from vibe_ensemble.store.database import _out_of_range_is_invalid_input

    refused = asyncpg.exceptions.CharacterNotInRepertoireError(
        'invalid byte sequence for encoding "UTF8": 0x00'
    )
    with pytest.raises(InvalidInput) as caught, _out_of_range_is_invalid_input():
        raise refused
    assert (caught.value.field, caught.value.rule) == ("request", "text must not contain NUL characters")
