"""Agents."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vibe_ensemble.domain.enums import AgentRole, AgentStatus
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.models import Agent
from vibe_ensemble.store.tables import agents, projects


def select_agents() -> sa.Select[Any]:
    return sa.select(agents, projects.c.slug).join(projects, agents.c.project_id == projects.c.id)


def to_agent(row: sa.Row[Any]) -> Agent:
    return Agent(
        id=row.id,
        project=row.slug,
        name=row.name,
        role=AgentRole(row.role),
        status=AgentStatus(row.status),
        capabilities=list(row.capabilities),
        program=row.program,
        model=row.model,
        description=row.description,
        activity=row.activity,
        registered_at=row.registered_at,
        last_seen=row.last_seen,
        retired_at=row.retired_at,
    )


async def find(conn: AsyncConnection, project_id: int, name: str) -> Agent | None:
    row = (
        await conn.execute(select_agents().where(agents.c.project_id == project_id, agents.c.name == name))
    ).first()
    return None if row is None else to_agent(row)


async def get(conn: AsyncConnection, project_id: int, name: str, *, active: bool = True) -> Agent:
    """The agent named `name`; registered (and, when `active`, not retired)."""
    agent = await find(conn, project_id, name)
    if agent is None:
        raise NotFound(
            f"agent {name!r} is not registered in this project; call register_agent first", agent=name
        )
    if active and agent.retired_at is not None:
        raise NotFound(f"agent {name!r} is retired; register again to come back", agent=name)
    return agent


async def by_id(conn: AsyncConnection, agent_id: int) -> Agent:
    row = (await conn.execute(select_agents().where(agents.c.id == agent_id))).one()
    return to_agent(row)


async def names(conn: AsyncConnection, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await conn.execute(sa.select(agents.c.id, agents.c.name).where(agents.c.id.in_(ids)))
    return {r.id: r.name for r in rows}


async def active_ids(
    conn: AsyncConnection, project_id: int, *, role: AgentRole | None = None
) -> list[tuple[int, str]]:
    q = sa.select(agents.c.id, agents.c.name).where(
        agents.c.project_id == project_id, agents.c.retired_at.is_(None)
    )
    if role is not None:
        q = q.where(agents.c.role == role.value)
    return [(r.id, r.name) for r in await conn.execute(q.order_by(agents.c.id))]
