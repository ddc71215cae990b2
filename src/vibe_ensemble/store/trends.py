"""Counts per UTC day for the dashboard's trends: issues opened, issues closed (in all and by agent),
messages sent."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import agents, issues, messages


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


async def finished_by(conn: Connection, project_id: int, since: datetime) -> dict[str, dict[date, int]]:
    """Issues finished (done or closed, as far as they still are) per day, by the agent they are
    assigned to; issues finished without an assignee are not counted."""
    day = _day(conn, issues.c.closed_at).label("day")
    q = (
        sa.select(agents.c.name, day, sa.func.count().label("n"))
        .join(agents, agents.c.id == issues.c.assignee_id)
        .where(issues.c.project_id == project_id, issues.c.closed_at >= since)
        .group_by(agents.c.name, day)
    )
    found: dict[str, dict[date, int]] = {}
    for r in await conn.execute(q):
        found.setdefault(r.name, {})[date.fromisoformat(r.day)] = int(r.n)
    return found
