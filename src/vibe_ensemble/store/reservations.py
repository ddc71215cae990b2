"""Reservations (leases on paths and named resources)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.models import Reservation
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, first_record, records, tuples
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


def live(now: datetime | sa.BindParameter[datetime]) -> sa.ColumnElement[bool]:
    """A lease is held until released or expired; readers never see an expired one."""
    return sa.and_(reservations.c.released_at.is_(None), reservations.c.expires_at > now)


# Live as of the statement's `now` parameter, for the prepared reads below.
_LIVE_NOW = live(sa.bindparam("now"))


def _held_by(*, until: bool) -> Prepared:
    q = select_reservations().where(reservations.c.agent_id == sa.bindparam("agent_id"), _LIVE_NOW)
    if until:
        q = q.where(reservations.c.expires_at <= sa.bindparam("until"))
    return Prepared(q.order_by(reservations.c.expires_at))


_HELD_BY = {False: _held_by(until=False), True: _held_by(until=True)}


async def held_by(
    conn: Connection, agent_id: int, now: datetime, *, until: datetime | None = None
) -> list[Reservation]:
    """The agent's live leases (expiring by `until`, when given), soonest to expire first."""
    parameters = {"agent_id": agent_id, "now": now, "until": until}
    rows = await conn.execute(_HELD_BY[until is not None], parameters)
    return [to_reservation(r) for r in records(rows)]


_HELD_OF = Prepared(
    select_reservations()
    .where(
        reservations.c.agent_id == sa.bindparam("agent_id"),
        reservations.c.pattern.in_(sa.bindparam("patterns", expanding=True)),
        _LIVE_NOW,
    )
    .order_by(reservations.c.expires_at)
)


async def held_of(conn: Connection, agent_id: int, now: datetime, patterns: list[str]) -> list[Reservation]:
    """The agent's live leases on exactly these patterns (what a reservation of them renews, a
    release ends), soonest to expire first."""
    rows = await conn.execute(_HELD_OF, {"agent_id": agent_id, "now": now, "patterns": patterns})
    return [to_reservation(r) for r in records(rows)]


async def release_all(conn: Connection, agent_id: int, now: datetime) -> int:
    result = await conn.execute(
        reservations.update().where(reservations.c.agent_id == agent_id, live(now)).values(released_at=now)
    )
    return result.rowcount


_LIVE_IN_PROJECT = Prepared(
    select_reservations()
    .where(reservations.c.project_id == sa.bindparam("project_id"), _LIVE_NOW)
    .order_by(reservations.c.id)
)


async def live_in_project(conn: Connection, project_id: int, now: datetime) -> list[Reservation]:
    rows = await conn.execute(_LIVE_IN_PROJECT, {"project_id": project_id, "now": now})
    return [to_reservation(r) for r in records(rows)]


# A project's live leases as narrow rows (no dates, no joins): what a reservation or a check
# sifts by pattern before it reads whole leases (`by_ids`) for the few that may stand in its way.
_LIVE_PATTERNS = Prepared(
    sa.select(
        reservations.c.id, reservations.c.agent_id, reservations.c.pattern, reservations.c.exclusive
    ).where(reservations.c.project_id == sa.bindparam("project_id"), _LIVE_NOW)
)


async def live_patterns(conn: Connection, project_id: int, now: datetime) -> list[tuple[int, int, str, bool]]:
    """Each live lease of the project as (id, agent_id, pattern, exclusive)."""
    return tuples(await conn.execute(_LIVE_PATTERNS, {"project_id": project_id, "now": now}))


_LIVE_BY_ID = Prepared(
    select_reservations().where(
        reservations.c.id == sa.bindparam("id"),
        reservations.c.project_id == sa.bindparam("project_id"),
        _LIVE_NOW,
    )
)


async def live_by_id(
    conn: Connection, project_id: int, reservation_id: int, now: datetime
) -> Reservation | None:
    """The project's lease with this id while it is live (None when released, expired or elsewhere)."""
    parameters = {"id": reservation_id, "project_id": project_id, "now": now}
    row = first_record(await conn.execute(_LIVE_BY_ID, parameters))
    return None if row is None else to_reservation(row)


_BY_IDS = Prepared(
    select_reservations()
    .where(reservations.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(reservations.c.id)
)


async def by_ids(conn: Connection, ids: list[int]) -> list[Reservation]:
    if not ids:
        return []
    return [to_reservation(r) for r in records(await conn.execute(_BY_IDS, {"ids": ids}))]


_WRITTEN = ("project_id", "agent_id", "pattern", "exclusive", "reason", "issue_id", "created_at")
_INSERT = Prepared(
    reservations.insert()
    .values({c: sa.bindparam(c) for c in (*_WRITTEN, "expires_at")})
    .returning(reservations.c.id)
)


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
    row = {
        "project_id": project_id,
        "agent_id": agent_id,
        "pattern": pattern,
        "exclusive": exclusive,
        "reason": reason,
        "issue_id": issue,
        "created_at": now,
        "expires_at": expires_at,
    }
    return int((await conn.execute(_INSERT, row)).scalar_one())


_RENEW = Prepared(
    reservations.update()
    .where(reservations.c.id == sa.bindparam("id"))
    .values({c: sa.bindparam(c) for c in ("exclusive", "reason", "issue_id", "expires_at")})
)


async def renew(
    conn: Connection,
    reservation_id: int,
    *,
    exclusive: bool,
    reason: str,
    issue: int | None,
    expires_at: datetime,
) -> None:
    row = {"id": reservation_id, "exclusive": exclusive, "reason": reason, "issue_id": issue}
    await conn.execute(_RENEW, {**row, "expires_at": expires_at})


_RELEASE = Prepared(
    reservations.update()
    .where(reservations.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(released_at=sa.bindparam("now"))
)


async def release(conn: Connection, ids: list[int], now: datetime) -> None:
    if ids:
        await conn.execute(_RELEASE, {"ids": ids, "now": now})


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
