"""The issues of a project's dependency graph: the unfinished ones (most urgent first, up to a cap),
the finished ones they depend on, and the dependencies between them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.attention import IssueRef
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import agents, issue_dependencies, issues

_FINISHED = (IssueStatus.DONE.value, IssueStatus.CLOSED.value)
_assignee = agents.alias("graph_assignee")


def _refs() -> sa.Select[Any]:
    return sa.select(
        issues.c.id, issues.c.title, issues.c.status, issues.c.priority, _assignee.c.name.label("assignee")
    ).outerjoin(_assignee, issues.c.assignee_id == _assignee.c.id)


def _to_ref(row: sa.Row[Any]) -> IssueRef:
    return IssueRef(row.id, row.title, IssueStatus(row.status), row.priority, row.assignee)


async def unfinished(conn: Connection, project_id: int, *, limit: int) -> tuple[list[IssueRef], int]:
    """Up to `limit` unfinished issues, most urgent first, and how many there are in all."""
    open_ = sa.and_(issues.c.project_id == project_id, issues.c.status.not_in(_FINISHED))
    total = int((await conn.execute(sa.select(sa.func.count()).where(open_))).scalar_one())
    rows = await conn.execute(_refs().where(open_).order_by(issues.c.priority, issues.c.id).limit(limit))
    return [_to_ref(r) for r in rows], total


async def dependencies(conn: Connection, ids: Iterable[int]) -> dict[int, list[int]]:
    """What each of these issues depends on."""
    ids = list(ids)
    out: dict[int, list[int]] = defaultdict(list)
    if not ids:
        return out
    rows = await conn.execute(sa.select(issue_dependencies).where(issue_dependencies.c.issue_id.in_(ids)))
    for r in rows:
        out[r.issue_id].append(r.depends_on_id)
    return out


async def refs(conn: Connection, project_id: int, ids: Iterable[int]) -> list[IssueRef]:
    ids = list(ids)
    if not ids:
        return []
    rows = await conn.execute(_refs().where(issues.c.id.in_(ids), issues.c.project_id == project_id))
    return [_to_ref(r) for r in rows]
