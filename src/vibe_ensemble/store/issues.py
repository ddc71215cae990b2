"""Issues: reading them (one, a page, the lists the board and briefings show) and writing them.

Their dependencies and readiness live in store/dependencies.py, their comments in store/comments.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.enums import IssueStatus, Priority, by_value
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.models import Issue
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.dependencies import (
    blocked_or_open_and,
    dependencies_of,
    ready_clause,
    unfinished,
    waiting_on_dependencies,
)
from vibe_ensemble.store.prepared import Prepared, changed, records, tuples
from vibe_ensemble.store.tables import agents, issues, json_array_contains, projects

_assignee = agents.alias("assignee")

_STATUSES = by_value(IssueStatus)
_PRIORITIES = by_value(Priority)


# An issue's columns as `Issue` shows them: `label_keys` is for matching in SQL, never read back
_SHOWN = [c for c in issues.c if c.name != "label_keys"]


def _select() -> sa.Select[Any]:
    return (
        sa.select(*_SHOWN, projects.c.slug, _assignee.c.name.label("assignee_name"))
        .join(projects, issues.c.project_id == projects.c.id)
        .outerjoin(_assignee, issues.c.assignee_id == _assignee.c.id)
    )


def _to_issue(row: sa.Row[Any], deps: list[int]) -> Issue:
    return Issue(
        id=row.id,
        project=row.slug,
        title=row.title,
        body=row.body,
        status=_STATUSES[row.status],
        priority=_PRIORITIES[row.priority],
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


async def _load(
    conn: Connection, query: sa.Select[Any] | Prepared, parameters: dict[str, Any] | None = None
) -> list[Issue]:
    (found,) = await _load_lists(conn, [(query, parameters)])
    return found


async def _load_lists(
    conn: Connection, queries: Sequence[tuple[sa.Select[Any] | Prepared, dict[str, Any] | None]]
) -> list[list[Issue]]:
    """The issues of each query, with the dependencies of all of them read in one statement."""
    found = [records(await conn.execute(query, parameters)) for query, parameters in queries]
    deps = await dependencies_of(conn, (r.id for rows in found for r in rows))
    return [[_to_issue(r, deps.get(r.id, [])) for r in rows] for rows in found]


_BY_ID = Prepared(
    _select().where(issues.c.id == sa.bindparam("id"), issues.c.project_id == sa.bindparam("project_id"))
)


async def get(conn: Connection, project_id: int, issue_id: int) -> Issue:
    found = await _load(conn, _BY_ID, {"id": issue_id, "project_id": project_id})
    if not found:
        raise NotFound(f"issue {issue_id} does not exist in this project", id=issue_id)
    return found[0]


# Locks an issue's row until the transaction ends (PostgreSQL; SQLite's writes are serial already):
# a read-check-write of an issue (update, close) takes it first, so concurrent ones queue behind each
# other, each reading what the one before committed. The read is a statement of its own after the
# lock: a locking read that waited re-reads only the locked row, not the rows joined to it (the
# assignee's name would be the one before the wait).
_LOCK = Prepared(sa.select(issues.c.id).where(issues.c.id == sa.bindparam("id")).with_for_update())


async def get_for_update(conn: Connection, project_id: int, issue_id: int) -> Issue:
    """`get`, with the issue's row locked for the rest of the transaction (see `_LOCK`)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"id": issue_id})
    return await get(conn, project_id, issue_id)


_EXISTING = Prepared(
    sa.select(issues.c.id).where(
        issues.c.id.in_(sa.bindparam("ids", expanding=True)),
        issues.c.project_id == sa.bindparam("project_id"),
    )
)


async def existing_ids(conn: Connection, project_id: int, ids: Iterable[int]) -> set[int]:
    ids = list(ids)
    if not ids:
        return set()
    return {r[0] for r in tuples(await conn.execute(_EXISTING, {"ids": ids, "project_id": project_id}))}


_BY_IDS = Prepared(
    _select().where(issues.c.id.in_(sa.bindparam("ids", expanding=True))).order_by(issues.c.id)
)


MAX_PARENT_DEPTH = 10_000  # a bound on the walk up, so rows written before the cycle check end it


async def parent_chain(conn: Connection, issue_id: int) -> list[int]:
    """`issue_id`, its parent, the parent's parent, … up to the root (one recursive query)."""
    up = (
        sa.select(issues.c.id, issues.c.parent_id, sa.literal(0).label("depth"))
        .where(issues.c.id == issue_id)
        .cte("up", recursive=True)
    )
    up = up.union_all(
        sa.select(issues.c.id, issues.c.parent_id, (up.c.depth + 1).label("depth"))
        .join(up, issues.c.id == up.c.parent_id)
        .where(up.c.depth < MAX_PARENT_DEPTH)
    )
    rows = await conn.execute(sa.select(up.c.id).order_by(up.c.depth))
    return [r.id for r in rows]


async def by_ids(conn: Connection, ids: Iterable[int]) -> list[Issue]:
    """The issues with these ids, in id order."""
    return await _load(conn, _BY_IDS, {"ids": list(ids)})


_READY_IN = Prepared(
    _select()
    .where(issues.c.project_id == sa.bindparam("project_id"), ready_clause())
    .order_by(issues.c.priority, issues.c.id)
    .limit(sa.bindparam("limit"))
)


async def ready_in(conn: Connection, project_id: int, *, limit: int) -> list[Issue]:
    """Ready issues of a project, best first (priority, then age)."""
    return await _load(conn, _READY_IN, {"project_id": project_id, "limit": limit})


# What labels are matched by: their case folds; an issue the release before migration 0011 wrote
# has none (NULL), and is matched by its labels as written.
_label_keys = sa.func.coalesce(issues.c.label_keys, issues.c.labels)


def _labelled_with_any(dialect: str) -> sa.ColumnElement[bool]:
    """True for an issue with a label whose key is among the `keys` parameter (a non-empty list)."""
    key: sa.ColumnElement[Any]
    if dialect == "postgresql":
        key = sa.func.jsonb_array_elements_text(_label_keys).column_valued("key")
    else:
        key = sa.func.json_each(_label_keys).table_valued("value").c.value
    return sa.select(key).where(key.in_(sa.bindparam("keys", expanding=True))).exists()


# How many of the project's ready issues (the first by priority, then age) a claim ranks by the
# agent's capabilities: the cost of a claim grows with this window, never with the table (100,000
# ready issues ranked whole cost a claim a scan of them all).
READY_WINDOW = 1000


def _ready_for(dialect: str) -> Prepared:
    window = (
        sa.select(issues.c.id)
        .where(issues.c.project_id == sa.bindparam("project_id"), ready_clause())
        .order_by(issues.c.priority, issues.c.id)
        .limit(READY_WINDOW)
        .scalar_subquery()
    )
    return Prepared(
        _select()
        .where(issues.c.id.in_(window))
        .order_by(sa.case((_labelled_with_any(dialect), 0), else_=1), issues.c.priority, issues.c.id)
        .limit(sa.bindparam("limit"))
    )


_READY_FOR = {dialect: _ready_for(dialect) for dialect in ("sqlite", "postgresql")}


async def ready_for(conn: Connection, project_id: int, capabilities: list[str], *, limit: int) -> list[Issue]:
    """Ready issues of a project, best first for an agent with these capabilities: of the first
    READY_WINDOW by priority and age, those labelled with one of them first (letter case ignored:
    `rules.label_key`), then by priority, then age."""
    keys = rules.label_keys(capabilities)
    if not keys:
        return await ready_in(conn, project_id, limit=limit)
    parameters = {"project_id": project_id, "keys": keys, "limit": limit}
    return await _load(conn, _READY_FOR[conn.dialect.name], parameters)


_UNFINISHED_OF = Prepared(
    _select()
    .where(issues.c.assignee_id == sa.bindparam("agent_id"), unfinished(issues.c.status))
    .order_by(issues.c.priority, issues.c.id)
)


async def unfinished_of(conn: Connection, agent_id: int) -> list[Issue]:
    """Issues assigned to an agent and not yet done or closed, best first."""
    return await _load(conn, _UNFINISHED_OF, {"agent_id": agent_id})


async def unfinished_and_ready(
    conn: Connection, agent_id: int, project_id: int, *, limit: int
) -> tuple[list[Issue], list[Issue]]:
    """`unfinished_of` the agent and `ready_in` the project (a heartbeat's two lists), their
    dependencies read in one statement rather than one for each list."""
    mine, ready = await _load_lists(
        conn,
        [
            (_UNFINISHED_OF, {"agent_id": agent_id}),
            (_READY_IN, {"project_id": project_id, "limit": limit}),
        ],
    )
    return mine, ready


@dataclass(frozen=True)
class Filter:
    """What `page` selects: every field is optional; `after` is the last (priority, id) or id seen."""

    status: IssueStatus | None = None
    assignee: str | None = None
    label: str | None = None
    query: str | None = None
    ready: bool | None = None
    after: tuple[Priority, int] | int | None = None


def _escaped(text: str) -> str:
    """`text` for a LIKE pattern whose ESCAPE is "/": its "%", "_" and "/" taken as themselves (what
    SQLAlchemy's `autoescape` does to a literal string, which a statement built once cannot hold)."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


@functools.cache  # one statement per filter shape and database: at most 2 x 2 x 2 x 2 x 3 x 3 each
def _page_of(
    dialect: str, status: bool, assignee: bool, label: bool, query: bool, ready: bool | None, after: str
) -> Prepared:
    """The statement `page` runs for a filter of this shape (which fields are given, `after` "",
    "id" or "priority"), its values bind parameters: built and compiled once, not per call (building
    the readiness test alone cost a list of ready issues ~1 ms a call)."""
    q = _select().where(issues.c.project_id == sa.bindparam("project_id"))
    if status:
        q = q.where(issues.c.status == sa.bindparam("status"))
    if assignee:
        q = q.where(_assignee.c.name == sa.bindparam("assignee"))
    if label:
        key = sa.bindparam("label", type_=sa.String)
        q = q.where(json_array_contains(dialect, _label_keys, key))
    if query:
        pattern = sa.bindparam("query", type_=sa.String)
        q = q.where(
            sa.or_(
                issues.c.title.icontains(pattern, escape="/"), issues.c.body.icontains(pattern, escape="/")
            )
        )
    if ready is not None:
        q = q.where(ready_clause() if ready else ~ready_clause())
    if after == "priority":
        last = sa.tuple_(
            sa.bindparam("after_priority", type_=issues.c.priority.type),
            sa.bindparam("after_id", type_=issues.c.id.type),
        )
        q = q.where(sa.tuple_(issues.c.priority, issues.c.id) > last)
    elif after == "id":
        q = q.where(issues.c.id > sa.bindparam("after_id"))
    order = (issues.c.priority, issues.c.id) if ready else (issues.c.id,)
    return Prepared(q.order_by(*order).limit(sa.bindparam("limit")))


async def page(conn: Connection, project_id: int, where: Filter, *, limit: int) -> list[Issue]:
    """Issues matching `where`, in id order (ready ones: by priority, then age), at most `limit`."""
    parameters: dict[str, Any] = {"project_id": project_id, "limit": limit}
    if where.status is not None:
        parameters["status"] = where.status.value
    if where.assignee is not None:
        parameters["assignee"] = where.assignee
    if where.label is not None:
        parameters["label"] = rules.label_key(where.label)
    if where.query:
        parameters["query"] = _escaped(where.query)
    after = ""
    if isinstance(where.after, tuple):
        after = "priority"
        parameters["after_priority"], parameters["after_id"] = where.after[0].value, where.after[1]
    elif where.after is not None:
        after = "id"
        parameters["after_id"] = where.after
    statement = _page_of(
        conn.dialect.name,
        where.status is not None,
        where.assignee is not None,
        where.label is not None,
        bool(where.query),
        where.ready,
        after,
    )
    return await _load(conn, statement, parameters)


_GIVEN = (
    "project_id",
    "title",
    "body",
    "priority",
    "labels",
    "label_keys",
    "assignee_id",
    "parent_id",
    "created_by",
)
_INSERT = Prepared(
    issues.insert()
    .values({c: sa.bindparam(c) for c in _GIVEN})
    .values(
        status=IssueStatus.OPEN.value,
        version=1,
        created_at=sa.bindparam("now"),
        updated_at=sa.bindparam("now"),
    )
    .returning(issues.c.id)
)


async def insert(
    conn: Connection,
    *,
    project_id: int,
    title: str,
    body: str,
    priority: Priority,
    labels: list[str],
    assignee_id: int | None,
    parent_id: int | None,
    created_by: str,
    now: datetime,
) -> int:
    """A new open issue at version 1; returns its id."""
    row = {
        "project_id": project_id,
        "title": title,
        "body": body,
        "priority": priority.value,
        "labels": labels,
        "label_keys": rules.label_keys(labels),
        "assignee_id": assignee_id,
        "parent_id": parent_id,
        "created_by": created_by,
        "now": now,
    }
    return int((await conn.execute(_INSERT, row)).scalar_one())


@functools.cache  # one statement per set of columns written (the callers write a few fixed sets)
def _update_of(columns: tuple[str, ...]) -> Prepared:
    values: dict[str, Any] = {c: sa.bindparam(c) for c in columns}
    return Prepared(
        issues.update()
        .where(issues.c.id == sa.bindparam("issue_id"), issues.c.version == sa.bindparam("read_version"))
        .values(version=sa.bindparam("read_version") + 1, updated_at=sa.bindparam("now"), **values)
    )


async def update(conn: Connection, issue: Issue, now: datetime, **values: Any) -> bool:
    """Write `values` over `issue` and bump its version; False when it is no longer at `issue.version`."""
    if "labels" in values:  # the keys the labels are matched by go with them, always
        values["label_keys"] = rules.label_keys(values["labels"])
    parameters = {**values, "issue_id": issue.id, "read_version": issue.version, "now": now}
    result = await conn.execute(_update_of(tuple(sorted(values))), parameters)
    return changed(result) == 1


_TAKE = Prepared(
    issues.update()
    .where(
        issues.c.id == sa.bindparam("issue_id"),
        issues.c.assignee_id.is_(None),
        issues.c.status == IssueStatus.OPEN.value,
        issues.c.version == sa.bindparam("read_version"),
    )
    .values(
        status=IssueStatus.IN_PROGRESS.value,
        version=sa.bindparam("read_version") + 1,
        updated_at=sa.bindparam("now"),
    )
)


async def take(conn: Connection, issue: Issue, now: datetime) -> bool:
    """The atomic step of a claim: only an open, unassigned issue at the version read can be taken."""
    result = await conn.execute(_TAKE, {"issue_id": issue.id, "read_version": issue.version, "now": now})
    return changed(result) == 1


_ASSIGN = Prepared(
    issues.update()
    .where(issues.c.id == sa.bindparam("issue_id"))
    .values(assignee_id=sa.bindparam("agent_id"))
)


async def assign(conn: Connection, issue_id: int, agent_id: int) -> None:
    await conn.execute(_ASSIGN, {"issue_id": issue_id, "agent_id": agent_id})


# What a retired agent leaves: its open, in-progress and blocked issues. A released one (still
# registered) leaves only what it has in progress.
ALL_UNFINISHED = (IssueStatus.OPEN, IssueStatus.IN_PROGRESS, IssueStatus.BLOCKED)
IN_PROGRESS_ONLY = (IssueStatus.IN_PROGRESS,)


async def unassign(
    conn: Connection, agent_id: int, now: datetime, *, statuses: tuple[IssueStatus, ...]
) -> list[int]:
    """The agent's issues in `statuses`, unassigned (in progress back to open), for another agent to
    claim; returns their ids, sorted."""
    in_progress = issues.c.status == IssueStatus.IN_PROGRESS.value
    rows = await conn.execute(
        issues.update()
        .where(issues.c.assignee_id == agent_id, issues.c.status.in_([s.value for s in statuses]))
        .values(
            assignee_id=None,
            status=sa.case((in_progress, IssueStatus.OPEN.value), else_=issues.c.status),
            version=issues.c.version + 1,
            updated_at=now,
        )
        .returning(issues.c.id)
    )
    return sorted(r.id for r in rows)


def _with_status(finished: bool) -> Prepared:
    q = _select().where(
        issues.c.project_id == sa.bindparam("project_id"), issues.c.status == sa.bindparam("status")
    )
    if finished:
        q = q.order_by(issues.c.updated_at.desc(), issues.c.id.desc())
    else:
        q = q.order_by(issues.c.priority, issues.c.id)
    return Prepared(q.limit(sa.bindparam("limit")))


_WITH_STATUS = {finished: _with_status(finished) for finished in (False, True)}


async def with_status(conn: Connection, project_id: int, status: IssueStatus, *, limit: int) -> list[Issue]:
    """Issues of one status: finished ones most recently changed first, the others best first."""
    parameters = {"project_id": project_id, "status": status.value, "limit": limit}
    return await _load(conn, _WITH_STATUS[status.finished], parameters)


def _blocked_or_open_and(condition: sa.ColumnElement[bool]) -> Prepared:
    """A project's issues marked blocked, or open and meeting `condition`, best first, at most `limit`."""
    return Prepared(
        _select()
        .where(issues.c.project_id == sa.bindparam("project_id"), blocked_or_open_and(condition))
        .order_by(issues.c.priority, issues.c.id)
        .limit(sa.bindparam("limit"))
    )


_BLOCKED_IN = _blocked_or_open_and(waiting_on_dependencies())
_WAITING_IN = _blocked_or_open_and(sa.not_(ready_clause()))


async def blocked_in(conn: Connection, project_id: int, *, limit: int) -> list[Issue]:
    """Issues marked blocked, or open and waiting on unfinished dependencies, best first."""
    return await _load(conn, _BLOCKED_IN, {"project_id": project_id, "limit": limit})


_COUNT_BY_STATUS = Prepared(
    sa.select(issues.c.status, sa.func.count().label("n"))
    .where(issues.c.project_id == sa.bindparam("project_id"))
    .group_by(issues.c.status)
)


async def count_by_status(conn: Connection, project_id: int) -> dict[str, int]:
    rows = records(await conn.execute(_COUNT_BY_STATUS, {"project_id": project_id}))
    return {r.status: int(r.n) for r in rows}


async def waiting_in(conn: Connection, project_id: int, *, limit: int) -> list[Issue]:
    """Issues marked blocked, or open but not ready (assigned, or waiting on dependencies), best first."""
    return await _load(conn, _WAITING_IN, {"project_id": project_id, "limit": limit})
