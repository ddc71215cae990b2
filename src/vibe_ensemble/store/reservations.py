"""Reservations (leases on paths and named resources)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.models import Reservation
from vibe_ensemble.store.database import Connection
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
        issue=row.issue_id,
    )


def live(now: datetime) -> sa.ColumnElement[bool]:
    """A lease is held until released or expired; readers never see an expired one."""
    return sa.and_(reservations.c.released_at.is_(None), reservations.c.expires_at > now)


async def held_by(
    conn: Connection, agent_id: int, now: datetime, *, until: datetime | None = None
) -> list[Reservation]:
    q = select_reservations().where(reservations.c.agent_id == agent_id, live(now))
    if until is not None:
        q = q.where(reservations.c.expires_at <= until)
    rows = await conn.execute(q.order_by(reservations.c.expires_at))
    return [to_reservation(r) for r in rows]


async def release_all(conn: Connection, agent_id: int, now: datetime) -> int:
    result = await conn.execute(
        reservations.update().where(reservations.c.agent_id == agent_id, live(now)).values(released_at=now)
    )
    return result.rowcount


async def live_in_project(conn: Connection, project_id: int, now: datetime) -> list[Reservation]:
    q = select_reservations().where(reservations.c.project_id == project_id, live(now))
    rows = await conn.execute(q.order_by(reservations.c.id))
    return [to_reservation(r) for r in rows]


async def live_by_id(
    conn: Connection, project_id: int, reservation_id: int, now: datetime
) -> Reservation | None:
    """The project's lease with this id while it is live (None when released, expired or elsewhere)."""
    q = select_reservations().where(
        reservations.c.id == reservation_id, reservations.c.project_id == project_id, live(now)
    )
    row = (await conn.execute(q)).first()
    return None if row is None else to_reservation(row)


async def by_ids(conn: Connection, ids: list[int]) -> list[Reservation]:
    if not ids:
        return []
    rows = await conn.execute(
        select_reservations().where(reservations.c.id.in_(ids)).order_by(reservations.c.id)
    )
    return [to_reservation(r) for r in rows]


async def insert(
    conn: Connection,
    *,
    project_id: int,
    agent_id: int,
    pattern: str,
    exclusive: bool,
    reason: str,
    issue: int | None,
    now: datetime,
    expires_at: datetime,
) -> int:
    result = await conn.execute(
        reservations.insert()
        .values(
            project_id=project_id,
            agent_id=agent_id,
            pattern=pattern,
            exclusive=exclusive,
            reason=reason,
            issue_id=issue,
            created_at=now,
            expires_at=expires_at,
        )
        .returning(reservations.c.id)
    )
    return int(result.scalar_one())


async def renew(
    conn: Connection,
    reservation_id: int,
    *,
    exclusive: bool,
    reason: str,
    issue: int | None,
    expires_at: datetime,
) -> None:
    await conn.execute(
        reservations.update()
        .where(reservations.c.id == reservation_id)
        .values(exclusive=exclusive, reason=reason, issue_id=issue, expires_at=expires_at)
    )


async def release(conn: Connection, ids: list[int], now: datetime) -> None:
    if ids:
        await conn.execute(reservations.update().where(reservations.c.id.in_(ids)).values(released_at=now))


async def expired(conn: Connection, now: datetime) -> list[tuple[int, Reservation]]:
    """Leases past their expiry that were never released, with their project ids."""
    q = select_reservations().where(reservations.c.released_at.is_(None), reservations.c.expires_at <= now)
    rows = await conn.execute(q.order_by(reservations.c.id))
    return [(r.project_id, to_reservation(r)) for r in rows]


async def mark_expired(conn: Connection, ids: list[int]) -> None:
    """Record that expired leases ended at their expiry time."""
    if ids:
        await conn.execute(
            reservations.update()
            .where(reservations.c.id.in_(ids), reservations.c.released_at.is_(None))
            .values(released_at=reservations.c.expires_at)
        )


# PostgreSQL: reserve transactions of one project queue behind this lock (class key, project id).
# The two-key form lives in a key space apart from the single-key event lock in store.events.
RESERVATION_LOCK_CLASS = 0x5645  # "VE"


async def lock_project(conn: Connection, project_id: int) -> None:
    """Serialise lease decisions per project. Take it first in the transaction, before reading leases.

    On SQLite the single writer (BEGIN IMMEDIATE) already serialises every write transaction.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:c, :p)"),
            {"c": RESERVATION_LOCK_CLASS, "p": project_id % 2_147_483_647},
        )
