"""Every row of every table, to prove that a refused change changed nothing."""

from __future__ import annotations

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection, Database
from vibe_ensemble.store.tables import metadata

Snapshot = dict[str, list[str]]


async def snapshot(db: Database) -> Snapshot:
    """The content of each table, rows in a stable order, as text.

    The audit log is left out: recording a refused attempt there is a feature, not a change.
    """
    out: Snapshot = {}
    async with db.read() as conn:
        for table in metadata.sorted_tables:
            if table.name == "audit_log":
                continue
            rows = await conn.execute(sa.select(table).order_by(*table.c))
            out[table.name] = [repr(tuple(r)) for r in rows]
    return out


async def count(db: Database, table: sa.Table) -> int:
    async with db.read() as conn:
        return await count_in(conn, table)


async def count_in(conn: Connection, table: sa.Table) -> int:
    """The rows of a table as this connection (and its transaction) sees them."""
    return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())
