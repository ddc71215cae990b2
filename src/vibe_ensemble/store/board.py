"""The reads behind the dashboard's board: a few cards per column, and how many each column has."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.models import Issue
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store.tables import issues

_BY_PRIORITY = (issues.c.priority, issues.c.id)
_NEWEST = (issues.c.updated_at.desc(), issues.c.id.desc())


async def status_counts(conn: AsyncConnection, project_id: int) -> dict[str, int]:
    """Issues per status, and how many are ready (`"ready"`)."""
    rows = await conn.execute(
        sa.select(issues.c.status, sa.func.count().label("n"))
        .where(issues.c.project_id == project_id)
        .group_by(issues.c.status)
    )
    counts = {r.status: int(r.n) for r in rows}
    ready = (
        sa.select(sa.func.count())
        .select_from(issues)
        .where(issues.c.project_id == project_id, issue_store.ready_clause())
    )
    counts["ready"] = int((await conn.execute(ready)).scalar_one())
    return counts


async def ready(conn: AsyncConnection, project_id: int, limit: int) -> list[Issue]:
    """Ready issues (open, unassigned, every dependency finished), most urgent first."""
    q = issue_store.select_issues().where(issues.c.project_id == project_id, issue_store.ready_clause())
    return await issue_store.load(conn, q.order_by(*_BY_PRIORITY).limit(limit))


async def waiting(conn: AsyncConnection, project_id: int, limit: int) -> list[Issue]:
    """Issues marked blocked, or open but not ready (assigned, or waiting on dependencies)."""
    q = issue_store.select_issues().where(
        issues.c.project_id == project_id,
        sa.or_(
            issues.c.status == IssueStatus.BLOCKED.value,
            sa.and_(issues.c.status == IssueStatus.OPEN.value, sa.not_(issue_store.ready_clause())),
        ),
    )
    return await issue_store.load(conn, q.order_by(*_BY_PRIORITY).limit(limit))


async def with_status(
    conn: AsyncConnection, project_id: int, statuses: list[IssueStatus], limit: int, *, newest: bool = False
) -> list[Issue]:
    """Issues in these statuses: most urgent first, or (`newest`) most recently changed first.

    One query per status, so each walks the index on (project, status, …) in order and stops early.
    """
    found: list[Issue] = []
    for status in statuses:
        q = issue_store.select_issues().where(
            issues.c.project_id == project_id, issues.c.status == status.value
        )
        found += await issue_store.load(conn, q.order_by(*(_NEWEST if newest else _BY_PRIORITY)).limit(limit))
    if newest:
        found.sort(key=lambda i: (i.updated_at, i.id), reverse=True)
    else:
        found.sort(key=lambda i: (i.priority.value, i.id))
    return found[:limit]
