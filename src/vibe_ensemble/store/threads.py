"""Mail read by thread for the dashboard: the newest conversations of a project (filtered by
participant, importance, or acknowledgements still owed), one conversation's messages with every
recipient's read and acknowledged state, and a word search over subjects (and bodies)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.threads import IMPORTANCE_RANK, Delivery, MailHit, ThreadMessage, ThreadSummary
from vibe_ensemble.store.database import Connection
from vibe_ensemble.store.tables import agents, message_recipients, messages

_m, _r = messages, message_recipients


def _owes_ack() -> sa.ColumnElement[bool]:
    """The message asked for acknowledgements and a recipient has not given one (the cheap test
    first, so the subquery runs only for mail that asked)."""
    owed = sa.select(_r.c.message_id).where(_r.c.message_id == _m.c.id, _r.c.acked_at.is_(None)).exists()
    return sa.and_(_m.c.ack_required, owed)


def _involves(agent: str) -> sa.ColumnElement[bool]:
    """The message was sent by, or delivered to, the agent of this name (the deliveries are read once,
    through the recipients' index, not per message)."""
    delivered = (
        sa.select(_r.c.message_id).join(agents, agents.c.id == _r.c.agent_id).where(agents.c.name == agent)
    )
    return sa.or_(_m.c.sender == agent, _m.c.id.in_(delivered))


def _newest_first(conn: Connection, project_id: int) -> sa.ColumnElement[bool]:
    """`messages.project_id = :id`, written so that SQLite walks the messages newest first by id and
    stops at the limit, instead of collecting the project's rows through the thread index and sorting
    them all (PostgreSQL plans this well either way)."""
    if conn.dialect.name == "sqlite":
        return (_m.c.project_id + 0) == project_id
    return _m.c.project_id == project_id


async def newest_threads(
    conn: Connection,
    project_id: int,
    *,
    agent: str | None,
    importance: Importance | None,
    unacked: bool,
    limit: int,
) -> list[ThreadSummary]:
    """The project's threads with a message matching every filter given, most recent activity first."""
    q = sa.select(_m.c.thread_id, sa.func.max(_m.c.id).label("last")).where(_m.c.project_id == project_id)
    if agent:
        q = q.where(_involves(agent))
    if importance is not None:
        q = q.where(_m.c.importance == importance.value)
    if unacked:
        q = q.where(_owes_ack())
    rows = list(await conn.execute(q.group_by(_m.c.thread_id).order_by(sa.desc("last")).limit(limit)))
    ids = [r.thread_id for r in rows]
    if not ids:
        return []
    in_threads = sa.and_(_m.c.project_id == project_id, _m.c.thread_id.in_(ids))
    found: dict[str, list[Any]] = defaultdict(list)
    for r in await conn.execute(
        sa.select(_m.c.id, _m.c.thread_id, _m.c.sender, _m.c.subject, _m.c.importance, _m.c.created_at)
        .where(in_threads)
        .order_by(_m.c.id)
    ):
        found[r.thread_id].append(r)
    people: dict[str, set[str]] = defaultdict(set)
    owed: dict[str, int] = defaultdict(int)
    for r in await conn.execute(
        sa.select(_m.c.thread_id, agents.c.name, _m.c.ack_required, _r.c.acked_at)
        .join(_r, _r.c.message_id == _m.c.id)
        .join(agents, agents.c.id == _r.c.agent_id)
        .where(in_threads)
    ):
        people[r.thread_id].add(r.name)
        if r.ack_required and r.acked_at is None:
            owed[r.thread_id] += 1
    out = []
    for thread_id in ids:
        items = found[thread_id]
        first, last = items[0], items[-1]
        levels = [Importance(i.importance) for i in items]
        out.append(
            ThreadSummary(
                thread_id=thread_id,
                subject=first.subject,
                messages=len(items),
                participants=sorted(people[thread_id] | {i.sender for i in items}),
                last_at=last.created_at,
                last_sender=last.sender,
                importance=max(levels, key=IMPORTANCE_RANK.__getitem__),
                unacked=owed[thread_id],
            )
        )
    return out


async def thread_messages(
    conn: Connection, project_id: int, thread_id: str, *, limit: int
) -> tuple[list[ThreadMessage], int]:
    """The newest `limit` messages of a thread, oldest first, with their deliveries; and how many
    older ones there are."""
    where = sa.and_(_m.c.project_id == project_id, _m.c.thread_id == thread_id)
    total = int((await conn.execute(sa.select(sa.func.count()).where(where))).scalar_one())
    rows = list(await conn.execute(sa.select(_m).where(where).order_by(_m.c.id.desc()).limit(limit)))
    rows.reverse()
    deliveries: dict[int, list[Delivery]] = defaultdict(list)
    if rows:
        for d in await conn.execute(
            sa.select(_r.c.message_id, agents.c.name, _r.c.read_at, _r.c.acked_at)
            .join(agents, agents.c.id == _r.c.agent_id)
            .where(_r.c.message_id.in_([r.id for r in rows]))
            .order_by(agents.c.name)
        ):
            deliveries[d.message_id].append(Delivery(d.name, d.read_at, d.acked_at))
    found = [
        ThreadMessage(
            id=r.id,
            sender=r.sender,
            subject=r.subject,
            body=r.body,
            importance=Importance(r.importance),
            ack_required=r.ack_required,
            created_at=r.created_at,
            to_role=r.to_role,
            broadcast=r.broadcast,
            deliveries=deliveries[r.id],
        )
        for r in rows
    ]
    return found, total - len(found)


def _like(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search(
    conn: Connection, project_id: int, words: list[str], *, bodies: bool, limit: int
) -> list[tuple[MailHit, str]]:
    """The newest messages whose subject (or, with `bodies`, body) holds any of `words`
    (case-insensitive substrings), with their bodies ("" without `bodies`)."""
    if not words:
        return []
    columns = [_m.c.subject, _m.c.body] if bodies else [_m.c.subject]
    matches = [sa.func.lower(c).like(_like(w), escape="\\") for w in words for c in columns]
    q = (
        sa.select(
            _m.c.id, _m.c.thread_id, _m.c.sender, _m.c.subject, _m.c.importance, _m.c.created_at, _m.c.body
        )
        .where(_newest_first(conn, project_id), sa.or_(*matches))
        .order_by(_m.c.id.desc())
        .limit(limit)
    )
    return [
        (
            MailHit(r.id, r.thread_id, r.sender, r.subject, Importance(r.importance), r.created_at, ""),
            r.body if bodies else "",
        )
        for r in await conn.execute(q)
    ]
