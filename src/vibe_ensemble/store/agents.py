"""Agents."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import AgentRole, AgentStatus, by_value
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.models import Agent
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, changed, first_record, records
from vibe_ensemble.store.tables import agents, projects

_ROLES = by_value(AgentRole)
_STATUSES = by_value(AgentStatus)


# An agent's columns as `Agent` shows them: `resume_status` is read only when it comes back
_SHOWN = [c for c in agents.c if c.name != "resume_status"]


def _select() -> sa.Select[Any]:
    return sa.select(*_SHOWN, projects.c.slug).join(projects, agents.c.project_id == projects.c.id)


def _to_agent(row: sa.Row[Any]) -> Agent:
    return Agent(
        id=row.id,
        project=row.slug,
        name=row.name,
        role=_ROLES[row.role],
        status=_STATUSES[row.status],
        capabilities=list(row.capabilities),
        program=row.program,
        model=row.model,
        description=row.description,
        activity=row.activity,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        retired_at=row.retired_at,
    )


_by_name = _select().where(
    agents.c.project_id == sa.bindparam("project_id"), agents.c.name == sa.bindparam("name")
)
_BY_NAME = Prepared(_by_name)


# PostgreSQL: the same row, locked against a retirement (and any other change to it) until the
# transaction ends. `FOR NO KEY UPDATE OF agents`: the agent's row alone, never the project's.
_BY_NAME_LOCKED = Prepared(_by_name.with_for_update(key_share=True, of=agents))


async def find(conn: Connection, project_id: int, name: str, *, lock: bool = False) -> Agent | None:
    """The agent named `name` in the project (retired ones too), or None.

    With `lock`, on PostgreSQL its row stays locked until the transaction ends: for a write that
    gives the agent something a retirement takes back (a lease, an issue). A retirement updates
    that row first, so the two serialise: the write waits for a retirement under way and then
    finds the agent retired, or the retirement waits for the write and then releases what it
    gave. (Read at READ COMMITTED without it, a lease could be granted by an agent whose retirement
    committed a moment before, and outlive it.) SQLite's writes are serial already.
    """
    statement = _BY_NAME_LOCKED if lock and conn.dialect.name == "postgresql" else _BY_NAME
    row = first_record(await conn.execute(statement, {"project_id": project_id, "name": name}))
    return None if row is None else _to_agent(row)


_CASE_TWIN = Prepared(
    sa.select(agents.c.name)
    .where(
        agents.c.project_id == sa.bindparam("project_id"),
        sa.func.lower(agents.c.name) == sa.bindparam("lowered"),
        agents.c.name != sa.bindparam("name"),
    )
    .limit(1)
)


_NAME_LOCK = Prepared(
    sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtextextended(sa.bindparam("key", type_=sa.Text), 0)))
)


async def lock_name(conn: Connection, project_id: int, name: str) -> None:
    """Lock `name`'s lower-case form in the project until the transaction ends, so two registrations
    of `Alice` and `alice` at once cannot both find no `case_twin` (PostgreSQL; SQLite's writes are
    serial already)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_NAME_LOCK, {"key": f"agent-name:{project_id}:{name.lower()}"})


async def case_twin(conn: Connection, project_id: int, name: str) -> str | None:
    """An agent of the project (retired ones too) whose name differs from `name` only in letter case
    (names are ASCII, so `lower` means the same on both databases)."""
    params = {"project_id": project_id, "lowered": name.lower(), "name": name}
    return (await conn.execute(_CASE_TWIN, params)).scalar()


_BY_NAMES = Prepared(
    _select().where(
        agents.c.project_id == sa.bindparam("project_id"),
        agents.c.name.in_(sa.bindparam("names", expanding=True)),
    )
)


async def find_many(conn: Connection, project_id: int, names: list[str]) -> dict[str, Agent]:
    """The agents of the project among `names`, by name, in one statement (one round trip however
    many names: a message's sender and recipients)."""
    if not names:
        return {}
    rows = records(await conn.execute(_BY_NAMES, {"project_id": project_id, "names": names}))
    return {row.name: _to_agent(row) for row in rows}


async def get(
    conn: Connection, project_id: int, name: str, *, active: bool = True, lock: bool = False
) -> Agent:
    """The agent named `name`; registered (and, when `active`, not retired). `lock`: see `find`."""
    return registered(await find(conn, project_id, name, lock=lock), name, active=active)


def registered(agent: Agent | None, name: str, *, active: bool = True) -> Agent:
    """`agent` (found by `name`) when registered and, when `active`, not retired; else NotFound."""
    if agent is None:
        raise NotFound(
            f"agent {name!r} is not registered in this project; call register_agent first", agent=name
        )
    if active and agent.retired_at is not None:
        raise NotFound(f"agent {name!r} is retired; a coordinator or admin can reinstate it", agent=name)
    return agent


async def by_id(conn: Connection, agent_id: int) -> Agent:
    row = (await conn.execute(_select().where(agents.c.id == agent_id))).one()
    return _to_agent(row)


def _active_ids(*, role: bool) -> Prepared:
    q = sa.select(agents.c.id, agents.c.name).where(
        agents.c.project_id == sa.bindparam("project_id"), agents.c.retired_at.is_(None)
    )
    if role:
        q = q.where(agents.c.role == sa.bindparam("role"))
    return Prepared(q.order_by(agents.c.id))


_ACTIVE_IDS = {False: _active_ids(role=False), True: _active_ids(role=True)}


async def active_ids(
    conn: Connection, project_id: int, *, role: AgentRole | None = None
) -> list[tuple[int, str]]:
    parameters: dict[str, Any] = {"project_id": project_id}
    if role is not None:
        parameters["role"] = role.value
    rows = records(await conn.execute(_ACTIVE_IDS[role is not None], parameters))
    return [(r.id, r.name) for r in rows]


@functools.cache  # one statement per shape of filter: at most 2 x 2 x 2
def _in_project_of(role: bool, status: bool, include_retired: bool) -> Prepared:
    q = _select().where(agents.c.project_id == sa.bindparam("project_id"))
    if role:
        q = q.where(agents.c.role == sa.bindparam("role"))
    if status:
        q = q.where(agents.c.status == sa.bindparam("status"))
    if not include_retired:
        q = q.where(agents.c.retired_at.is_(None))
    return Prepared(q.order_by(agents.c.name))


async def in_project(
    conn: Connection,
    project_id: int,
    *,
    role: AgentRole | None = None,
    status: AgentStatus | None = None,
    include_retired: bool = False,
) -> list[Agent]:
    """The project's agents by name, active ones only unless `include_retired`."""
    parameters: dict[str, Any] = {"project_id": project_id}
    if role is not None:
        parameters["role"] = role.value
    if status is not None:
        parameters["status"] = status.value
    statement = _in_project_of(role is not None, status is not None, include_retired)
    return [_to_agent(r) for r in records(await conn.execute(statement, parameters))]


async def insert(conn: Connection, project_id: int, name: str, now: datetime, **values: Any) -> None:
    await conn.execute(agents.insert().values(project_id=project_id, name=name, registered_at=now, **values))


def _seen(*, activity: bool) -> Prepared:
    values: dict[str, sa.BindParameter[Any]] = {
        "last_seen": sa.bindparam("now"),
        "status": sa.bindparam("status"),
    }
    if activity:
        values["activity"] = sa.bindparam("activity")
    # never a retired agent's: its status stays what its retirement set
    where = (agents.c.id == sa.bindparam("id"), agents.c.retired_at.is_(None))
    return Prepared(agents.update().where(*where).values(values))


_SEEN = {False: _seen(activity=False), True: _seen(activity=True)}


async def seen(conn: Connection, agent_id: int, now: datetime, status: str, activity: str | None) -> None:
    """A heartbeat: the agent was seen now, in this status (doing `activity`, when given)."""
    parameters = {"id": agent_id, "now": now, "status": status, "activity": activity}
    await conn.execute(_SEEN[activity is not None], parameters)


# An agent heard from (any call acting as it): seen now, unless it is retired, or offline (whose
# return changes its status: `resume_status`, then `seen`), or was seen later already (another
# replica's clock).
_HEARD = Prepared(
    agents.update()
    .where(
        agents.c.project_id == sa.bindparam("project_id"),
        agents.c.name == sa.bindparam("name"),
        agents.c.retired_at.is_(None),
        agents.c.status != AgentStatus.OFFLINE.value,
        agents.c.last_seen < sa.bindparam("now"),
    )
    .values(last_seen=sa.bindparam("now"))
)


async def heard(conn: Connection, project_id: int, name: str, now: datetime) -> bool:
    """Mark the agent seen now (one statement); False when that changed nothing: it is unknown,
    retired, offline, or was seen at `now` or later already."""
    parameters = {"project_id": project_id, "name": name, "now": now}
    return changed(await conn.execute(_HEARD, parameters)) == 1


_RESUME_STATUS = Prepared(sa.select(agents.c.resume_status).where(agents.c.id == sa.bindparam("id")))


async def resume_status(conn: Connection, agent_id: int) -> AgentStatus:
    """The status an offline agent returns to when heard from: the one it had when the presence
    sweep set it offline; idle when none was kept (retired, or offline before migration 0012)."""
    kept = (await conn.execute(_RESUME_STATUS, {"id": agent_id})).scalar()
    found = _STATUSES.get(kept) if kept else None
    return AgentStatus.IDLE if found is None or found == AgentStatus.OFFLINE else found


async def go_offline(conn: Connection, agent_id: int, before: datetime) -> bool:
    """The presence sweep: set the agent offline, keeping the status it had (`resume_status`), if it
    is still silent since `before` and not offline already; False when it was heard from meanwhile
    (a call or a heartbeat that committed after the sweep read it, on another connection)."""
    result = await conn.execute(
        agents.update()
        .where(
            agents.c.id == agent_id,
            agents.c.status != AgentStatus.OFFLINE.value,
            agents.c.last_seen < before,
        )
        .values(status=AgentStatus.OFFLINE.value, resume_status=agents.c.status)
    )
    return changed(result) == 1


async def update(conn: Connection, agent_id: int, **values: Any) -> None:
    await conn.execute(agents.update().where(agents.c.id == agent_id).values(**values))


async def retire(conn: Connection, agent_id: int, now: datetime) -> None:
    await update(conn, agent_id, retired_at=now, status=AgentStatus.OFFLINE.value, resume_status=None)


async def silent_since(conn: Connection, before: datetime) -> list[tuple[int, Agent]]:
    """Active agents not yet offline last seen (heard from) before `before`, with their project id."""
    rows = await conn.execute(
        _select().where(
            agents.c.retired_at.is_(None),
            agents.c.status != AgentStatus.OFFLINE.value,
            agents.c.last_seen < before,
        )
    )
    return [(r.project_id, _to_agent(r)) for r in rows]


async def idle_since(conn: Connection, before: datetime) -> list[tuple[int, Agent]]:
    """Active agents last seen (heard from) before `before`, with their project id."""
    rows = await conn.execute(_select().where(agents.c.retired_at.is_(None), agents.c.last_seen < before))
    return [(r.project_id, _to_agent(r)) for r in rows]
