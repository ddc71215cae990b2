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

`read` takes these from the target before it is replaced; `apply` writes them into the restored
database, in one transaction, once it has been migrated and checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.events import CATALOGUE, EventType
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store import migrate
from vibe_ensemble.store import sessions as session_store
from vibe_ensemble.store.database import Database
from vibe_ensemble.store.tables import audit_log, credentials, events

_AUDIT_COLUMNS = [c for c in audit_log.c if c.name != "id"]


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
            newest = await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)))
            ended = await session_store.all_(conn) if revision >= "0010" else []  # none written before
            return Carried(
                revoked=[dict(r._mapping) for r in revoked],
                audit=[dict(r._mapping) for r in audit],
                newest_event=int(newest.scalar_one()),
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
    restored = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)))).scalar_one()
    after = max(int(newest), int(restored))
    kind = EventType.DATABASE_RESTORED.value
    if conn.dialect.name == "postgresql":
        # Ids are drawn from the table's sequence as a transaction commits (store/events.py): the
        # next one drawn is the one after `after`.
        if after > 0:  # a sequence's values start at 1
            await conn.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('events', 'id'), :after)"), {"after": after}
            )
        await event_store.append(conn, now, [event_store.NewEvent(kind, "system", payload, None)])
    else:  # SQLite gives max(id) + 1: this row's explicit id moves every later one past `after`
        row = {"id": after + 1, "time": now, "project_id": None, "type": kind, "actor": "system"}
        await conn.execute(events.insert().values(payload=payload, **row))
