"""The event log: append inside the caller's transaction, read in id order."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from vibe_ensemble.domain.events import EVERY_READER
from vibe_ensemble.domain.models import Event
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, records
from vibe_ensemble.store.tables import events, projects

if TYPE_CHECKING:
    import asyncpg

# PostgreSQL: the advisory lock that orders event ids, and the channel that tells every replica
# that events were given their ids.
EVENT_LOCK_KEY = 0x56494245  # "VIBE"
NOTIFY_CHANNEL = "vibe_events"


@dataclass
class NewEvent:
    type: str
    actor: str
    payload: dict[str, Any]
    project_id: int | None


async def append(conn: Connection, now: datetime, new: Sequence[NewEvent]) -> int | None:
    """Append events as the last step of a write transaction.

    Readers follow the log by id (`after`), so ids must become visible in id order: a reader that
    saw id N must never later find a smaller one. SQLite has one writer, so ids are drawn in commit
    order; this returns the newest id, for the caller to publish once it has committed.

    PostgreSQL's writers run at once, so an event is inserted here with a provisional (negative)
    id, which no reader reads, and given its id after its transaction has committed, by
    `order_pending` (events/sequencer.py runs it). This returns None there: the ids are known
    to the listeners (events/bridge.py), this process's own included, once they are given.
    Nothing here makes the writer wait for another: its commit takes no lock of the event log
    and sends no NOTIFY (PostgreSQL holds a NOTIFY's queue lock through the commit's WAL flush),
    so concurrent writers' commits flush together.
    """
    if not new:
        return None
    rows = [
        {"time": now, "project_id": ev.project_id, "type": ev.type, "actor": ev.actor, "payload": ev.payload}
        for ev in new
    ]
    if conn.dialect.name == "postgresql":
        await conn.execute(_INSERT_PROVISIONAL, rows if len(rows) > 1 else rows[0])
        return None
    newest = 0
    for row in rows:
        newest = (await conn.execute(_INSERT, row)).scalar_one()
    return int(newest)


_INSERT = Prepared.insert_row(events)

ORDER_TRIGGER = "events_ordered_at_commit"  # migration 0008's; dropped by 0017
ORDER_FUNCTION = "vibe_events_ordered_at_commit"
ORDER_PENDING_FUNCTION = "vibe_events_order_pending"  # migration 0017's
PROVISIONAL_SEQUENCE = "events_provisional_id_seq"  # provisional ids are its values, negated

# PostgreSQL: a new event's provisional id (also written by store/messages.py's one-statement send)
PROVISIONAL_ID = sa.literal_column(f"-nextval('{PROVISIONAL_SEQUENCE}')", events.c.id.type)
_INSERT_PROVISIONAL = Prepared(
    events.insert().values(
        {
            events.c.id: PROVISIONAL_ID,
            **{c: sa.bindparam(c.name) for c in events.c if c.name != "id"},
        }
    )
)
ORDERED = events.c.id > 0  # what readers read: on PostgreSQL, the events given their ids


def events_sequence(conn: sa.Connection) -> str:
    """PostgreSQL: the name of the events' own id sequence (the one `order_pending_ddl` draws from)."""
    return str(conn.execute(sa.text("SELECT pg_get_serial_sequence('events', 'id')")).scalar_one())


def order_pending_ddl(sequence: str, *, index_scan: bool = True) -> list[str]:
    """PostgreSQL (migrations 0017 and 0020): the function that gives committed events their ids.

    `vibe_events_order_pending()` takes the event-order lock (held to the end of its own commit,
    so ids become visible in id order), then gives every committed event still holding a
    provisional id the next id from the events' own sequence (`sequence`), oldest provisional id
    first, so one transaction's events keep their order. It sends one `NOTIFY vibe_events,
    '<newest id>'` when it gave any, delivered once it has committed, and returns that id (0 for
    none). Each statement in it reads what was committed before that statement began, so a call
    that waited for the lock sees every event committed before it took the lock.

    `index_scan` (0020): the function runs with sequential and bitmap scans off (its own settings,
    restored as it returns), so its search for the waiting events reads the primary key backwards
    from 0 whatever the table's statistics say. Its plan is made on a connection's first call,
    often before PostgreSQL has gathered them (a new database, or a log that grew since): it then
    guessed that a third of the rows hold negative ids, read every row of the log and sorted what
    it found, and each round read more as the log grew (10.5 ms a round at 100,000 events against
    1.0 ms, bench/RESULTS.md). An index scan also marks the entries of events already ordered
    dead, which the next scan skips. Without it (0017's), the function is as 0017 made it.
    """
    # Every name and number below is this module's constant, `sequence` the catalog's answer.
    planned = "\nSET enable_seqscan = off SET enable_bitmapscan = off" if index_scan else ""
    return [
        f"""CREATE OR REPLACE FUNCTION {ORDER_PENDING_FUNCTION}() RETURNS bigint LANGUAGE plpgsql{planned}
AS $fn$
DECLARE
    pending bigint;
    ordered bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock({EVENT_LOCK_KEY});
    FOR pending IN SELECT id FROM {events.name} WHERE id < 0 ORDER BY id DESC LOOP
        ordered := nextval('{sequence}'::regclass);
        UPDATE {events.name} SET id = ordered WHERE id = pending;
    END LOOP;
    IF ordered > 0 THEN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', ordered::text);
    END IF;
    RETURN ordered;
END
$fn$""",  # noqa: S608  # nosec B608
    ]


def drop_order_pending_ddl() -> list[str]:
    return [f"DROP FUNCTION IF EXISTS {ORDER_PENDING_FUNCTION}()"]


_ORDER_PENDING = Prepared(sa.select(getattr(sa.func, ORDER_PENDING_FUNCTION)(type_=sa.BigInteger)))


async def order_pending(conn: Connection) -> int:
    """PostgreSQL: give the committed events that wait for an id their ids (`order_pending_ddl`);
    the newest id given, 0 for none. One statement: run it on a connection without a transaction
    (`Database.write(one_statement=True)`), so the lock is held only while it commits."""
    return int((await conn.execute(_ORDER_PENDING)).scalar_one())


def order_at_commit_ddl(sequence: str) -> list[str]:
    """PostgreSQL (migration 0008, and 0017's downgrade): the deferred trigger that gave each new
    event its id as its transaction committed.

    An event is inserted with a negative provisional id (`PROVISIONAL_SEQUENCE`, never a final
    id). The trigger ran in COMMIT, before the commit record was written: it took the event-order
    lock (held to the end of the commit, so ids became visible in order), drew the event's id from
    the events' own sequence (`sequence`; only committing events draw from it, so ids stay dense)
    and sent `NOTIFY vibe_events, '<id>'`. Every writer of an event therefore waited for the one
    before it to commit, WAL flush included; migration 0017 replaced it with `order_pending_ddl`.
    """
    # Every name and number below is this module's constant, `sequence` the catalog's answer.
    return [
        f"CREATE SEQUENCE IF NOT EXISTS {PROVISIONAL_SEQUENCE} AS bigint",
        f"""CREATE OR REPLACE FUNCTION {ORDER_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    ordered bigint;
BEGIN
    PERFORM pg_advisory_xact_lock({EVENT_LOCK_KEY});
    ordered := nextval('{sequence}'::regclass);
    UPDATE {events.name} SET id = ordered WHERE id = NEW.id;
    PERFORM pg_notify('{NOTIFY_CHANNEL}', ordered::text);
    RETURN NULL;
END
$fn$""",  # noqa: S608  # nosec B608
        f"CREATE CONSTRAINT TRIGGER {ORDER_TRIGGER} AFTER INSERT ON {events.name} "
        f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {ORDER_FUNCTION}()",
    ]


def drop_order_at_commit_ddl(*, keep_sequence: bool = False) -> list[str]:
    statements = [
        f"DROP TRIGGER IF EXISTS {ORDER_TRIGGER} ON {events.name}",
        f"DROP FUNCTION IF EXISTS {ORDER_FUNCTION}()",
    ]
    if not keep_sequence:
        statements.append(f"DROP SEQUENCE IF EXISTS {PROVISIONAL_SEQUENCE}")
    return statements


async def newest_id_on_listener(conn: asyncpg.Connection) -> int:
    """The newest event id (0 for none), on the raw asyncpg connection that LISTENs (events/bridge.py)."""
    newest = await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {events.name} WHERE id > 0")  # noqa: S608  # nosec B608
    return int(newest)


def _select() -> sa.Select[Any]:
    return sa.select(events, projects.c.slug).select_from(
        events.outerjoin(projects, events.c.project_id == projects.c.id)
    )


_AFTER = Prepared(
    _select().where(events.c.id > sa.bindparam("after_id")).order_by(events.c.id).limit(sa.bindparam("limit"))
)


@functools.lru_cache(maxsize=64)  # the types a caller waits on are few (mail's waker: two)
def _after_of(types: tuple[str, ...]) -> Prepared:
    """`_AFTER` for events of these types (and those every reader gets) alone."""
    q = _filtered(_select().where(events.c.id > sa.bindparam("after_id")), None, types)
    return Prepared(q.order_by(events.c.id).limit(sa.bindparam("limit")))


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
    """Events with id > after_id, oldest first; filtered by projects and type prefixes. `after_id`
    is 0 or an event id, so a provisional (negative) id is never read."""
    if project_ids is None:  # the live feeds' shared window (events/feed.py) and mail's waker, per commit
        statement = _after_of(tuple(types)) if types else _AFTER
        return [
            _to_event(r)
            for r in records(await conn.execute(statement, {"after_id": after_id, "limit": limit}))
        ]
    q = _filtered(_select().where(events.c.id > after_id), project_ids, types)
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
    q = _filtered(_select().where(ORDERED), project_ids, types)
    rows = await conn.execute(q.order_by(events.c.id.desc()).limit(limit))
    return [_to_event(r) for r in rows]


def _filtered(
    q: sa.Select[Any], project_ids: Sequence[int] | None, types: Sequence[str] | None
) -> sa.Select[Any]:
    """Only the events of these projects and types, and those every reader gets (`EVERY_READER`:
    a restore, which has no project)."""
    if project_ids is not None:
        q = q.where(sa.or_(events.c.project_id.in_(project_ids), _FOR_EVERY_READER))
    if types:
        q = q.where(sa.or_(*(_type_matches(t) for t in types), _FOR_EVERY_READER))
    return q


_FOR_EVERY_READER = events.c.type.in_(sorted(EVERY_READER))


def _type_matches(pattern: str) -> sa.ColumnElement[bool]:
    """`issue.*` matches every issue event; anything else matches exactly."""
    if pattern.endswith(".*"):
        return events.c.type.startswith(pattern[:-1], autoescape=True)
    return events.c.type == pattern


_LAST_ID = Prepared(sa.select(sa.func.coalesce(sa.func.max(events.c.id), 0)).where(ORDERED))


async def last_id(conn: Connection) -> int:
    return int((await conn.execute(_LAST_ID)).scalar_one())


async def about_agent(conn: Connection, project_id: int, name: str, *, limit: int) -> list[Event]:
    """A project's newest events done by, or about, the agent of this name (its `actor`, or its
    payload's `agent`), newest first."""
    q = _select().where(
        ORDERED,
        events.c.project_id == project_id,
        sa.or_(events.c.actor == name, events.c.payload["agent"].as_string() == name),
    )
    rows = await conn.execute(q.order_by(events.c.id.desc()).limit(limit))
    return [_to_event(r) for r in rows]
