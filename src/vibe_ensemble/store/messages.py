"""Messages and their per-recipient state."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.models import InboxItem, Message
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.prepared import Prepared, records
from vibe_ensemble.store.tables import agents, message_recipients, messages, projects

_RECIPIENTS_OF = Prepared(
    sa.select(message_recipients.c.message_id, agents.c.name)
    .join(agents, agents.c.id == message_recipients.c.agent_id)
    .where(message_recipients.c.message_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(agents.c.name)
)


async def _recipients_of(conn: Connection, message_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    if not message_ids:
        return out
    for r in records(await conn.execute(_RECIPIENTS_OF, {"ids": message_ids})):
        out[r.message_id].append(r.name)
    return out


def _to_message(row: sa.Row[Any], recipients: list[str]) -> Message:
    return Message(
        id=row.id,
        project=row.slug,
        sender=row.sender,
        recipients=recipients,
        to_role=AgentRole(row.to_role) if row.to_role else None,
        broadcast=row.broadcast,
        subject=row.subject,
        body=row.body,
        thread_id=row.thread_id,
        importance=Importance(row.importance),
        ack_required=row.ack_required,
        created_at=row.created_at,
    )


def _inbox_query(agent_id: int | sa.BindParameter[int]) -> sa.Select[Any]:
    return (
        sa.select(messages, projects.c.slug, message_recipients.c.read_at, message_recipients.c.acked_at)
        .join(message_recipients, message_recipients.c.message_id == messages.c.id)
        .join(projects, projects.c.id == messages.c.project_id)
        .where(message_recipients.c.agent_id == agent_id)
    )


def _inbox_since(*, unread_only: bool) -> Prepared:
    """An agent's mail after `since_id`, oldest first, at most `limit` (the fetch_inbox hot path)."""
    # By the recipient row's message id: the (agent_id, message_id) index then gives the order, and
    # a page reads `limit` rows however much mail the agent has (by messages.id it sorted them all).
    mine = message_recipients.c.message_id
    q = _inbox_query(sa.bindparam("agent_id")).where(mine > sa.bindparam("since_id"))
    if unread_only:
        q = q.where(message_recipients.c.read_at.is_(None))
    return Prepared(q.order_by(mine).limit(sa.bindparam("limit")))


_INBOX = {False: _inbox_since(unread_only=False), True: _inbox_since(unread_only=True)}


async def _load_inbox(
    conn: Connection, query: sa.Select[Any] | Prepared, parameters: dict[str, Any] | None = None
) -> list[InboxItem]:
    rows = records(await conn.execute(query, parameters))
    recipients = await _recipients_of(conn, [r.id for r in rows])
    return [
        InboxItem(message=_to_message(r, recipients.get(r.id, [])), read_at=r.read_at, acked_at=r.acked_at)
        for r in rows
    ]


_UNREAD = Prepared(
    sa.select(sa.func.count()).where(
        message_recipients.c.agent_id == sa.bindparam("agent_id"), message_recipients.c.read_at.is_(None)
    )
)


async def unread_count(conn: Connection, agent_id: int) -> int:
    return int((await conn.execute(_UNREAD, {"agent_id": agent_id})).scalar_one())


async def unread(
    conn: Connection, agent_id: int, *, importance: list[Importance] | None = None, limit: int
) -> list[InboxItem]:
    """An agent's unread mail (of these importances, when given), oldest first."""
    q = _inbox_query(agent_id).where(message_recipients.c.read_at.is_(None))
    if importance is not None:
        q = q.where(messages.c.importance.in_([i.value for i in importance]))
    return await _load_inbox(conn, q.order_by(message_recipients.c.message_id).limit(limit))


async def inbox(
    conn: Connection, agent_id: int, *, since_id: int, unread_only: bool, limit: int
) -> list[InboxItem]:
    """An agent's mail after `since_id`, oldest first."""
    parameters = {"agent_id": agent_id, "since_id": since_id, "limit": limit}
    return await _load_inbox(conn, _INBOX[unread_only], parameters)


async def insert(
    conn: Connection,
    *,
    project_id: int,
    sender: str,
    subject: str,
    body: str,
    thread_id: str,
    importance: Importance,
    ack_required: bool,
    to_role: AgentRole | None,
    broadcast: bool,
    recipient_ids: list[int],
    now: datetime,
) -> int:
    """Store a message and its recipients; returns its id."""
    row = {
        "project_id": project_id,
        "sender": sender,
        "subject": subject,
        "body": body,
        "thread_id": thread_id,
        "importance": importance.value,
        "ack_required": ack_required,
        "to_role": to_role.value if to_role else None,
        "broadcast": broadcast,
        "created_at": now,
    }
    message_id = int((await conn.execute(_INSERT, row)).scalar_one())
    if recipient_ids:
        rows = [{"message_id": message_id, "agent_id": a} for a in recipient_ids]
        await conn.execute(_INSERT_RECIPIENT, rows)
    return message_id


_INSERT = Prepared.insert_row(messages)
_INSERT_RECIPIENT = Prepared(
    message_recipients.insert().values(
        message_id=sa.bindparam("message_id"), agent_id=sa.bindparam("agent_id")
    )
)


async def received(conn: Connection, agent_id: int, ids: list[int]) -> set[int]:
    """Which of these message ids are in the agent's inbox."""
    rows = await conn.execute(
        sa.select(message_recipients.c.message_id).where(
            message_recipients.c.agent_id == agent_id, message_recipients.c.message_id.in_(ids)
        )
    )
    return {r.message_id for r in rows}


async def mark_read(conn: Connection, agent_id: int, ids: list[int], now: datetime) -> None:
    """Set read_at on those of the agent's messages not read yet."""
    await _stamp(conn, agent_id, ids, message_recipients.c.read_at, now)


async def mark_acknowledged(conn: Connection, agent_id: int, ids: list[int], now: datetime) -> None:
    """Set acked_at on those of the agent's messages not acknowledged yet."""
    await _stamp(conn, agent_id, ids, message_recipients.c.acked_at, now)


async def _stamp(
    conn: Connection, agent_id: int, ids: list[int], column: sa.Column[Any], now: datetime
) -> None:
    await conn.execute(
        message_recipients.update()
        .where(
            message_recipients.c.agent_id == agent_id,
            message_recipients.c.message_id.in_(ids),
            column.is_(None),
        )
        .values({column.name: now})
    )
