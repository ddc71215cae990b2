"""Messages and their per-recipient state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from vibe_ensemble.domain.enums import AgentRole, Importance, by_value
from vibe_ensemble.domain.models import InboxItem, Message
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, changed, records, tuples
from vibe_ensemble.store.tables import agents, events, message_recipients, messages, projects

_ROLES = by_value(AgentRole)
_IMPORTANCES = by_value(Importance)


def _names(joined: str) -> list[str]:
    """A message's `recipient_names` as a list: written sorted when it is sent, but sorted here too,
    as the names of mail sent before migration 0009 were joined in no particular order."""
    return sorted(joined.split(",")) if joined else []


def _to_message(row: sa.Row[Any]) -> Message:
    return Message(
        id=row.id,
        project=row.slug,
        sender=row.sender,
        recipients=_names(row.recipient_names),
        to_role=_ROLES[row.to_role] if row.to_role else None,
        broadcast=row.broadcast,
        subject=row.subject,
        body=row.body,
        thread_id=row.thread_id,
        importance=_IMPORTANCES[row.importance],
        ack_required=row.ack_required,
        created_at=row.created_at,
    )


def _inbox_query(agent_id: int | sa.ColumnElement[int]) -> sa.Select[Any]:
    return (
        sa.select(
            messages,
            projects.c.slug,
            message_recipients.c.read_at,
            message_recipients.c.acked_at,
        )
        .join(message_recipients, message_recipients.c.message_id == messages.c.id)
        .join(projects, projects.c.id == messages.c.project_id)
        .where(message_recipients.c.agent_id == agent_id)
    )


# The id of the agent named `name` in the project, when it is registered and not retired: the inbox
# page finds its agent itself, where a lookup of its own was a statement (a round trip) more.
_ACTIVE_AGENT_ID = (
    sa.select(agents.c.id)
    .where(
        agents.c.project_id == sa.bindparam("project_id"),
        agents.c.name == sa.bindparam("name"),
        agents.c.retired_at.is_(None),
    )
    .scalar_subquery()
)


def _unread_count(agent_id: sa.ColumnElement[int]) -> sa.Select[Any]:
    """The agent's unread mail, counted (its own statement, and a column of the inbox page's rows)."""
    mine = message_recipients.alias("mine")
    return sa.select(sa.func.count()).where(mine.c.agent_id == agent_id, mine.c.read_at.is_(None))


def _inbox_since(*, unread_only: bool) -> Prepared:
    """The mail of the agent named `name` after `since_id`, oldest first, at most `limit` (the
    fetch_inbox hot path), each row with the agent's id and unread count: one statement, where the
    agent's lookup and the count were two more. No rows when the agent is not registered, or
    retired, or has no such mail."""
    # By the recipient row's message id: the (agent_id, message_id) index then gives the order, and
    # a page reads `limit` rows however much mail the agent has (by messages.id it sorted them all).
    mine = message_recipients.c.message_id
    q = _inbox_query(_ACTIVE_AGENT_ID).where(mine > sa.bindparam("since_id"))
    if unread_only:
        q = q.where(message_recipients.c.read_at.is_(None))
    q = q.add_columns(
        message_recipients.c.agent_id.label("me"),
        _unread_count(_ACTIVE_AGENT_ID).scalar_subquery().label("unread"),
    )
    return Prepared(q.order_by(mine).limit(sa.bindparam("limit")))


_INBOX = {False: _inbox_since(unread_only=False), True: _inbox_since(unread_only=True)}


async def _inbox_items(conn: Connection, rows: list[Any]) -> list[InboxItem]:
    items = [InboxItem(message=_to_message(r), read_at=r.read_at, acked_at=r.acked_at) for r in rows]
    unnamed = {item.message.id: item.message for item in items if not item.message.recipients}
    if unnamed:  # sent by a release before migration 0009 while the migrated schema was live
        for row in records(await conn.execute(_RECIPIENT_NAMES, {"ids": list(unnamed)})):
            unnamed[row.message_id].recipients.append(row.name)
        for message in unnamed.values():
            message.recipients.sort()
    return items


# The names a message was sent to, from its recipient rows: for mail whose `recipient_names` is
# empty. Migration 0009 wrote them for the mail before it, but during a rolling upgrade the release
# before it still runs on the migrated schema for a while, and sends mail without them.
_RECIPIENT_NAMES = Prepared(
    sa.select(message_recipients.c.message_id, agents.c.name)
    .join(agents, agents.c.id == message_recipients.c.agent_id)
    .where(message_recipients.c.message_id.in_(sa.bindparam("ids", expanding=True)))
)


_UNREAD = Prepared(_unread_count(sa.bindparam("agent_id")))


async def unread_count(conn: Connection, agent_id: int) -> int:
    return int((await conn.execute(_UNREAD, {"agent_id": agent_id})).scalar_one())


def _unread(importance: tuple[Importance, ...] | None) -> sa.Select[Any]:
    """An agent's unread mail (of these importances, when given: one comparison each, the values
    written into the statement as constants, like `dependencies.unfinished`), oldest first."""
    q = _inbox_query(sa.bindparam("agent_id")).where(message_recipients.c.read_at.is_(None))
    if importance is not None:
        q = q.where(sa.or_(*(messages.c.importance == i.value for i in importance)))
    return q.order_by(message_recipients.c.message_id).limit(sa.bindparam("limit"))


def _unread_with_urgent() -> Prepared:
    """An agent's unread count and its oldest unread mail of high or urgent importance (a
    heartbeat's), in one statement: the count's one row joined to the mail's rows, so that with no
    such mail there is still the row with the count (its message columns NULL)."""
    counted = _unread_count(sa.bindparam("agent_id")).subquery("counted")
    urgent = _unread((Importance.HIGH, Importance.URGENT)).subquery("urgent")
    (count,) = counted.c
    return Prepared(
        sa.select(count.label("unread"), urgent)
        .select_from(counted.outerjoin(urgent, sa.true()))
        .order_by(urgent.c.id)
    )


_UNREAD_WITH_URGENT = _unread_with_urgent()
_ANY_UNREAD = Prepared(_unread(None))


async def unread_with_urgent(conn: Connection, agent_id: int, *, limit: int) -> tuple[int, list[InboxItem]]:
    """How much of an agent's mail is unread, and its unread mail of high or urgent importance,
    oldest first (at most `limit`)."""
    rows = records(await conn.execute(_UNREAD_WITH_URGENT, {"agent_id": agent_id, "limit": limit}))
    return rows[0].unread, await _inbox_items(conn, [r for r in rows if r.id is not None])


async def unread(conn: Connection, agent_id: int, *, limit: int) -> list[InboxItem]:
    """An agent's unread mail, oldest first."""
    rows = records(await conn.execute(_ANY_UNREAD, {"agent_id": agent_id, "limit": limit}))
    return await _inbox_items(conn, rows)


async def inbox_page(
    conn: Connection, project_id: int, name: str, *, since_id: int, unread_only: bool, limit: int
) -> tuple[list[InboxItem], int, int] | None:
    """The mail of the agent named `name` after `since_id`, oldest first, with the agent's id and how
    much of its mail is unread; None for an empty page, which does not say whether the agent is
    registered (`agents.get` does)."""
    parameters = {"project_id": project_id, "name": name, "since_id": since_id, "limit": limit}
    rows = records(await conn.execute(_INBOX[unread_only], parameters))
    if not rows:
        return None
    return await _inbox_items(conn, rows), rows[0].me, rows[0].unread


async def insert(
    conn: Connection,
    project_id: int,
    message: Message,
    recipient_ids: list[int],
    *,
    announced: event_store.NewEvent | None = None,
) -> int:
    """Store a message (its `id` is not read) and its recipients' rows (`recipient_ids`; their names
    are `message.recipients`); returns its id.

    `announced` (PostgreSQL only): the message's event, appended by the same statement with the new
    message's id as its payload's `id` (`event_store.append`'s provisional id; given its own at
    commit), so the statement is the whole write and needs no transaction around it."""
    row = {
        "project_id": project_id,
        "sender": message.sender,
        "subject": message.subject,
        "body": message.body,
        "thread_id": message.thread_id,
        "importance": message.importance.value,
        "ack_required": message.ack_required,
        "to_role": message.to_role.value if message.to_role else None,
        "broadcast": message.broadcast,
        "created_at": message.created_at,
        "recipient_names": ",".join(sorted(message.recipients)),
    }
    if conn.dialect.name == "postgresql":  # the message and its recipients in one round trip
        if announced is None:
            delivered = await conn.execute(_INSERT_DELIVERED, {**row, "recipient_ids": recipient_ids})
        else:
            event = {
                "event_project_id": announced.project_id,
                "event_type": announced.type,
                "event_actor": announced.actor,
                "event_payload": announced.payload,
            }
            parameters = {**row, "recipient_ids": recipient_ids, **event}
            delivered = await conn.execute(_INSERT_ANNOUNCED, parameters)
        return int(delivered.scalar_one())
    if announced is not None:
        raise ValueError("only PostgreSQL writes a message's event in the message's statement")
    message_id = int((await conn.execute(_INSERT, row)).scalar_one())
    if recipient_ids:
        rows = [{"message_id": message_id, "agent_id": a} for a in recipient_ids]
        await conn.execute(_INSERT_RECIPIENT, rows)
    return message_id


def _insert_delivered(*, announced: bool) -> Prepared:
    """PostgreSQL: the message's row and a recipient row per id of the `recipient_ids` array, each
    with the new message's id, in one statement (a data-modifying WITH); it answers the id. With
    `announced`, also the message's event (`event_project_id`, `event_type`, `event_actor`, and
    `event_payload`, given the new id as its `id`), at the message's `created_at`, with a provisional
    id as `event_store.append` writes it."""
    columns = [c.name for c in messages.c if c.name != "id"]
    values = {name: sa.bindparam(name, type_=messages.c[name].type) for name in columns}
    inserted = messages.insert().values(values).returning(messages.c.id).cte("inserted")
    ids = sa.bindparam("recipient_ids", type_=postgresql.ARRAY(sa.BigInteger))
    delivered = message_recipients.insert().from_select(
        ["message_id", "agent_id"], sa.select(inserted.c.id, sa.func.unnest(ids))
    )
    statement = sa.select(inserted.c.id).add_cte(delivered.cte("delivered"))
    if not announced:
        return Prepared(statement)
    given = sa.bindparam("event_payload", type_=events.c.payload.type)
    payload = given.op("||", return_type=postgresql.JSONB)(
        sa.func.jsonb_build_object(sa.literal_column("'id'"), inserted.c.id)
    )
    event = sa.select(
        event_store.PROVISIONAL_ID,
        sa.bindparam("created_at", type_=events.c.time.type),
        sa.bindparam("event_project_id", type_=events.c.project_id.type),
        sa.bindparam("event_type", type_=events.c.type.type),
        sa.bindparam("event_actor", type_=events.c.actor.type),
        payload,
    )
    appended = events.insert().from_select(["id", "time", "project_id", "type", "actor", "payload"], event)
    return Prepared(statement.add_cte(appended.cte("announced")))


_INSERT = Prepared.insert_row(messages)
_INSERT_DELIVERED = _insert_delivered(announced=False)
_INSERT_ANNOUNCED = _insert_delivered(announced=True)
_INSERT_RECIPIENT = Prepared(
    message_recipients.insert().values(
        message_id=sa.bindparam("message_id"), agent_id=sa.bindparam("agent_id")
    )
)


_RECEIVED = Prepared(
    sa.select(message_recipients.c.message_id).where(
        message_recipients.c.agent_id == sa.bindparam("agent_id"),
        message_recipients.c.message_id.in_(sa.bindparam("ids", expanding=True)),
    )
)


async def received(conn: Connection, agent_id: int, ids: list[int]) -> set[int]:
    """Which of these message ids are in the agent's inbox."""
    return {r[0] for r in tuples(await conn.execute(_RECEIVED, {"agent_id": agent_id, "ids": ids}))}


def _stamp_of(column: sa.Column[Any]) -> Prepared:
    """Set `column` (read_at or acked_at) to `now` on those of the agent's messages `ids` where it
    is not set yet."""
    return Prepared(
        message_recipients.update()
        .where(
            message_recipients.c.agent_id == sa.bindparam("agent_id"),
            message_recipients.c.message_id.in_(sa.bindparam("ids", expanding=True)),
            column.is_(None),
        )
        .values({column.name: sa.bindparam("now")})
    )


_MARK_READ = _stamp_of(message_recipients.c.read_at)
_MARK_ACKNOWLEDGED = _stamp_of(message_recipients.c.acked_at)


async def mark_read(conn: Connection, agent_id: int, ids: list[int], now: datetime) -> int:
    """Set read_at on those of the agent's messages not read yet; returns how many that was."""
    return await _stamp(conn, _MARK_READ, agent_id, ids, now)


async def mark_acknowledged(conn: Connection, agent_id: int, ids: list[int], now: datetime) -> int:
    """Set acked_at on those of the agent's messages not acknowledged yet; returns how many."""
    return await _stamp(conn, _MARK_ACKNOWLEDGED, agent_id, ids, now)


async def _stamp(conn: Connection, stamp: Prepared, agent_id: int, ids: list[int], now: datetime) -> int:
    return changed(await conn.execute(stamp, {"agent_id": agent_id, "ids": ids, "now": now}))
