"""What a restore carries over from the database it replaces: what must not go back in time.

A backup brings the data back as it was when it was taken. Four things are not data to roll back:

- **Revocations.** A credential revoked since the backup stays revoked: a leaked token must not
  come back to life with the rows it was revoked from. (A token made since the backup is gone with
  the rest: make it again.)
- **Logouts.** A dashboard session ended since the backup stays ended (store/sessions.py): a copy
  of its cookie must not work again.
- **The audit log.** The entries written since the backup was taken are kept, after its own:
  who did what stays on record (and the backup's own `backup.created` entry, written once its copy
  was made, with it).
- **Event ids.** Live clients resume after the last id they saw (`Last-Event-ID`, `after=`). The
  restore writes a `database.restored` event whose id follows the newest the replaced database had
  given, so every later event has an id larger than any a client has seen, and none is skipped.

`read` takes these from the target; `apply` writes them into the restored database, in one
transaction, once it has been migrated and checked. A server may still write to the target
(`restore --force`): what it writes between the read and the moment its data is replaced would be
lost with the rest, and a revocation must not be. So the read is made where no such write can land
after it:

- **SQLite**: while the copy that replaces the target holds the target's write lock
  (`backup_sqlite.copy_into`'s `under_lock`), and is applied to that copy before it is committed.
- **PostgreSQL**: `pg_restore` replaces the tables in a transaction of its own, so no lock of ours
  can span both. `writes_held` makes every write of a revocation, a logout, an audit entry or an
  event fail ("retry": PostgreSQL's serialization failure, which servers answer "retry in 1 s")
  from before the read until `pg_restore` has dropped the tables it replaces; a server's write
  blocked on those tables then lands in the restored ones. Refused, never acknowledged and lost.
  Between `pg_restore`'s commit and the carry-over's, the restored tables hold a token revoked
  since the backup as valid: the restore's lock is held until the carry-over is written, and
  servers' credential reads are refused meanwhile (store/credentials.py), so none accepts the
  token, nor caches it, in that window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa

from vibe_ensemble.domain.events import CATALOGUE, EventType
from vibe_ensemble.store import backup_postgres, locks, migrate
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store import sessions as session_store
from vibe_ensemble.store.backup_storage import BackupError
from vibe_ensemble.store.backup_target import Target
from vibe_ensemble.store.database import Database
from vibe_ensemble.store.tables import audit_log, credentials, ended_sessions, events

_AUDIT_COLUMNS = [c for c in audit_log.c if c.name != "id"]
T = TypeVar("T")


@dataclass
class Carried:
    revoked: list[dict[str, Any]]  # id, token_hash, revoked_at of each revoked credential
    audit: list[dict[str, Any]]  # the entries written since the backup was taken, oldest first
    newest_event: int  # the newest event id the replaced database had given
    ended_sessions: list[dict[str, Any]]  # the dashboard sessions ended by a logout (kept to their expiry)


async def read(url: str, since: datetime) -> Carried | None:
    """What the target at `url` holds that its restore must keep (`since`: when the backup being
    restored was taken); None when it holds no Vibe Ensemble schema (nothing to keep)."""
    db = Database(url)
    try:
        revision = await migrate.current_revision(db)
        if revision is None:
            return None
        async with db.read() as conn:
            revoked = await conn.execute(
                sa.select(credentials.c.id, credentials.c.token_hash, credentials.c.revoked_at).where(
                    credentials.c.revoked_at.is_not(None)
                )
            )
            audit = await conn.execute(
                sa.select(*_AUDIT_COLUMNS).where(audit_log.c.time >= since).order_by(audit_log.c.id)
            )
            newest = await event_store.last_id(conn)
            ended = await session_store.all_(conn) if revision >= "0010" else []  # none written before
            return Carried(
                revoked=[dict(r._mapping) for r in revoked],
                audit=[dict(r._mapping) for r in audit],
                newest_event=newest,
                ended_sessions=ended,
            )
    finally:
        await db.dispose()


async def apply(url: str, carried: Carried, *, backup: str, taken_at: datetime, now: datetime) -> None:
    """Write `carried` into the restored database at `url` (see the module doc), in one transaction."""
    db = Database(url)
    try:
        async with db.write() as conn:
            for row in carried.revoked:
                await conn.execute(
                    credentials.update()
                    .where(
                        credentials.c.id == row["id"],
                        credentials.c.token_hash == row["token_hash"],
                        credentials.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=row["revoked_at"])
                )
            kept = await conn.execute(sa.select(*_AUDIT_COLUMNS).where(audit_log.c.time >= taken_at))
            already = {_entry(dict(r._mapping)) for r in kept}  # written before the copy was made
            new = [row for row in carried.audit if _entry(row) not in already]
            if new:
                await conn.execute(audit_log.insert(), new)
            for row in carried.ended_sessions:
                await session_store.end(
                    conn, row["session_hash"], row["credential_id"], row["expires_at"], row["ended_at"]
                )
            await _restored_event(conn, carried.newest_event, backup=backup, taken_at=taken_at, now=now)
        if not db.is_sqlite:  # the event is given its id now that it has committed (store/events.py)
            async with db.write(one_statement=True) as conn:
                await event_store.order_pending(conn)
    finally:
        await db.dispose()


def _entry(row: dict[str, Any]) -> tuple[Any, ...]:
    """An audit entry as comparable values (its details as sorted text: a dict is not hashable)."""
    details = repr(sorted(row["details"].items()))
    return (row["time"], row["actor"], row["action"], row["outcome"], row["remote"], details)


async def _restored_event(conn: Any, newest: int, *, backup: str, taken_at: datetime, now: datetime) -> None:
    """The `database.restored` event, its id past both `newest` (the replaced database's) and the
    restored database's own newest."""
    payload = {"backup": backup, "taken_at": taken_at.isoformat()}
    CATALOGUE[EventType.DATABASE_RESTORED].check(payload)
    restored = await event_store.last_id(conn)
    after = max(int(newest), int(restored))
    kind = EventType.DATABASE_RESTORED.value
    if conn.dialect.name == "postgresql":
        # Ids are drawn from the table's sequence once a transaction has committed (store/events.py):
        # the next one drawn is the one after `after`.
        if after > 0:  # a sequence's values start at 1
            await conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('events', 'id'), :after)"), {"after": after}
            )
        await event_store.append(conn, now, [event_store.NewEvent(kind, "system", payload, None)])
    else:  # SQLite gives max(id) + 1: this row's explicit id moves every later one past `after`
        row = {"id": after + 1, "time": now, "project_id": None, "type": kind, "actor": "system"}
        await conn.execute(events.insert().values(payload=payload, **row))


# PostgreSQL (`writes_held`): the session advisory lock a restore holds while it replaces the tables,
# and the triggers that refuse, meanwhile, the writes it would have to carry over. A trigger whose
# restore is gone (its process killed) finds the lock free and lets every write through; the next
# restore replaces it, and removes it.
HOLD_LOCK_KEY = locks.RESTORE  # held until the carry-over is written: credential reads wait for it too
HOLD = "vibe_restore_in_progress"  # the function, and each trigger's name
HELD_WRITES = (
    (credentials.name, "UPDATE OF revoked_at"),  # a revocation
    (ended_sessions.name, "INSERT"),  # a logout
    (audit_log.name, "INSERT"),
    (events.name, "INSERT"),  # an event id the restored database's next ones must follow
)
HOLD_ATTEMPTS = 5  # installing the triggers may deadlock with a server's write: PostgreSQL ends one

_HOLD_FUNCTION = f"""CREATE OR REPLACE FUNCTION {HOLD}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF NOT pg_try_advisory_xact_lock_shared({HOLD_LOCK_KEY}) THEN
        RAISE EXCEPTION 'a restore is replacing this database: retry in a moment'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NULL;
END
$fn$"""


class Hold:
    """What `writes_held` holds: the restore's lock, and (until `release_writes`) the triggers."""

    def __init__(self, conn: asyncpg.Connection, target: Target, timeout_s: float) -> None:
        self._conn = conn
        self._target = target
        self._timeout_s = timeout_s
        self.writes_released = False

    async def release_writes(self) -> None:
        """Let the held writes through again (once `pg_restore` has replaced the tables, whose new
        copies have no trigger; those left on tables it did not replace, when it failed, go too).
        The lock stays held: credential reads are still refused (store/credentials.py)."""
        if not self.writes_released:
            drop = self._conn.execute(f"DROP FUNCTION IF EXISTS {HOLD}() CASCADE")
            await _within(drop, self._target, self._timeout_s)
            self.writes_released = True


@contextlib.asynccontextmanager
async def writes_held(target: Target, *, timeout_s: float) -> AsyncIterator[Hold]:
    """PostgreSQL: from the read of what is carried over until `release_writes` (after `pg_restore`),
    revocations, logouts, audit entries and events written to `target` are refused with a
    serialization failure (servers answer it "retry in 1 s"): none lands in the tables the restore
    replaces after they were read, to be lost with them. Until the block ends (once the carry-over is
    written), servers' credential reads are refused ("retry in 1 s", store/credentials.py): the
    restored tables hold a token revoked since the backup as valid until then. Another restore of the
    same database waits for this one. Each step waits at most `timeout_s` (VIBE_PG_TOOL_TIMEOUT_S)."""
    conn = await backup_postgres.connect(target)
    hold = Hold(conn, target, timeout_s)
    try:
        await _within(conn.execute("SELECT pg_advisory_lock($1)", HOLD_LOCK_KEY), target, timeout_s)
        await _install(conn, target, timeout_s)
        try:
            yield hold
        finally:
            await hold.release_writes()
    finally:
        if hold.writes_released:
            await conn.close()  # and with the session, its advisory lock
        else:
            conn.terminate()  # the server may not answer: the lock goes with the connection


async def _install(conn: asyncpg.Connection, target: Target, timeout_s: float) -> None:
    present = {
        r["table_name"]
        for r in await _within(
            conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ),
            target,
            timeout_s,
        )
    }
    statements = [_HOLD_FUNCTION]
    for table, writes in HELD_WRITES:
        if table in present:  # an older schema has no ended_sessions
            statements += [
                f"DROP TRIGGER IF EXISTS {HOLD} ON {table}",
                f"CREATE TRIGGER {HOLD} BEFORE {writes} ON {table} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION {HOLD}()",
            ]
    # One simple query: one transaction, and nothing to roll back by hand on the way out (a ROLLBACK
    # would wait on a server that does not answer).
    script = ";\n".join(statements)
    for attempt in range(1, HOLD_ATTEMPTS + 1):
        try:
            await _within(conn.execute(script), target, timeout_s)
            return
        except asyncpg.DeadlockDetectedError:
            if attempt == HOLD_ATTEMPTS:
                raise BackupError(
                    f"cannot hold the writes to {target.safe} while it is restored: it deadlocked with "
                    f"a server's write {HOLD_ATTEMPTS} times; nothing was changed"
                ) from None
            await asyncio.sleep(0.1 * attempt)


async def _within(step: Awaitable[T], target: Target, timeout_s: float) -> T:
    try:
        return await asyncio.wait_for(step, timeout_s)
    except TimeoutError:
        raise BackupError(
            backup_postgres.timed_out(f"preparing {target.safe} to be restored", target, timeout_s)
        ) from None
