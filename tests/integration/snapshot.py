"""Every row of every table, to prove that a refused change changed nothing."""

from __future__ import annotations

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection, Database
from vibe_ensemble.store.tables import metadata

Snapshot = dict[str, list[str]]


async def snapshot(db: Database) -> Snapshot:
    """The content of each table, rows in a stable order, as text.

    The audit log is left out: recording a refused attempt there is a feature, not a change. So is a
    token's `last_used_at`: a request writes it beside itself, in a task of its own, whether it is
    refused or not (TokenService._used), and it may land after the request has been answered.
    """
    out: Snapshot = {}
    async with db.read() as conn:
        for table in metadata.sorted_tables:
            if table.name == "audit_log":
                continue
            columns = [c for c in table.c if (table.name, c.name) != ("credentials", "last_used_at")]
            rows = await conn.execute(sa.select(*columns).order_by(*columns))
            out[table.name] = [repr(tuple(r)) for r in rows]
    return out


async def count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return await count_in(conn, table)


async def count_in(conn: Connection, table: sa.Table) -> int:
    """The rows of a table as this connection (and its transaction) sees them."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
