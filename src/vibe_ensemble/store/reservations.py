"""Reservations (leases on paths and named resources)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vibe_ensemble.domain.models import Reservation
from vibe_ensemble.store.tables import agents, projects, reservations


def select_reservations() -> sa.Select[Any]:
    return (
        sa.select(reservations, agents.c.name.label("holder"), projects.c.slug)
        .join(agents, reservations.c.agent_id == agents.c.id)
        .join(projects, reservations.c.project_id == projects.c.id)
    )


def to_reservation(row: sa.Row[Any]) -> Reservation:
    return Reservation(
        id=row.id,
        project=row.slug,
        holder=row.holder,
        pattern=row.pattern,
        exclusive=row.exclusive,
        reason=row.reason,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def live(now: datetime) -> sa.ColumnElement[bool]:
    """A lease is held until released or expired; readers never see an expired one."""
    return sa.and_(reservations.c.released_at.is_(None), reservations.c.expires_at > now)


async def held_by(
    conn: AsyncConnection, agent_id: int, now: datetime, *, until: datetime | None = None
) -> list[Reservation]:
    q = select_reservations().where(reservations.c.agent_id == agent_id, live(now))
    if until is not None:
        q = q.where(reservations.c.expires_at <= until)
    rows = await conn.execute(q.order_by(reservations.c.expires_at))
    return [to_reservation(r) for r in rows]


async def release_all(conn: AsyncConnection, agent_id: int, now: datetime) -> int:
    result = await conn.execute(
        reservations.update().where(reservations.c.agent_id == agent_id, live(now)).values(released_at=now)
    )
    return result.rowcount
