"""The database server's clock, for `doctor` to compare with this machine's."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection


async def server_now(conn: Connection) -> datetime | None:
    """PostgreSQL's `now()`; None on SQLite, whose only clock is this machine's."""
    if conn.dialect.name != "postgresql":
        return None
    now: datetime = (await conn.execute(sa.text("SELECT now()"))).scalar_one()
    return now
