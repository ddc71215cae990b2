"""Counts per UTC day for the dashboard's trends: issues opened, issues closed, messages sent."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import issues, messages


def _day(conn: Connection, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """The UTC day of a timestamp as YYYY-MM-DD. SQLite stores UTC timestamps as text that starts
    with the day (`UTCDateTime`), so its first ten characters are cheaper than strftime."""
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")
    return sa.func.substr(column, 1, 10)


async def _per_day(
    conn: Connection, table: sa.Table, column: sa.ColumnElement[Any], project_id: int, since: datetime
) -> dict[date, int]:
    day = _day(conn, column).label("day")
    q = (
        sa.select(day, sa.func.count().label("n"))
        .where(table.c.project_id == project_id, column >= since)
        .group_by(day)
    )
    return {date.fromisoformat(r.day): int(r.n) for r in await conn.execute(q)}


async def opened(conn: Connection, project_id: int, since: datetime) -> dict[date, int]:
    return await _per_day(conn, issues, issues.c.created_at, project_id, since)


async def closed(conn: Connection, project_id: int, since: datetime) -> dict[date, int]:
    """Issues by the day they were finished (done or closed), as far as they still are."""
    return await _per_day(conn, issues, issues.c.closed_at, project_id, since)


async def sent(conn: Connection, project_id: int, since: datetime) -> dict[date, int]:
    return await _per_day(conn, messages, messages.c.created_at, project_id, since)
