"""Dependencies between issues, and readiness.

An issue is ready when it is open, unassigned and every issue it depends on is done or closed;
`ready_clause` says so in SQL for store/issues.py's lists too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa

from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, tuples
from vibe_ensemble.store.tables import issue_dependencies, issues

FINISHED = (IssueStatus.DONE.value, IssueStatus.CLOSED.value)


_DEPENDENCIES_OF = Prepared(
    sa.select(issue_dependencies)
    .where(issue_dependencies.c.issue_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(issue_dependencies.c.depends_on_id)
)


async def dependencies_of(conn: Connection, ids: Iterable[int]) -> dict[int, list[int]]:
    return await _by_issue(conn, _DEPENDENCIES_OF, ids)


async def _by_issue(conn: Connection, statement: Prepared, ids: Iterable[int]) -> dict[int, list[int]]:
    """The (issue_id, depends_on_id) rows of `statement` for these issues, by issue."""
    ids = sorted(set(ids))
    out: dict[int, list[int]] = defaultdict(list)
    if not ids:
        return out
    for r in await conn.execute(statement, {"ids": ids}):
        out[r.issue_id].append(r.depends_on_id)
    return out


async def dependency_graph(conn: Connection, project_id: int) -> dict[int, list[int]]:
    rows = await conn.execute(
        sa.select(issue_dependencies)
        .join(issues, issues.c.id == issue_dependencies.c.issue_id)
        .where(issues.c.project_id == project_id)
    )
    graph: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        graph[r.issue_id].append(r.depends_on_id)
    return graph


_ADD = Prepared(
    issue_dependencies.insert().values(
        issue_id=sa.bindparam("issue_id"), depends_on_id=sa.bindparam("depends_on_id")
    )
)
_CLEAR = Prepared(
    issue_dependencies.delete().where(issue_dependencies.c.issue_id == sa.bindparam("issue_id"))
)


async def add_dependencies(conn: Connection, issue_id: int, depends_on: list[int]) -> None:
    if depends_on:
        await conn.execute(_ADD, [{"issue_id": issue_id, "depends_on_id": d} for d in depends_on])


async def replace_dependencies(conn: Connection, issue_id: int, depends_on: list[int]) -> None:
    await conn.execute(_CLEAR, {"issue_id": issue_id})
    await add_dependencies(conn, issue_id, depends_on)


_DEPENDANTS = Prepared(
    sa.select(issue_dependencies.c.issue_id).where(issue_dependencies.c.depends_on_id == sa.bindparam("id"))
)


async def dependants(conn: Connection, issue_id: int) -> list[int]:
    return [r.issue_id for r in await conn.execute(_DEPENDANTS, {"id": issue_id})]


# Locks that keep "an issue in progress has finished dependencies" true under READ COMMITTED
# (PostgreSQL; SQLite compiles them without the lock clause, its writes being serial). A claim or a
# start reads its dependencies' statuses FOR SHARE; a change of an issue's status reads it FOR UPDATE
# (store/issues.get_for_update), so the two queue behind each other whichever comes first. Locks are
# taken upstream first: dependencies before their dependant, so no two transactions wait in a ring.
_STATUSES_FOR_SHARE = Prepared(
    sa.select(issues.c.id, issues.c.status)
    .where(issues.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(issues.c.id)
    .with_for_update(read=True)
)


async def statuses_for_share(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """The statuses of these issues (dependencies), each row share-locked until the transaction ends."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    return {r.id: r.status for r in await conn.execute(_STATUSES_FOR_SHARE, {"ids": ids})}


_DEPENDENCIES_FOR_SHARE = Prepared(
    sa.select(issues.c.id)
    .join(issue_dependencies, issue_dependencies.c.depends_on_id == issues.c.id)
    .where(issue_dependencies.c.issue_id == sa.bindparam("id"))
    .order_by(issues.c.id)
    .with_for_update(read=True, of=issues)
)


async def lock_dependencies(conn: Connection, issue_id: int) -> None:
    """Share-lock the rows of the issues `issue_id` depends on, before its own row is locked (an
    update starting it: upstream first, as a close locks the closed issue, then its dependants)."""
    await conn.execute(_DEPENDENCIES_FOR_SHARE, {"id": issue_id})


_DEPENDANTS_FOR_UPDATE = Prepared(
    sa.select(issues.c.id)
    .join(issue_dependencies, issue_dependencies.c.issue_id == issues.c.id)
    .where(issue_dependencies.c.depends_on_id == sa.bindparam("id"))
    .order_by(issues.c.id)
    .with_for_update(of=issues)
)


async def dependants_for_update(conn: Connection, issue_id: int) -> list[int]:
    """The issues depending on `issue_id`, their rows locked in id order: two closes of an issue's
    last two dependencies at once queue here, so the second sees the first's close and finds it ready."""
    return [r.id for r in await conn.execute(_DEPENDANTS_FOR_UPDATE, {"id": issue_id})]


_IN_PROGRESS_DEPENDANTS = Prepared(
    sa.select(issues.c.id)
    .join(issue_dependencies, issue_dependencies.c.issue_id == issues.c.id)
    .where(
        issue_dependencies.c.depends_on_id == sa.bindparam("id"),
        issues.c.status == IssueStatus.IN_PROGRESS.value,
    )
    .order_by(issues.c.id)
)


async def in_progress_dependants(conn: Connection, issue_id: int) -> list[int]:
    """The issues in progress that depend on `issue_id`."""
    return [r.id for r in await conn.execute(_IN_PROGRESS_DEPENDANTS, {"id": issue_id})]


def unfinished(status: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
    """Neither done nor closed: one comparison per finished status, the statuses written into the
    statement as constants (a `NOT IN` list would be expanded at each run on SQLite and sent as an
    array parameter on PostgreSQL: store/prepared.py)."""
    return sa.and_(*(status != s for s in FINISHED))


_UNFINISHED_DEPENDENCIES_OF = Prepared(
    sa.select(issue_dependencies.c.issue_id, issue_dependencies.c.depends_on_id)
    .join(issues, issues.c.id == issue_dependencies.c.depends_on_id)
    .where(
        issue_dependencies.c.issue_id.in_(sa.bindparam("ids", expanding=True)),
        unfinished(issues.c.status),
    )
    .order_by(issue_dependencies.c.issue_id, issue_dependencies.c.depends_on_id)
)


async def unfinished_dependencies_of(conn: Connection, ids: Iterable[int]) -> dict[int, list[int]]:
    """What each of these issues still waits on: its dependencies that are neither done nor closed
    (an issue waiting on nothing is absent). What a list shows as "waits on"; `depends_on` keeps
    every dependency, finished ones too."""
    return await _by_issue(conn, _UNFINISHED_DEPENDENCIES_OF, ids)


def waiting_on_dependencies() -> sa.Exists:
    """True for an issue that still waits on an open dependency."""
    dep = issues.alias("dep")
    return (
        sa.select(issue_dependencies.c.depends_on_id)
        .join(dep, dep.c.id == issue_dependencies.c.depends_on_id)
        .where(issue_dependencies.c.issue_id == issues.c.id, unfinished(dep.c.status))
        .exists()
    )


def ready_clause() -> sa.ColumnElement[bool]:
    """An issue is ready when open, unassigned and every dependency is done or closed."""
    return sa.and_(
        issues.c.status == IssueStatus.OPEN.value,
        issues.c.assignee_id.is_(None),
        ~waiting_on_dependencies(),
    )


_IS_READY = Prepared(sa.select(issues.c.id).where(issues.c.id == sa.bindparam("id"), ready_clause()))


async def is_ready(conn: Connection, issue_id: int) -> bool:
    return (await conn.execute(_IS_READY, {"id": issue_id})).first() is not None


_READY_IDS = Prepared(
    sa.select(issues.c.id).where(issues.c.project_id == sa.bindparam("project_id"), ready_clause())
)


async def ready_ids(conn: Connection, project_id: int) -> set[int]:
    return {r[0] for r in tuples(await conn.execute(_READY_IDS, {"project_id": project_id}))}


_READY_COUNT = Prepared(
    sa.select(sa.func.count())
    .select_from(issues)
    .where(issues.c.project_id == sa.bindparam("project_id"), ready_clause())
)


async def ready_count(conn: Connection, project_id: int) -> int:
    """How many issues of a project are ready."""
    return int((await conn.execute(_READY_COUNT, {"project_id": project_id})).scalar_one())


def blocked_or_open_and(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """The issue is marked blocked, or open and meets `condition`: with `waiting_on_dependencies()`
    what `store/issues.blocked_in` lists and `blocked_count` counts."""
    return sa.or_(
        issues.c.status == IssueStatus.BLOCKED.value,
        sa.and_(issues.c.status == IssueStatus.OPEN.value, condition),
    )


_BLOCKED_COUNT = Prepared(
    sa.select(sa.func.count())
    .select_from(issues)
    .where(issues.c.project_id == sa.bindparam("project_id"), blocked_or_open_and(waiting_on_dependencies()))
)


async def blocked_count(conn: Connection, project_id: int) -> int:
    """How many issues `store/issues.blocked_in` would list without a limit."""
    return int((await conn.execute(_BLOCKED_COUNT, {"project_id": project_id})).scalar_one())
