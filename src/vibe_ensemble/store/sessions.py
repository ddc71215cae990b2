"""Dashboard sessions ended before their expiry (a logout): kept by the hash of the cookie."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import ended_sessions


async def end(
    conn: Connection, session_hash: str, credential_id: int, expires_at: datetime, now: datetime
) -> None:
    """Write the session down as ended (again: nothing changes), and forget the ended sessions that
    have expired since: their cookies are refused for their expiry alone."""
    await conn.execute(ended_sessions.delete().where(ended_sessions.c.expires_at <= now))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    await conn.execute(
        insert(ended_sessions)
        .values(session_hash=session_hash, credential_id=credential_id, expires_at=expires_at, ended_at=now)
        .on_conflict_do_nothing(index_elements=["session_hash"])
    )


async def ended(conn: Connection, session_hash: str) -> bool:
    found = await conn.execute(sa.select(sa.literal(1)).where(ended_sessions.c.session_hash == session_hash))
    return found.first() is not None


async def all_(conn: Connection) -> list[dict[str, object]]:
    """Every ended session's row (what a restore carries over, store/backup_carry.py)."""
    return [dict(row._mapping) for row in await conn.execute(sa.select(ended_sessions))]
