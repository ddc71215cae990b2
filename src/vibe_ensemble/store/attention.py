"""The reads behind the dashboard's "Needs attention" (and the one write of its release action)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.attention import IssueRef, UnackedMail
from vibe_ensemble.domain.enums import Importance, IssueStatus
from vibe_ensemble.domain.models import Event
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import (
    agents,
    comments,
    events,
    issues,
    message_recipients,
    messages,
)

_assignee = agents.alias("ref_assignee")
# Written exactly as the partial index `ix_messages_ack_required` is, so the planner uses it.
ACK_REQUIRED = sa.text("messages.ack_required")


def _refs() -> sa.Select[Any]:
    return sa.select(
        issues.c.id,
        issues.c.title,
        issues.c.status,
        issues.c.priority,
        issues.c.assignee_id,
        _assignee.c.name.label("assignee_name"),
    ).outerjoin(_assignee, issues.c.assignee_id == _assignee.c.id)


def _to_ref(row: sa.Row[Any]) -> IssueRef:
    return IssueRef(
        id=row.id,
        title=row.title,
        status=IssueStatus(row.status),
        priority=row.priority,
        assignee=row.assignee_name,
    )


async def in_progress_by_agent(conn: Connection, project_id: int) -> dict[int, list[IssueRef]]:
    """Issues in progress, by the id of the agent they are assigned to."""
    rows = await conn.execute(
        _refs()
        .where(
            issues.c.project_id == project_id,
            issues.c.status == IssueStatus.IN_PROGRESS.value,
            issues.c.assignee_id.is_not(None),
        )
        .order_by(issues.c.priority, issues.c.id)
    )
    out: dict[int, list[IssueRef]] = defaultdict(list)
    for r in rows:
        out[r.assignee_id].append(_to_ref(r))
    return out


async def latest_comments(conn: Connection, ids: Iterable[int]) -> dict[int, tuple[str, str]]:
    """For each issue that has comments, the newest one: (author, body)."""
    ids = list(ids)
    if not ids:
        return {}
    newest = (
        sa.select(sa.func.max(comments.c.id))
        .where(comments.c.issue_id.in_(ids))
        .group_by(comments.c.issue_id)
    )
    rows = await conn.execute(
        sa.select(comments.c.issue_id, comments.c.author, comments.c.body).where(comments.c.id.in_(newest))
    )
    return {r.issue_id: (r.author, r.body) for r in rows}


def _awaits_ack() -> sa.Exists:
    """True for a message some recipient has not acknowledged."""
    return (
        sa.select(message_recipients.c.agent_id)
        .where(message_recipients.c.message_id == messages.c.id, message_recipients.c.acked_at.is_(None))
        .exists()
    )


async def unacked(conn: Connection, project_id: int, sent_before: datetime, limit: int) -> list[UnackedMail]:
    """Messages that asked for acknowledgement, sent before `sent_before`, still unacknowledged by someone
    (oldest first)."""
    oldest = (
        sa.select(messages.c.id)
        .where(
            messages.c.project_id == project_id,
            ACK_REQUIRED,
            messages.c.created_at <= sent_before,
            _awaits_ack(),
        )
        .order_by(messages.c.created_at)
        .limit(limit)
    )
    ids = [r.id for r in await conn.execute(oldest)]
    if not ids:
        return []
    rows = await conn.execute(
        sa.select(messages, agents.c.name.label("recipient"))
        .join(message_recipients, message_recipients.c.message_id == messages.c.id)
        .join(agents, agents.c.id == message_recipients.c.agent_id)
        .where(messages.c.id.in_(ids), message_recipients.c.acked_at.is_(None))
        .order_by(messages.c.created_at, messages.c.id, agents.c.name)
    )
    found: dict[int, UnackedMail] = {}
    for r in rows:
        item = found.get(r.id)
        if item is None:
            item = found[r.id] = UnackedMail(
                message_id=r.id,
                thread_id=r.thread_id,
                subject=r.subject,
                sender=r.sender,
                importance=Importance(r.importance),
                sent_at=r.created_at,
                waiting_on=[],
            )
        item.waiting_on.append(r.recipient)
    return list(found.values())


async def first_pending_ack_after(conn: Connection, project_id: int, sent_after: datetime) -> datetime | None:
    """When the oldest message still awaiting an acknowledgement, sent after `sent_after`, was sent."""
    q = (
        sa.select(messages.c.created_at)
        .where(
            messages.c.project_id == project_id,
            ACK_REQUIRED,
            messages.c.created_at > sent_after,
            _awaits_ack(),
        )
        .order_by(messages.c.created_at)
        .limit(1)
    )
    value: datetime | None = (await conn.execute(q)).scalar_one_or_none()
    return value


async def events_since(
    conn: Connection, project_id: int, slug: str, types: Sequence[str], since: datetime, limit: int
) -> list[Event]:
    """Events of exactly these types in the project since `since`, newest first."""
    rows = await conn.execute(
        sa.select(events)
        .where(
            event_store.ORDERED,  # given its id
            events.c.project_id == project_id,
            events.c.type.in_(list(types)),
            events.c.time >= since,
        )
        .order_by(events.c.id.desc())
        .limit(limit)
    )
    return [
        Event(id=r.id, time=r.time, project=slug, type=r.type, actor=r.actor, payload=r.payload) for r in rows
    ]
