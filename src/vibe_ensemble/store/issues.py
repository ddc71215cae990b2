"""Issues, their dependencies and comments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vibe_ensemble.domain.enums import IssueStatus, Priority
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.models import Comment, Issue
from vibe_ensemble.store.tables import agents, comments, issue_dependencies, issues, projects

FINISHED = (IssueStatus.DONE.value, IssueStatus.CLOSED.value)

_assignee = agents.alias("assignee")


def select_issues() -> sa.Select[Any]:
    return (
        sa.select(issues, projects.c.slug, _assignee.c.name.label("assignee_name"))
        .join(projects, issues.c.project_id == projects.c.id)
        .outerjoin(_assignee, issues.c.assignee_id == _assignee.c.id)
    )


def _to_issue(row: sa.Row[Any], deps: list[int]) -> Issue:
    return Issue(
        id=row.id,
        project=row.slug,
        title=row.title,
        body=row.body,
        status=IssueStatus(row.status),
        priority=Priority(row.priority),
        labels=list(row.labels),
        assignee=row.assignee_name,
        parent=row.parent_id,
        depends_on=deps,
        created_by=row.created_by,
        resolution=row.resolution,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def dependencies_of(conn: AsyncConnection, ids: Iterable[int]) -> dict[int, list[int]]:
    ids = list(ids)
    out: dict[int, list[int]] = defaultdict(list)
    if not ids:
        return out
    rows = await conn.execute(
        sa.select(issue_dependencies)
        .where(issue_dependencies.c.issue_id.in_(ids))
        .order_by(issue_dependencies.c.depends_on_id)
    )
    for r in rows:
        out[r.issue_id].append(r.depends_on_id)
    return out


async def load(conn: AsyncConnection, query: sa.Select[Any]) -> list[Issue]:
    rows = list(await conn.execute(query))
    deps = await dependencies_of(conn, (r.id for r in rows))
    return [_to_issue(r, deps.get(r.id, [])) for r in rows]


async def get(conn: AsyncConnection, project_id: int, issue_id: int) -> Issue:
    found = await load(
        conn, select_issues().where(issues.c.id == issue_id, issues.c.project_id == project_id)
    )
    if not found:
        raise NotFound(f"issue {issue_id} does not exist in this project", id=issue_id)
    return found[0]


async def existing_ids(conn: AsyncConnection, project_id: int, ids: Iterable[int]) -> set[int]:
    ids = list(ids)
    if not ids:
        return set()
    rows = await conn.execute(
        sa.select(issues.c.id).where(issues.c.id.in_(ids), issues.c.project_id == project_id)
    )
    return {r.id for r in rows}


async def dependency_graph(conn: AsyncConnection, project_id: int) -> dict[int, list[int]]:
    rows = await conn.execute(
        sa.select(issue_dependencies)
        .join(issues, issues.c.id == issue_dependencies.c.issue_id)
        .where(issues.c.project_id == project_id)
    )
    graph: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        graph[r.issue_id].append(r.depends_on_id)
    return graph


def unfinished_dependency_exists() -> sa.Exists:
    """True for an issue that still waits on an open dependency."""
    dep = issues.alias("dep")
    return (
        sa.select(issue_dependencies.c.depends_on_id)
        .join(dep, dep.c.id == issue_dependencies.c.depends_on_id)
        .where(issue_dependencies.c.issue_id == issues.c.id, dep.c.status.not_in(FINISHED))
        .exists()
    )


def ready_clause() -> sa.ColumnElement[bool]:
    """An issue is ready when open, unassigned and every dependency is done or closed."""
    return sa.and_(
        issues.c.status == IssueStatus.OPEN.value,
        issues.c.assignee_id.is_(None),
        ~unfinished_dependency_exists(),
    )


async def is_ready(conn: AsyncConnection, issue_id: int) -> bool:
    row = (await conn.execute(sa.select(issues.c.id).where(issues.c.id == issue_id, ready_clause()))).first()
    return row is not None


async def dependants(conn: AsyncConnection, issue_id: int) -> list[int]:
    rows = await conn.execute(
        sa.select(issue_dependencies.c.issue_id).where(issue_dependencies.c.depends_on_id == issue_id)
    )
    return [r.issue_id for r in rows]


async def comments_of(conn: AsyncConnection, issue_id: int) -> list[Comment]:
    rows = await conn.execute(
        sa.select(comments).where(comments.c.issue_id == issue_id).order_by(comments.c.id)
    )
    return [
        Comment(id=r.id, issue_id=r.issue_id, author=r.author, body=r.body, created_at=r.created_at)
        for r in rows
    ]
