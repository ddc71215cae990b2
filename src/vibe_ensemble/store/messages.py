"""Messages and their per-recipient state."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from vibe_ensemble.domain.enums import AgentRole, Importance
from vibe_ensemble.domain.models import InboxItem, Message
from vibe_ensemble.store.tables import agents, message_recipients, messages, projects


async def recipients_of(conn: AsyncConnection, message_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    if not message_ids:
        return out
    rows = await conn.execute(
        sa.select(message_recipients.c.message_id, agents.c.name)
        .join(agents, agents.c.id == message_recipients.c.agent_id)
        .where(message_recipients.c.message_id.in_(message_ids))
        .order_by(agents.c.name)
    )
    for r in rows:
        out[r.message_id].append(r.name)
    return out


def to_message(row: sa.Row[Any], recipients: list[str]) -> Message:
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


def inbox_query(agent_id: int) -> sa.Select[Any]:
    return (
        sa.select(messages, projects.c.slug, message_recipients.c.read_at, message_recipients.c.acked_at)
        .join(message_recipients, message_recipients.c.message_id == messages.c.id)
        .join(projects, projects.c.id == messages.c.project_id)
        .where(message_recipients.c.agent_id == agent_id)
    )


async def load_inbox(conn: AsyncConnection, query: sa.Select[Any]) -> list[InboxItem]:
    rows = list(await conn.execute(query))
    recipients = await recipients_of(conn, [r.id for r in rows])
    return [
        InboxItem(message=to_message(r, recipients.get(r.id, [])), read_at=r.read_at, acked_at=r.acked_at)
        for r in rows
    ]


async def unread_count(conn: AsyncConnection, agent_id: int) -> int:
    q = sa.select(sa.func.count()).where(
        message_recipients.c.agent_id == agent_id, message_recipients.c.read_at.is_(None)
    )
    return int((await conn.execute(q)).scalar_one())


def by_id_query(message_id: int) -> sa.Select[Any]:
    """One message, shaped like an inbox row (without recipient state)."""
    return (
        sa.select(messages, projects.c.slug, sa.null().label("read_at"), sa.null().label("acked_at"))
        .join(projects, projects.c.id == messages.c.project_id)
        .where(messages.c.id == message_id)
    )
