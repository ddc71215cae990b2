"""Backups on both backends: taken while writes go on, verified by restoring, restored with a safety net."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import AgentRole, TokenRole
from vibe_ensemble.domain.errors import Unauthenticated, VibeError
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store import backup_carry, backup_postgres, migrate
from vibe_ensemble.store.backup import Backups
from vibe_ensemble.store.backup_manifest import Manifest
from vibe_ensemble.store.backup_storage import BackupError, DirectoryStorage
from vibe_ensemble.store.backup_target import Target
from vibe_ensemble.store.database import Database
from vibe_ensemble.store.tables import audit_log, credentials, events

from ..conftest import give_back_postgres_database, make_settings, take_postgres_database


def _backups(database_url: str, tmp_path: Path) -> Backups:
    """Backups as the CLI makes them: pg_dump from VIBE_PG_BIN_DIR when set (tests/postgres.py sets it
    to the embedded server's own tools), else from PATH."""
    tools = os.environ.get("VIBE_PG_BIN_DIR")
    return Backups(
        database_url, DirectoryStorage(tmp_path / "backups"), pg_bin_dir=Path(tools) if tools else None
    )


async def _made(database_url: str, tmp_path: Path, labels: list[str]) -> tuple[Backups, list[Manifest]]:
    """A migrated, empty database and one backup of it per label, oldest first."""
    rt = Runtime(make_settings(database_url, tmp_path))
    await rt.start(apply_migrations=True)
    await rt.stop()
    backups = _backups(database_url, tmp_path)
    return backups, [await backups.create(label) for label in labels]


async def _seed(services: Services, issues: int = 5, messages: int = 5) -> None:
    for name in ("ann", "bob"):
        await services.agents.register(SYSTEM, name=name, role=AgentRole.WORKER, project="default")
    for i in range(issues):
        await services.issues.create(SYSTEM, title=f"issue {i}", project="default", agent="ann")
    for i in range(messages):
        await services.messages.send(
            SYSTEM, to=["bob"], subject=f"s{i}", body="hello", project="default", agent="ann"
        )


async def _count(url: str, table: str) -> int:
    target = Target(url)
    if target.backend == "sqlite":
        assert target.path is not None
        with sqlite3.connect(target.path) as conn:
            return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    conn = await asyncpg.connect(target.dsn())
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def _kept(url: str, credential_id: int) -> tuple[Any, list[str], Any]:
    """What a restore must keep from the database it replaced, as the restored one holds it: the
    credential's revocation time, the audit log's actions (oldest first) and the newest event."""
    db = Database(url)
    try:
        async with db.read() as conn:
            revoked = (
                await conn.execute(
                    sa.select(credentials.c.revoked_at).where(credentials.c.id == credential_id)
                )
            ).scalar_one()
            actions = (
                (await conn.execute(sa.select(audit_log.c.action).order_by(audit_log.c.id))).scalars().all()
            )
            last = (await conn.execute(sa.select(events).order_by(events.c.id.desc()).limit(1))).one()
    finally:
        await db.dispose()
    return revoked, list(actions), last


@pytest.fixture
async def other_url(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A second, empty database on the same backend, to restore into."""
    if database_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
        return
    url = await take_postgres_database()
    try:
        yield url
    finally:
        await give_back_postgres_database(url)


async def test_a_backup_taken_under_writes_verifies_and_restores(
    runtime: Runtime, database_url: str, other_url: str, tmp_path: Path
) -> None:
    await _seed(runtime.services)
    backups = _backups(database_url, tmp_path)

    async def keep_writing() -> int:
        sent = 0
        while True:
            await runtime.services.messages.send(
                SYSTEM, to=["bob"], subject="more", body="x", project="default", agent="ann"
            )
            sent += 1
            await asyncio.sleep(0)

    writer = asyncio.create_task(keep_writing())
    try:
        manifest = await backups.create("daily")
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer

    assert manifest.backend == Target(database_url).backend
    assert manifest.schema_revision is not None
    assert manifest.row_counts["issues"] == 5
    assert manifest.row_counts["messages"] >= 5
    assert manifest.row_counts["message_recipients"] == manifest.row_counts["messages"]
    assert len(manifest.sha256) == 64
    assert [m.id for m in await backups.manifests()] == [manifest.id]
    stored = json.loads((tmp_path / "backups" / f"{manifest.id}.json").read_text())
    assert stored["row_counts"] == manifest.row_counts

    check = await backups.verify(manifest.id)
    assert check.ok, check.problems

    result = await backups.restore(manifest.id, target_url=other_url)
    assert result.safety_backup is None  # the target was empty: nothing to keep
    assert await _count(other_url, "messages") == manifest.row_counts["messages"]
    assert await _count(other_url, "issues") == 5


async def test_a_damaged_backup_fails_verification_and_is_refused(
    runtime: Runtime, database_url: str, other_url: str, tmp_path: Path
) -> None:
    await _seed(runtime.services)
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    path = tmp_path / "backups" / manifest.file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    check = await backups.verify(manifest.id)
    assert not check.ok
    assert "sha256" in check.problems[0]
    with pytest.raises(BackupError, match="damaged"):
        await backups.restore(manifest.id, target_url=other_url)


def _rewrite(backups_dir: Path, backup_id: str, **changes: object) -> None:
    """Change a manifest as a faulty backup tool would (the checksum then still matches the file)."""
    path = backups_dir / f"{backup_id}.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


async def test_a_restore_that_fails_after_touching_the_target_rolls_back(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """The backup restores, but what it holds does not match its manifest: the target is put back."""
    await _seed(runtime.services, issues=3)
    backups = _backups(database_url, tmp_path)
    bad = await backups.create()
    counts = dict(bad.row_counts)
    counts["issues"] = 999
    _rewrite(tmp_path / "backups", bad.id, row_counts=counts)
    await runtime.services.issues.create(SYSTEM, title="after the backup", project="default", agent="ann")
    await runtime.stop()  # no server on the target

    with pytest.raises(BackupError, match="rolled back to the safety backup") as failure:
        await backups.restore(bad.id)
    assert "table issues: 3 rows, the manifest says 999" in str(failure.value)
    assert await _count(database_url, "issues") == 4  # the state before the restore, not the backup's
    safety = [m for m in await backups.manifests() if m.label == "pre-restore"]
    assert len(safety) == 1 and safety[0].row_counts["issues"] == 4


async def test_a_restore_keeps_revocations_the_audit_log_and_event_ids_going_forward(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """The data goes back to the backup; a token revoked since stays revoked, a dashboard session
    ended since stays ended, the audit entries written since stay on record, and the next event's id
    follows every id given before."""
    await _seed(runtime.services, issues=3)
    leaked, _ = await runtime.services.tokens.create(SYSTEM, role=TokenRole.WORKER, label="leaked")
    person, _ = await runtime.services.tokens.create(SYSTEM, role=TokenRole.ADMIN, label="person")
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create("daily")
    in_browser = await runtime.services.tokens.authenticate_session(person.id, "a" * 64)
    await runtime.services.tokens.end_session(in_browser, "a" * 64, datetime.now(UTC) + timedelta(hours=1))
    await runtime.services.tokens.revoke(SYSTEM, leaked.id)
    await runtime.services.issues.create(SYSTEM, title="after the backup", project="default", agent="ann")
    newest = await runtime.services.events.latest_id()
    await runtime.stop()  # no server on the target

    await backups.restore(manifest.id)

    assert await _count(database_url, "issues") == 3  # the data is the backup's
    revoked, actions, last = await _kept(database_url, leaked.id)
    assert revoked is not None  # it does not come back to life with the rows it was revoked from
    assert actions[-3:] == ["token.created", "session.ended", "token.revoked"]
    assert actions.count("token.revoked") == 1
    assert last.id == newest + 1 and last.type == "database.restored"
    assert last.payload == {"backup": manifest.id, "taken_at": manifest.created_at.isoformat()}

    # Every reader learns of it, whatever its filters: a project-scoped agent's token, a feed of one
    # project, a feed of some types (it has no project; it was dropped by every project filter).
    again = Runtime(runtime.settings)
    await again.start()
    try:
        scoped = Caller(credential_id=None, role=TokenRole.WORKER, project="default", label="w")
        for caller, types in ((scoped, None), (SYSTEM, ["issue.*"]), (scoped, ["message.*"])):
            page = await again.services.events.page(caller, after=newest, project="default", types=types)
            assert [e.type for e in page.items] == ["database.restored"]
    finally:
        await again.stop()

    again = Runtime(make_settings(database_url, tmp_path))  # a server on the restored database
    await again.start()
    try:
        made = await again.services.issues.create(SYSTEM, title="after the restore", project="default")
        assert made.id == 4  # the data's ids go on from the backup's
        with pytest.raises(Unauthenticated):  # a copy of the ended session's cookie stays refused
            await again.services.tokens.authenticate_session(person.id, "a" * 64)
        await again.services.tokens.authenticate_session(person.id, "b" * 64)  # another session is fine
        assert await again.services.events.latest_id() > newest + 1  # events' from every id given
    finally:
        await again.stop()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # PostgreSQL's runs pg_restore
async def test_a_sqlite_restore_stopped_once_the_data_is_in_place_has_kept_what_it_keeps(
    runtime: Runtime, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restored data replaces the target's in one step, with the revocations and event ids it
    keeps already written into it: a restore that ends right after (killed, SIGTERM) left a revoked
    token valid again and event ids gone back, as it wrote them in a step of their own."""
    from vibe_ensemble.store import backup_sqlite

    await _seed(runtime.services, issues=2)
    leaked, _ = await runtime.services.tokens.create(SYSTEM, role=TokenRole.WORKER, label="leaked")
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    await runtime.services.tokens.revoke(SYSTEM, leaked.id)
    newest = await runtime.services.events.latest_id()
    await runtime.stop()
    real = backup_sqlite.copy_into

    def then_stopped(*args: Any) -> None:
        real(*args)
        raise KeyboardInterrupt  # the process ends here, the new content in place

    monkeypatch.setattr(backup_sqlite, "copy_into", then_stopped)
    with pytest.raises(KeyboardInterrupt):
        await backups.restore(manifest.id)
    revoked, _, last = await _kept(database_url, leaked.id)
    assert await _count(database_url, "issues") == 2  # the backup's data
    assert revoked is not None
    assert last.id == newest + 1 and last.type == "database.restored"


async def test_a_backup_file_that_breaks_mid_restore_rolls_back(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """A corrupted backup whose manifest matches it (damaged before it was stored) never half-lands."""
    await _seed(runtime.services, issues=3)
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    path = tmp_path / "backups" / manifest.file
    if manifest.backend == "sqlite":
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[4096 * 2 : 4096 * 3] = b"\x00\xff" * 2048  # smash a page in the middle of the file
        path.write_bytes(gzip.compress(bytes(raw)))
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])  # a dump cut short
    import hashlib

    _rewrite(tmp_path / "backups", manifest.id, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    await runtime.services.issues.create(SYSTEM, title="after the backup", project="default", agent="ann")
    await runtime.stop()

    with pytest.raises(BackupError) as failure:
        await backups.restore(manifest.id)
    if manifest.backend == "sqlite":
        assert "damaged" in str(failure.value)  # caught by the integrity check before the target is touched
    else:
        assert "rolled back to the safety backup" in str(failure.value)
        assert await _holds(database_url) == []  # nor are the writes held any longer
    assert await _count(database_url, "issues") == 4
    assert not (await backups.verify(manifest.id)).ok


async def test_restore_refuses_while_a_server_uses_the_target(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    await _seed(runtime.services)
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    # The runtime fixture owns the SQLite file and holds PostgreSQL connections, as a server does.
    async with runtime.db.read() as conn:
        await conn.execute(sa.text("SELECT 1"))
    with pytest.raises(BackupError, match="--force"):
        await backups.restore(manifest.id)
    assert [m.label for m in await backups.manifests()] == ["manual"]  # nothing was done


async def test_a_forced_restore_under_writes_goes_through(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """`--force` while a server writes: on PostgreSQL the restored rows were counted against the
    manifest after pg_restore committed, a write had landed meanwhile, and the restore was rolled
    back, taking the writes acknowledged since its safety backup with it. The backup is counted in a
    scratch database first instead, and the restore goes through."""
    await _seed(runtime.services)
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    await _seed_more(runtime.services)
    written: list[int] = []

    async def keep_writing() -> None:
        while True:
            try:
                sent = await runtime.services.messages.send(
                    SYSTEM, to=["bob"], subject="during", body="x", project="default", agent="ann"
                )
                written.append(sent.id)
            except VibeError:
                pass  # refused while the tables are replaced (a deadlock broken, a table gone)
            await asyncio.sleep(0.001)

    # Several writers: pg_restore deadlocked with them now and then (PostgreSQL aborted it; it is run again).
    writers = [asyncio.create_task(keep_writing()) for _ in range(4)]
    try:
        result = await backups.restore(manifest.id, force=True)
    finally:
        for writer in writers:
            writer.cancel()
        for writer in writers:
            with pytest.raises(asyncio.CancelledError):
                await writer
    assert result.safety_backup is not None
    assert written  # the server wrote while it was restored
    assert await _count(database_url, "issues") == 5  # the backup's, not the 3 made after it


async def _seed_more(services: Services) -> None:
    for i in range(3):
        await services.issues.create(SYSTEM, title=f"after the backup {i}", project="default", agent="ann")


async def test_prune_keeps_the_newest_daily_and_weekly_and_every_other_label(
    database_url: str, tmp_path: Path
) -> None:
    backups, made = await _made(database_url, tmp_path, ["daily"] * 4 + ["weekly"] * 3 + ["manual"] * 2)

    would = await backups.prune(keep_daily=2, keep_weekly=1, dry_run=True)
    assert len(await backups.manifests()) == 9
    gone = await backups.prune(keep_daily=2, keep_weekly=1)
    expected = [m.id for m in made[:2] + made[4:6]]
    assert [m.id for m in gone.deleted] == [m.id for m in would.deleted] == expected
    assert gone.unreadable == []
    left = await backups.manifests()
    assert [m.id for m in left] == [m.id for m in made[2:4] + made[6:]]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(
        n for m in left for n in (m.file, f"{m.id}.json")
    )
    with pytest.raises(BackupError, match="keep at least 1"):
        await backups.prune(keep_daily=0)


async def test_delete_removes_the_named_backups_of_any_label_and_nothing_for_an_unknown_id(
    database_url: str, tmp_path: Path
) -> None:
    backups, made = await _made(database_url, tmp_path, ["manual", "pre-upgrade", "daily"])

    with pytest.raises(BackupError, match="no backup 'nope'"):
        await backups.delete([made[0].id, "nope"])
    with pytest.raises(BackupError, match="not a backup id"):
        await backups.delete([made[0].id, "../etc/passwd"])
    assert [m.id for m in await backups.manifests()] == [m.id for m in made]  # nothing went

    gone = await backups.delete([made[0].id, made[1].id, made[0].id])
    assert [m.id for m in gone] == [made[0].id, made[1].id]
    assert [m.id for m in await backups.manifests()] == [made[2].id]
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(
        [made[2].file, f"{made[2].id}.json"]
    )


async def test_labels_and_ids_are_checked(database_url: str, tmp_path: Path) -> None:
    backups = _backups(database_url, tmp_path)
    with pytest.raises(BackupError, match="label"):
        await backups.create("Daily Backup")
    with pytest.raises(BackupError, match="backups does not exist"):
        await backups.verify("20260101T000000Z-daily")
    (tmp_path / "backups").mkdir()
    with pytest.raises(BackupError, match="no backup"):
        await backups.verify("20260101T000000Z-daily")
    with pytest.raises(BackupError, match="not a backup id"):
        await backups.verify("../etc/passwd")


async def _set_revision(url: str, revision: str) -> None:
    """Put the database at schema `revision`, as a newer program's migration would have."""
    target = Target(url)
    if target.backend == "sqlite":
        assert target.path is not None
        with sqlite3.connect(target.path) as conn:
            conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        conn.close()
        return
    conn = await asyncpg.connect(target.dsn())
    try:
        await conn.execute("UPDATE alembic_version SET version_num = $1", revision)
    finally:
        await conn.close()


async def test_a_backup_newer_than_this_program_is_refused_before_anything_is_changed(
    runtime: Runtime, database_url: str, other_url: str, tmp_path: Path
) -> None:
    """A backup a newer vibe-ensemble took (a schema revision past this one's head) cannot be
    restored by this one: the refusal names the revision and comes before any safety backup, lock
    file or byte of the target."""
    await _seed(runtime.services, issues=3)
    backups = _backups(database_url, tmp_path)
    newer_revision = f"{int(migrate.HEAD) + 1:04d}"
    await _set_revision(database_url, newer_revision)
    newer = await backups.create()
    await _set_revision(database_url, migrate.HEAD)
    await runtime.services.issues.create(SYSTEM, title="after the backup", project="default", agent="ann")
    await runtime.stop()
    said = (
        f"backup {newer.id} is at schema revision {newer_revision}, newer than this program knows (its "
        f"newest is {migrate.HEAD}): restore it with the vibe-ensemble that took it (or a newer one); "
        "nothing was changed"
    )

    for target in (None, other_url):
        with pytest.raises(BackupError) as refused:
            await backups.restore(newer.id, target_url=target)
        assert str(refused.value) == said
    assert await _count(database_url, "issues") == 4  # untouched
    assert [m.label for m in await backups.manifests()] == ["manual"]  # no safety backup was taken
    other = Target(other_url)
    if other.path is not None:
        assert not other.path.exists() and not other.path.with_name("other.db.lock").exists()
    else:
        assert await _count_tables(other_url) == 0

    if newer.backend == "sqlite":  # a newer file whose manifest says otherwise is refused all the same
        _rewrite(tmp_path / "backups", newer.id, schema_revision=migrate.HEAD)
        with pytest.raises(BackupError) as refused:
            await backups.restore(newer.id)
        assert str(refused.value) == said
        assert await _count(database_url, "issues") == 4
        assert [m.label for m in await backups.manifests()] == ["manual"]
        _rewrite(tmp_path / "backups", newer.id, schema_revision=newer_revision)

    check = await backups.verify(newer.id)
    assert not check.ok
    assert check.problems == [
        f"the backup is at schema revision {newer_revision}, newer than this program knows (its newest is "
        f"{migrate.HEAD}): this vibe-ensemble cannot restore it; the one that took it (or a newer one) can"
    ]


async def test_a_backup_at_a_revision_this_program_does_not_know_is_refused(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    backups = _backups(database_url, tmp_path)
    made = await backups.create()
    _rewrite(tmp_path / "backups", made.id, schema_revision="0007a")
    await runtime.stop()
    with pytest.raises(BackupError) as refused:
        await backups.restore(made.id)
    assert str(refused.value).startswith(
        f"backup {made.id} is at schema revision '0007a', which this program does not know (its revisions "
        f"are 0001 to {migrate.HEAD}): restore it with the vibe-ensemble that took it"
    )
    assert [m.label for m in await backups.manifests()] == ["manual"]
    assert "which this program does not know" in (await backups.verify(made.id)).problems[0]
    _rewrite(tmp_path / "backups", made.id, backend="mysql")  # nor a backend it has not
    with pytest.raises(BackupError) as unreadable:
        await backups.restore(made.id)
    assert str(unreadable.value) == (
        f"unreadable manifest {made.id}.json: backend must be one of sqlite, postgresql (got 'mysql')"
    )


async def _count_tables(url: str) -> int:
    conn = await asyncpg.connect(Target(url).dsn())
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
    finally:
        await conn.close()


async def test_a_backup_of_the_other_backend_says_which_it_is_and_what_it_needs(
    postgres_url: str, tmp_path: Path
) -> None:
    """Verifying a PostgreSQL backup needs a PostgreSQL server, restoring either needs a database of
    its own backend: said plainly, naming the backup's backend and the option or setting to give."""
    sqlite_url = f"sqlite+aiosqlite:///{tmp_path / 'vibe.db'}"
    for url in (postgres_url, sqlite_url):
        rt = Runtime(make_settings(url, tmp_path))
        await rt.start(apply_migrations=True)
        await rt.stop()
    on_postgres, on_sqlite = _backups(postgres_url, tmp_path), _backups(sqlite_url, tmp_path)
    pg_backup, sqlite_backup = await on_postgres.create(), await on_sqlite.create()
    before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(BackupError) as refused:
        await on_sqlite.verify(pg_backup.id)
    assert str(refused.value) == (
        f"backup {pg_backup.id} is a PostgreSQL backup; verifying it restores it into a scratch database "
        f"on a PostgreSQL server, and the configured database ({sqlite_url}) is SQLite: name a PostgreSQL "
        "server with --scratch-url postgresql://user@host:5432/db, or configure a PostgreSQL database "
        "(--database-url or VIBE_DATABASE_URL)"
    )
    assert (await on_sqlite.verify(pg_backup.id, scratch_url=postgres_url)).ok
    assert (await on_postgres.verify(sqlite_backup.id)).ok  # a SQLite backup is checked in a file of its own

    with pytest.raises(BackupError) as refused:
        await on_sqlite.restore(pg_backup.id)
    assert str(refused.value) == (
        f"backup {pg_backup.id} is a PostgreSQL backup; the configured database ({sqlite_url}) is SQLite: "
        "restore it into a PostgreSQL database (--to postgresql://user@host:5432/db, or configure one with "
        "--database-url or VIBE_DATABASE_URL); nothing was changed"
    )
    other = f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    with pytest.raises(BackupError) as refused:
        await on_postgres.restore(pg_backup.id, target_url=other)
    assert str(refused.value).startswith(
        f"backup {pg_backup.id} is a PostgreSQL backup; the target (--to {other}) is SQLite: restore it "
        "into a PostgreSQL database"
    )
    with pytest.raises(BackupError, match=f"backup {sqlite_backup.id} is a SQLite backup; the configured"):
        await on_postgres.restore(sqlite_backup.id)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no file made, no safety backup taken
    assert len(await on_sqlite.manifests()) == 2


async def test_backups_with_one_label_started_in_one_second_get_their_own_ids(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """Three `backup create --label dup` at once chose one id between two of them, and one backup
    overwrote another: each id is now reserved in the location before it is used."""
    await _seed(runtime.services)
    backups = _backups(database_url, tmp_path)
    made = await asyncio.gather(*(backups.create("dup") for _ in range(3)))
    assert len({m.id for m in made}) == 3
    assert sorted(m.id for m in await backups.manifests()) == sorted(m.id for m in made)
    for manifest in made:
        assert (await backups.verify(manifest.id)).ok
    assert not [p for p in (tmp_path / "backups").iterdir() if p.name.endswith(".reserved")]


async def test_another_programs_sqlite_file_is_refused_before_the_target_is_touched(
    tmp_path: Path,
) -> None:
    """A gzipped SQLite file of another program, with a manifest whose checksum matches, was swapped
    into the target, migrated, found wanting and rolled back: it is refused before anything is done."""
    target = tmp_path / "vibe.db"
    rt = Runtime(make_settings(f"sqlite+aiosqlite:///{target}", tmp_path))
    await rt.start(apply_migrations=True)
    await _seed(rt.services)
    await rt.stop()
    backups = _backups(f"sqlite+aiosqlite:///{target}", tmp_path)
    manifest = await backups.create()
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE recipes (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO recipes (name) VALUES ('bread')")
    stored = tmp_path / "backups" / manifest.file
    stored.write_bytes(gzip.compress(foreign.read_bytes()))
    _rewrite(tmp_path / "backups", manifest.id, sha256=hashlib.sha256(stored.read_bytes()).hexdigest())
    with pytest.raises(BackupError, match=r"is not a Vibe Ensemble database .*nothing was changed"):
        await backups.restore(manifest.id)
    assert [m.label for m in await backups.manifests()] == ["manual"]  # no safety backup was needed
    assert await _count(f"sqlite:///{target}", "issues") == 5


# The hung tool is the one stopped: 5 s leaves the real ones beside it (pg_dump, counts) time under load.
async def test_a_pg_dump_that_hangs_is_killed_at_its_time_limit_and_nothing_is_stored(
    postgres_url: str, tmp_path: Path
) -> None:
    """pg_dump ran with no time limit: one that hung kept `backup create` waiting forever. Past
    VIBE_PG_TOOL_TIMEOUT_S it is killed, the failure names the limit and the setting, and no backup
    (nor any file of one) is left in the location."""
    rt = Runtime(make_settings(postgres_url, tmp_path))
    await rt.start(apply_migrations=True)
    await rt.stop()
    pid_file = tmp_path / "pid"
    tools = tmp_path / "pg"
    tools.mkdir()
    hanging = tools / "pg_dump"
    hanging.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    hanging.chmod(0o755)
    store = tmp_path / "backups"
    backups = Backups(
        postgres_url, DirectoryStorage(store), pg_bin_dir=tools, pg_tool_timeout_s=5
    )  # a hung tool only: 5 s for a real one under load

    with pytest.raises(BackupError) as failure:
        await asyncio.wait_for(backups.create("daily"), 60)
    safe = Target(postgres_url).safe
    assert str(failure.value).startswith(
        f"pg_dump of {safe} did not finish within 5 s (VIBE_PG_TOOL_TIMEOUT_S), so it was stopped; "
        "nothing was stored."
    )
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed, and waited for: not left running
        os.kill(pid, 0)
    assert await backups.manifests() == []
    assert list(store.iterdir()) == []  # no manifest, no dump, no reservation


async def test_a_restore_whose_pg_restore_hangs_ends_at_its_time_limit_and_says_what_to_do(
    postgres_url: str, tmp_path: Path
) -> None:
    """pg_restore ran with no time limit. Past VIBE_PG_TOOL_TIMEOUT_S it is killed; the rollback to
    the safety backup, a pg_restore too, meets the same server and the same limit, and the failure
    says both, and which backup to restore once the cause is mended."""
    real = _backups(postgres_url, tmp_path)
    rt = Runtime(make_settings(postgres_url, tmp_path))
    await rt.start(apply_migrations=True)
    await _seed(rt.services, issues=2)
    await rt.stop()
    made = await real.create()
    tools = tmp_path / "pg"
    tools.mkdir()
    (tools / "pg_dump").symlink_to(backup_postgres.find_pg_tool("pg_dump", real.pg_bin_dir))
    pids = tmp_path / "pids"
    (tools / "pg_restore").write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    (tools / "pg_restore").chmod(0o755)
    hanging = Backups(
        postgres_url, real.storage, pg_bin_dir=tools, pg_tool_timeout_s=5
    )  # a hung tool only: 5 s for a real one under load

    with pytest.raises(BackupError) as failure:
        await asyncio.wait_for(hanging.restore(made.id), 120)
    safety = [m for m in await real.manifests() if m.label == "pre-restore"]
    assert len(safety) == 1
    said = str(failure.value)
    assert said.startswith(f"restore of {made.id} failed: pg_restore into {Target(postgres_url).safe} did")
    assert "did not finish within 5 s (VIBE_PG_TOOL_TIMEOUT_S)" in said
    assert f"Rolling it back to the safety backup {safety[0].id} failed too: pg_restore into" in said
    assert said.endswith(f"vibe-ensemble backup restore {safety[0].id}")
    for pid in pids.read_text().split():  # both runs killed, and waited for
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    assert await _count(postgres_url, "issues") == 2  # nothing restored: the target as it was


async def test_a_revocation_made_while_a_forced_restore_swaps_the_data_is_never_undone(
    runtime: Runtime, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`restore --force` against a running server read what it carries over (revocations, the audit
    log, the newest event id) before the data was swapped: a token revoked in between was valid again
    afterwards, its audit entry gone, and the `database.restored` event took an id the server had
    already given (a live client resuming after it never saw the restore). A revocation the server
    acknowledged is now carried over (SQLite: read under the swap's own write lock) or, while
    PostgreSQL's tables are replaced, refused ("retry"), never acknowledged and then undone."""
    from vibe_ensemble.domain.errors import DatabaseUnavailable
    from vibe_ensemble.store import backup_sqlite

    await _seed(runtime.services, issues=2)
    leaked, _ = await runtime.services.tokens.create(SYSTEM, role=TokenRole.WORKER, label="leaked")
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    loop = asyncio.get_running_loop()
    outcome: list[str] = []
    given: list[int] = []  # the newest event id the server had given, after the revocation

    async def revoke() -> None:
        try:
            await runtime.services.tokens.revoke(SYSTEM, leaked.id)
            outcome.append("acknowledged")
        except DatabaseUnavailable:  # refused, "retry in 1 s": nothing was acknowledged
            outcome.append("refused")
        given.append(await runtime.services.events.latest_id())

    if manifest.backend == "sqlite":
        real_copy = backup_sqlite.copy_into

        def revoked_first(*args: Any, **kwargs: Any) -> None:  # a worker thread: run it on the loop
            asyncio.run_coroutine_threadsafe(revoke(), loop).result()
            real_copy(*args, **kwargs)

        monkeypatch.setattr(backup_sqlite, "copy_into", revoked_first)
    else:
        real_restore = backup_postgres.restore

        async def revoked_first(target: Target, *args: Any, clean: bool, **kwargs: Any) -> None:
            if clean and not outcome:  # the restore into the target (not a scratch check, nor a rollback)
                await revoke()
            await real_restore(target, *args, clean=clean, **kwargs)

        monkeypatch.setattr(backup_postgres, "restore", revoked_first)

    await backups.restore(manifest.id, force=True)

    assert len(outcome) == 1
    revoked, actions, last = await _kept(database_url, leaked.id)
    if outcome == ["acknowledged"]:
        assert revoked is not None  # not valid again
        assert actions.count("token.revoked") == 1  # its audit entry kept
    else:
        assert manifest.backend == "postgresql"  # SQLite takes it over, whenever it lands
        assert revoked is None
        await runtime.services.tokens.revoke(SYSTEM, leaked.id)  # the retry lands on the restored data
        revoked, actions, _ = await _kept(database_url, leaked.id)
        assert revoked is not None and actions.count("token.revoked") == 1
    assert last.type == "database.restored"
    assert last.id > given[0]  # after every id given before the restore: a live client sees it
    if manifest.backend == "postgresql":
        assert await _holds(database_url) == []  # what held the writes is gone with the restore


async def _holds(url: str) -> list[str]:
    """What `backup_carry.writes_held` leaves in a PostgreSQL database: its function and triggers."""
    conn = await asyncpg.connect(Target(url).dsn())
    try:
        rows = await conn.fetch(
            "SELECT proname AS name FROM pg_proc WHERE proname = $1 "
            "UNION ALL SELECT tgname FROM pg_trigger WHERE tgname = $1",
            backup_carry.HOLD,
        )
    finally:
        await conn.close()
    return [r["name"] for r in rows]


async def test_writes_held_by_a_restore_whose_process_was_killed_go_through(
    postgres_url: str, tmp_path: Path
) -> None:
    """A restore killed (SIGKILL) while it held the writes leaves its triggers behind: with its
    session gone they refuse nothing, and the next restore's hold removes them."""
    from vibe_ensemble.domain.errors import DatabaseUnavailable

    rt = Runtime(make_settings(postgres_url, tmp_path))
    await rt.start(apply_migrations=True)
    try:
        token, _ = await rt.services.tokens.create(SYSTEM, role=TokenRole.WORKER, label="t")
        other, _ = await rt.services.tokens.create(SYSTEM, role=TokenRole.WORKER, label="u")
        target = Target(postgres_url)
        holding = backup_carry.writes_held(target, timeout_s=30)
        await holding.__aenter__()  # as a restore does, which is then killed: never left
        with pytest.raises(DatabaseUnavailable, match="retry in 1 s"):
            await rt.services.tokens.revoke(SYSTEM, token.id)
        killed = await asyncpg.connect(target.dsn())
        try:  # the restore's session ends with its process
            await killed.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
                "objid = $1 AND pid <> pg_backend_pid()",
                backup_carry.HOLD_LOCK_KEY,
            )
            for _ in range(200):  # until its session (and lock) is gone, at most 10 s
                held = await killed.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1",
                    backup_carry.HOLD_LOCK_KEY,
                )
                if not held:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the killed restore's session did not end within 10 s")
        finally:
            await killed.close()
        assert len(await _holds(postgres_url)) == 5  # left behind: the function and four triggers
        revoked = await rt.services.tokens.revoke(SYSTEM, token.id)  # and refusing nothing
        assert revoked.revoked_at is not None
        async with backup_carry.writes_held(target, timeout_s=30):
            with pytest.raises(DatabaseUnavailable):
                await rt.services.tokens.revoke(SYSTEM, other.id)
        assert await _holds(postgres_url) == []
        await rt.services.tokens.revoke(SYSTEM, other.id)
        with contextlib.suppress(Exception):  # the killed one's own way out, on a connection long gone
            await holding.__aexit__(None, None, None)
    finally:
        await rt.stop()


async def test_a_token_revoked_since_the_backup_is_never_accepted_while_a_forced_restore_carries_over(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, `restore --force` beside a running server: between `pg_restore`'s commit and the
    carry-over's, the restored tables held a token revoked since the backup as valid. A server that
    read it then accepted it, and kept accepting it from its credential cache after the restore (its
    session cookie too). Credential reads in that window are now refused ("retry in 1 s"), the
    revoked token is refused after the restore, and a live one works again once it is done."""
    from vibe_ensemble.domain.errors import DatabaseRestoring

    rt = Runtime(make_settings(postgres_url, tmp_path))
    await rt.start(apply_migrations=True)
    try:
        tokens = rt.services.tokens
        leaked, leaked_secret = await tokens.create(SYSTEM, role=TokenRole.WORKER, label="leaked")
        _, live_secret = await tokens.create(SYSTEM, role=TokenRole.WORKER, label="live")
        backups = _backups(postgres_url, tmp_path)
        manifest = await backups.create()
        await tokens.revoke(SYSTEM, leaked.id)  # since the backup: the restore must keep it revoked
        with pytest.raises(Unauthenticated):
            await tokens.authenticate(leaked_secret)
        tokens.cache.clear()  # the live token is read from the database in the window, as a miss
        in_window: dict[str, str] = {}
        real_apply = backup_carry.apply

        async def read_first(url: str, *args: Any, **kwargs: Any) -> None:
            """Once the restored tables are in (and migrated), before the carry-over is written."""
            assert await _kept_revocation(url, leaked.id) is None  # the window: restored, not carried
            attempts = {
                "leaked": tokens.authenticate(leaked_secret),
                "live": tokens.authenticate(live_secret),
                "session": tokens.authenticate_session(leaked.id, "0" * 64),
            }
            for name, attempt in attempts.items():
                try:
                    await attempt
                    in_window[name] = "accepted"
                except VibeError as exc:
                    in_window[name] = type(exc).__name__
            await real_apply(url, *args, **kwargs)

        monkeypatch.setattr(backup_carry, "apply", read_first)
        await backups.restore(manifest.id, force=True)

        refused = DatabaseRestoring.__name__
        assert in_window == {"leaked": refused, "live": refused, "session": refused}
        assert str(DatabaseRestoring()).endswith("retry in 1 s")
        with pytest.raises(Unauthenticated):  # nothing accepted in the window was cached
            await tokens.authenticate(leaked_secret)
        with pytest.raises(Unauthenticated):
            await tokens.authenticate_session(leaked.id, "0" * 64)
        assert (await tokens.authenticate(live_secret)).label == "live"  # the retry goes through
    finally:
        await rt.stop()


async def _kept_revocation(url: str, credential_id: int) -> Any:
    db = Database(url)
    try:
        async with db.read() as conn:
            query = sa.select(credentials.c.revoked_at).where(credentials.c.id == credential_id)
            return (await conn.execute(query)).scalar_one()
    finally:
        await db.dispose()


async def test_a_server_forgets_a_project_a_forced_restore_took_away_within_the_cache_bound(
    runtime: Runtime, database_url: str, tmp_path: Path
) -> None:
    """A server kept the slug -> project mapping for its lifetime ("projects never change"). A forced
    restore takes away a project made since the backup, and the next project made takes its id: the
    server then put what named the old slug into the new project. The mapping is now trusted for the
    credential cache's bound (VIBE_CREDENTIAL_CACHE_S) only, as docs/backups.md says of a server's
    caches: past it, the gone project is "not found" and nothing lands in the other."""
    services = runtime.services
    backups = _backups(database_url, tmp_path)
    manifest = await backups.create()
    alpha = await services.projects.create(SYSTEM, slug="alpha")
    await services.issues.create(SYSTEM, title="in alpha", project="alpha")  # its slug now cached
    await backups.restore(manifest.id, force=True)
    gamma = await services.projects.create(SYSTEM, slug="gamma")
    assert gamma.id == alpha.id  # the gone project's id, given again

    clock = services.ctx.projects.clock
    services.ctx.projects.clock = lambda: clock() + services.ctx.credential_cache_s + 0.5
    with pytest.raises(VibeError, match="alpha"):
        await services.issues.create(SYSTEM, title="meant for alpha", project="alpha")
    assert (await services.issues.list(SYSTEM, project="gamma")).items == []
