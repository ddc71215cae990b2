"""Mail read by thread for the dashboard: the newest conversations of a project (filtered by
participant, importance, or acknowledgements still owed), one conversation's messages with every
recipient's read and acknowledged state (the search of mail is `mail_search`)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from vibe_ensemble.domain.enums import Importance
from vibe_ensemble.domain.threads import IMPORTANCE_RANK, Delivery, ThreadMessage, ThreadSummary
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


FIRST_WINDOW = 2  # messages read per thread wanted, at first (then four times as many, …)


async def _newest_thread_ids(conn: Connection, where: list[sa.ColumnElement[bool]], limit: int) -> list[str]:
    """The `limit` threads whose newest matching message is newest: found among the newest matching
    messages (by the index on project and id), a window that grows fourfold until it holds `limit`
    threads or every matching message. So the cost follows the page (and how long its threads are),
    not the project's mail: grouping every message by thread read the whole table on each refresh."""
    window = limit * FIRST_WINDOW
    while True:
        newest = sa.select(_m.c.id, _m.c.thread_id).where(*where).order_by(_m.c.id.desc()).limit(window)
        recent = newest.subquery()
        grouped = sa.select(
            recent.c.thread_id, sa.func.max(recent.c.id).label("last"), sa.func.count().label("n")
        ).group_by(recent.c.thread_id)
        rows = list(await conn.execute(grouped))
        if len(rows) >= limit or sum(r.n for r in rows) < window:
            rows.sort(key=lambda r: r.last, reverse=True)
            return [r.thread_id for r in rows[:limit]]
        window *= 4


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
    where = [_m.c.project_id == project_id]
    if agent:
        where.append(_involves(agent))
    if importance is not None:
        where.append(_m.c.importance == importance.value)
    if unacked:
        where.append(_owes_ack())
    ids = await _newest_thread_ids(conn, where, limit)
    if not ids:
        return []
    in_threads = sa.and_(_m.c.project_id == project_id, _m.c.thread_id.in_(ids))
    found: dict[str, list[Any]] = defaultdict(list)
    for r in await conn.execute(
        # sorted here, not by SQL: `ORDER BY id` would lead SQLite to the project's whole index by id
        sa.select(_m.c.id, _m.c.thread_id, _m.c.sender, _m.c.subject, _m.c.importance, _m.c.created_at).where(
            in_threads
        )
    ):
        found[r.thread_id].append(r)
    for items in found.values():
        items.sort(key=lambda r: r.id)
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
