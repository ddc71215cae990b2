"""The event log: append inside the caller's transaction, read in id order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from vibe_ensemble.domain.models import Event
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, records
from vibe_ensemble.store.tables import events, projects

if TYPE_CHECKING:
    import asyncpg

# PostgreSQL: the advisory lock that orders event ids by commit, and the channel
# that tells other replicas that new events were committed.
EVENT_LOCK_KEY = 0x56494245  # "VIBE"
NOTIFY_CHANNEL = "vibe_events"


@dataclass
class NewEvent:
    type: str
    actor: str
    payload: dict[str, Any]
    project_id: int | None


async def append(conn: Connection, now: datetime, new: Sequence[NewEvent]) -> list[int]:
    """Append events as the last step of a write transaction; returns their ids.

    On PostgreSQL a transaction-level advisory lock is taken first, so ids are
    committed in order and a reader that saw id N will never later find a
    smaller one. Call this last in a transaction, after all row locks are held.
    """
    if not new:
        return []
    postgres = conn.dialect.name == "postgresql"
    if postgres and len(new) == 1:  # the usual case: lock, insert and notify in one round trip
        ev = new[0]
        row = {"time": now, "project_id": ev.project_id, "type": ev.type, "actor": ev.actor}
        params = {**row, "payload": ev.payload, "k": EVENT_LOCK_KEY, "c": NOTIFY_CHANNEL}
        return [(await conn.execute(_LOCK_INSERT_NOTIFY, params)).scalar_one()]
    if postgres:
        await conn.execute(_ORDER_LOCK, {"k": EVENT_LOCK_KEY})
    ids: list[int] = []
    for ev in new:
        row = {"time": now, "project_id": ev.project_id, "type": ev.type, "actor": ev.actor}
        ids.append((await conn.execute(_INSERT, {**row, "payload": ev.payload})).scalar_one())
    if postgres:
        await conn.execute(_NOTIFY, {"c": NOTIFY_CHANNEL, "p": str(ids[-1])})
    return ids


_INSERT = Prepared.insert_row(events)
_ORDER_LOCK = Prepared(sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("k", type_=sa.BigInteger))))
_NOTIFY = Prepared(
    sa.select(sa.func.pg_notify(sa.bindparam("c", type_=sa.Text), sa.bindparam("p", type_=sa.Text)))
)


def _lock_insert_notify() -> Prepared:
    """One event on PostgreSQL in one statement: the order lock first (the insert reads from it, so
    its id is drawn after the lock is held), then the row, then the notification of its id."""
    lock = sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("k", type_=sa.BigInteger)).label("held")).cte(
        "ordered"
    )
    columns = ["time", "project_id", "type", "actor", "payload"]
    values = [sa.bindparam(name, type_=events.c[name].type) for name in columns]
    inserted = (
        events.insert()
        .from_select(columns, sa.select(*values).select_from(lock))
        .returning(events.c.id)
        .cte("inserted")
    )
    notify = sa.func.pg_notify(sa.bindparam("c", type_=sa.Text), sa.cast(inserted.c.id, sa.Text))
    return Prepared(sa.select(inserted.c.id, notify.label("notified")))


_LOCK_INSERT_NOTIFY = _lock_insert_notify()


async def newest_id_on_listener(conn: asyncpg.Connection) -> int:
    """The newest event id (0 for none), on the raw asyncpg connection that LISTENs (events/bridge.py)."""
    newest = await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {events.name}")  # noqa: S608  # nosec B608
    return int(newest)


def _select() -> sa.Select[Any]:
    return sa.select(events, projects.c.slug).select_from(
        events.outerjoin(projects, events.c.project_id == projects.c.id)
    )


_AFTER = Prepared(
    _select().where(events.c.id > sa.bindparam("after_id")).order_by(events.c.id).limit(sa.bindparam("limit"))
)


def _to_event(row: sa.Row[Any]) -> Event:
    return Event(
        id=row.id,
        time=row.time,
        project=row.slug,
        type=row.type,
        actor=row.actor,
        payload=row.payload,
    )


async def after(
    conn: Connection,
    after_id: int,
    *,
    project_ids: Sequence[int] | None = None,
    types: Sequence[str] | None = None,
    limit: int = 100,
) -> list[Event]:
    """Events with id > after_id, oldest first; filtered by projects and type prefixes."""
    if project_ids is None and not types:  # the live feeds' shared window (events/feed.py), per commit
        return [
            _to_event(r) for r in records(await conn.execute(_AFTER, {"after_id": after_id, "limit": limit}))
        ]
    q = _select().where(events.c.id > after_id)
    if project_ids is not None:
        q = q.where(events.c.project_id.in_(project_ids))
    if types:
        q = q.where(sa.or_(*(_type_matches(t) for t in types)))
    rows = await conn.execute(q.order_by(events.c.id).limit(limit))
    return [_to_event(r) for r in rows]


async def recent(
    conn: Connection,
    *,
    project_ids: Sequence[int] | None = None,
    types: Sequence[str] | None = None,
    limit: int = 20,
) -> list[Event]:
    """The newest events, newest first; filtered like `after`."""
    q = _select()
    if project_ids is not None:
        q = q.where(events.c.project_id.in_(project_ids))
    if types:
        q = q.where(sa.or_(*(_type_matches(t) for t in types)))
    rows = await conn.execute(q.order_by(events.c.id.desc()).limit(limit))
    return [_to_event(r) for r in rows]


def _type_matches(pattern: str) -> sa.ColumnElement[bool]:
    """`issue.*` matches every issue event; anything else matches exactly."""
    if pattern.endswith(".*"):
        return events.c.type.startswith(pattern[:-1], autoescape=True)
    return events.c.type == pattern


async def last_id(conn: Connection) -> int:
    return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)))).scalar_one())


async def about_agent(conn: Connection, project_id: int, name: str, *, limit: int) -> list[Event]:
    """A project's newest events done by, or about, the agent of this name (its `actor`, or its
    payload's `agent`), newest first."""
    q = _select().where(
        events.c.project_id == project_id,
        sa.or_(events.c.actor == name, events.c.payload["agent"].as_string() == name),
    )
    rows = await conn.execute(q.order_by(events.c.id.desc()).limit(limit))
    return [_to_event(r) for r in rows]
