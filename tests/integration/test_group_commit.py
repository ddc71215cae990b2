"""SQLite group commit (store/sqlite.py): concurrent writes share a COMMIT, each write is acknowledged
only once its COMMIT is done, a failed write leaves the others of its COMMIT alone, and a COMMIT that
cannot happen fails every write it carried."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.errors import DatabaseUnavailable, StorageFull
from vibe_ensemble.store import faults
from vibe_ensemble.store.database import Database


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    await database.run_sync(lambda c: c.exec_driver_sql("CREATE TABLE t (v TEXT NOT NULL)"), write=True)
    yield database  # type: ignore[misc]
    await database.dispose()


async def _rows(db: Database) -> list[str]:
    async with db.read() as conn:
        return [r.v for r in await conn.execute(sa.text("SELECT v FROM t ORDER BY v"))]


async def _insert(db: Database, value: str, *, fail: bool = False) -> None:
    async with db.write() as conn:
        await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": value})
        if fail:
            raise ValueError(f"{value} changed its mind")


async def test_concurrent_writes_share_commits_and_are_all_durable(db: Database) -> None:
    engine = db._sqlite
    before = engine.commits
    await asyncio.gather(*(_insert(db, f"w{i:02}") for i in range(40)))
    assert await _rows(db) == [f"w{i:02}" for i in range(40)]
    # 40 writes ready at once: the first COMMIT carries the first, the next one all that queued
    # behind it (a COMMIT each would be 40).
    assert 1 <= engine.commits - before <= 3
    assert not engine.busy


async def test_a_write_is_acknowledged_only_after_its_commit(db: Database) -> None:
    done = asyncio.create_task(_insert(db, "a"))
    await asyncio.sleep(0)  # the write runs its statements and waits for the COMMIT on its thread
    assert not done.done()
    await done
    assert await _rows(db) == ["a"]  # another connection sees it once acknowledged


async def test_a_failed_write_leaves_the_others_of_its_commit_alone(db: Database) -> None:
    results = await asyncio.gather(
        _insert(db, "a"), _insert(db, "b", fail=True), _insert(db, "c"), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ValueError)
    assert await _rows(db) == ["a", "c"]
    await _insert(db, "d")  # and the writer goes on
    assert await _rows(db) == ["a", "c", "d"]


async def test_a_refusal_that_rests_on_a_write_not_yet_durable_waits_for_its_commit(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two agents claim one row in one transaction: the second is refused for what the first wrote.
    Told so before that write was durable, it heard "taken" of a claim the failed COMMIT then lost
    (a full disk, a crash): no winner, and a loser told there was one. It hears the COMMIT's failure."""

    async def claim(value: str) -> None:
        async with db.write() as conn:
            taken = (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar_one()
            if taken:
                raise ValueError(f"{value}: already taken")
            await conn.execute(sa.text("INSERT INTO t (v) VALUES (:v)"), {"v": value})

    def full(_dbapi: sqlite3.Connection) -> None:
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as the driver sets it
        raise error

    engine = db._sqlite
    assert engine is not None
    monkeypatch.setattr(engine, "_commit_now", full)
    first, second = await asyncio.gather(claim("a"), claim("b"), return_exceptions=True)
    assert isinstance(first, StorageFull)
    assert isinstance(second, StorageFull), second  # not "already taken"
    assert isinstance(second.__cause__.__cause__, ValueError)  # the refusal is kept as the cause
    monkeypatch.undo()
    assert await _rows(db) == []

    # With a COMMIT that works, the refusal is given as it was, once the winner's write is durable.
    first, second = await asyncio.gather(claim("a"), claim("b"), return_exceptions=True)
    assert first is None and isinstance(second, ValueError) and str(second) == "b: already taken"
    assert await _rows(db) == ["a"]


async def test_when_sqlite_ends_the_transaction_every_write_it_carried_fails(db: Database) -> None:
    async def ended_by_sqlite() -> None:
        async with db.write() as conn:
            await conn.execute(sa.text("INSERT INTO t (v) VALUES ('b')"))
            await conn.execute(sa.text("ROLLBACK"))  # as SQLite does on a full disk
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as the driver sets it
            raise full

    results = await asyncio.gather(
        _insert(db, "a"), ended_by_sqlite(), _insert(db, "c"), return_exceptions=True
    )
    # "a" was released into the transaction SQLite ended: it is refused, never acknowledged.
    assert isinstance(results[0], StorageFull) and isinstance(results[1], StorageFull)
    assert results[2] is None  # "c" ran in the next transaction
    assert await _rows(db) == ["c"]


async def test_a_command_waits_for_the_open_commit(db: Database) -> None:
    writes = [asyncio.create_task(_insert(db, f"w{i}")) for i in range(5)]
    await asyncio.sleep(0)
    count = await db.run_sync(lambda c: c.exec_driver_sql("SELECT count(*) FROM t").scalar_one(), write=True)
    assert count == 5  # its own connection's transaction began after theirs committed
    await asyncio.gather(*writes)


async def test_a_commit_runs_on_the_loop_while_commits_are_fast_and_on_its_thread_after_a_slow_one(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db._sqlite
    where: list[str] = []
    commit_now = engine._commit_now

    def recorded(dbapi: sqlite3.Connection) -> None:
        where.append(threading.current_thread().name)
        commit_now(dbapi)

    monkeypatch.setattr(engine, "_commit_now", recorded)
    monkeypatch.setattr(engine, "commit_s", float("inf"))  # as when the server starts: not known fast
    monkeypatch.setattr(type(engine), "INLINE_COMMIT_S", 60.0)  # every COMMIT counts as fast
    await _insert(db, "a")
    await _insert(db, "b")
    monkeypatch.setattr(type(engine), "INLINE_COMMIT_S", 0.0)  # every COMMIT counts as slow
    await _insert(db, "c")
    loop, thread = threading.current_thread().name, "sqlite-commit_0"
    # The first on the thread (how fast COMMITs are is not known yet), the next on the loop (the
    # one before was fast), the last on the thread again (the one before was slow).
    assert where == [thread, loop, thread]
    assert await _rows(db) == ["a", "b", "c"]


async def test_the_loop_keeps_serving_while_a_slow_commit_is_on_its_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db._sqlite
    on_disk = threading.Event()
    commit_now = engine._commit_now

    def slow(dbapi: sqlite3.Connection) -> None:
        assert on_disk.wait(10), "the COMMIT was never let through"
        commit_now(dbapi)

    monkeypatch.setattr(engine, "_commit_now", slow)
    monkeypatch.setattr(engine, "commit_s", 5.0)  # the last one was slow: this one goes to the thread
    write = asyncio.create_task(_insert(db, "a"))
    while not engine.busy or engine._batch is not None:  # until its COMMIT has started
        await asyncio.sleep(0)
    assert await _rows(db) == []  # a read is served meanwhile (it sees nothing uncommitted)
    assert not write.done()
    on_disk.set()
    await write
    assert await _rows(db) == ["a"]


async def test_every_connection_keeps_its_scratch_space_in_memory(db: Database) -> None:
    """temp_store=MEMORY (store/sqlite.py): an INSERT … RETURNING makes no temporary file, on the
    writer or a reader; the WAL and synchronous settings that keep commits durable are unchanged."""
    async with db.write() as conn:
        written = [tuple(r) for r in await conn.execute(sa.text("PRAGMA temp_store"))]
        returned = await conn.execute(sa.text("INSERT INTO t (v) VALUES ('r') RETURNING v"))
        assert [r.v for r in returned] == ["r"]
    async with db.read() as conn:
        read = [tuple(r) for r in await conn.execute(sa.text("PRAGMA temp_store"))]
        mode = (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar_one()
        synchronous = (await conn.execute(sa.text("PRAGMA synchronous"))).scalar_one()
    assert written == read == [(2,)]  # 2: MEMORY
    assert (mode, synchronous) == ("wal", 2)  # 2: FULL


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_deleted_or_replaced_file_acknowledges_no_write(
    db: Database, tmp_path: Path, how: str
) -> None:
    """Deleted (or replaced) under a running server, the SQLite file still open would take writes
    nobody will ever read: they are refused (database_unavailable), never acknowledged, and no
    reader makes an empty database where the file was."""
    await _insert(db, "before")
    assert await _rows(db) == ["before"]  # a reader is kept for the next read
    path = tmp_path / "g.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if how == "replaced":
        path.write_bytes(b"")  # another file at the same path
    with pytest.raises(DatabaseUnavailable) as refused:
        await _insert(db, "after")
    assert "was deleted or replaced while this server had it open" in str(refused.value.__cause__)
    # the client is told no retry helps (it was told "retry in 5 s")
    assert "retrying will not help until its operator restarts it" in refused.value.message
    with pytest.raises(DatabaseUnavailable):  # a reader kept from before reads no more either
        await _rows(db)
    db._sqlite._idle.clear()  # a reader opened now, not one kept from before
    with pytest.raises(DatabaseUnavailable):
        await _rows(db)
    # Nor a command's own connection (what /readyz reads the schema's revision on): it opened the
    # file at the path, a replacement beside the old WAL, and /readyz said ready.
    with pytest.raises(Exception, match="was deleted or replaced while this server had it open"):
        await db.run_sync(lambda c: c.exec_driver_sql("SELECT count(*) FROM t").scalar_one())
    assert path.exists() == (how == "replaced") and not Path(f"{path}-wal").exists()


async def test_a_write_that_changes_nothing_does_not_end_a_fault_writes_met(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite begins and commits a transaction that changes nothing even on a file it cannot write
    (a duty with nothing to do): only a write that changed a row says writes work again (/readyz)."""
    log = faults.FaultLog()
    monkeypatch.setattr(faults, "FAULTS", log)
    log.failed("unavailable", sqlite3.OperationalError("attempt to write a readonly database"), write=True)
    async with db.write() as conn:
        await conn.execute(sa.text("UPDATE t SET v = 'x' WHERE v = 'nothing'"))
    assert log.unwritable
    await _insert(db, "a")
    assert not log.unwritable
