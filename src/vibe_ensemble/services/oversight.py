"""What the dashboard's leases and agent pages read, and the one lease action a person takes:
ending another agent's stale lease."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.errors import NotFound
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Agent, Event, Issue, Reservation
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.domain.threads import ThreadSummary
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import attention as attention_store
from vibe_ensemble.store import events as event_store
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import messages as message_store
from vibe_ensemble.store import reservations as store
from vibe_ensemble.store import threads as thread_store
from vibe_ensemble.store.database import Connection

CONTESTED_WINDOW = timedelta(minutes=30)  # as the attention panel's default conflict window
MAX_REFUSALS = 500  # the newest refusals read for it


@dataclass
class AgentView:
    project: str
    agent: Agent
    issues: list[Issue]  # assigned and not finished, most urgent first
    leases: list[Reservation]  # live, soonest expiry first
    lease_issues: dict[int, Issue]  # the issues its leases serve, by id
    unread: int  # its mail not yet read
    threads: list[ThreadSummary]  # the newest threads it wrote to or received
    events: list[Event]  # the newest events by or about it, newest first


@dataclass
class LeaseView:
    project: str
    now: datetime
    leases: list[Reservation]  # live, soonest expiry first (of `agent` only, when given)
    holders: list[str]  # every agent holding a live lease, by name (the filter's choices)
    agent: str | None  # the filter
    issues: dict[int, Issue]  # the issues the shown leases serve, by id
    # Leases that stood in the way of another agent's reserve within `window`: lease id -> refusals
    contested: dict[int, int]
    window: timedelta


class OversightService(Service):
    async def leases(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        window: timedelta = CONTESTED_WINDOW,
    ) -> LeaseView:
        """The project's live leases, soonest expiry first; only `agent`'s when given. Each lease that
        refused another agent's reserve within `window` counts those refusals (`contested`)."""
        caller.require(Op.RESERVATION_READ)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            every = await store.live_in_project(tx.conn, proj.id, tx.now)
            chosen = [lease for lease in every if agent is None or lease.holder == agent]
            served = await _served(tx.conn, chosen)
            refused = await attention_store.events_since(
                tx.conn, proj.id, proj.slug, [EventType.RESERVATION_REFUSED], tx.now - window, MAX_REFUSALS
            )
        holders = sorted({lease.holder for lease in every})
        chosen.sort(key=lambda lease: (lease.expires_at, lease.id))
        contested = _contested(chosen, refused)
        return LeaseView(proj.slug, tx.now, chosen, holders, agent, served, contested, window)

    async def revoke_lease(
        self, caller: Caller, lease_id: int, *, project: str | None = None, reason: str = ""
    ) -> Reservation:
        """End another agent's live lease (a stale one, say). Needs `agent.retire`; emits
        `reservation.released` with reason `revoked` and writes a `reservation.revoked` audit entry."""
        caller.require(Op.AGENT_RETIRE)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            lease = await store.live_by_id(tx.conn, proj.id, lease_id, tx.now)
            if lease is None:
                raise NotFound(
                    f"lease {lease_id} is not live in this project (released or expired)", id=lease_id
                )
            await store.release(tx.conn, [lease.id], tx.now)
            tx.emit(
                EventType.RESERVATION_RELEASED,
                caller.display,
                proj.id,
                agent=lease.holder,
                ids=[lease.id],
                patterns=[lease.pattern],
                reason="revoked",
            )
            tx.audit(
                caller,
                "reservation.revoked",
                project=proj.slug,
                lease_id=lease.id,
                holder=lease.holder,
                pattern=lease.pattern,
                exclusive=lease.exclusive,
                expires_at=lease.expires_at.isoformat(),
                reason=reason,
            )
        return lease

    async def agent(
        self, caller: Caller, name: str, *, project: str | None = None, recent: int = 20
    ) -> AgentView:
        """One agent (retired or not) with its unfinished issues, live leases, unread mail count, the
        newest threads it wrote or received, and the newest events by or about it."""
        for op in (Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ, Op.EVENT_READ):
            caller.require(op)
        name = rules.text("name", name, max_len=rules.MAX_NAME)
        async with self.read() as tx:
            conn = tx.conn
            proj = await self.project(conn, caller, project)
            agent = await agent_store.get(conn, proj.id, name, active=False)
            leases = await store.held_by(conn, agent.id, tx.now)
            return AgentView(
                project=proj.slug,
                agent=agent,
                issues=await issue_store.unfinished_of(conn, agent.id),
                leases=leases,
                lease_issues=await _served(conn, leases),
                unread=await message_store.unread_count(conn, agent.id),
                threads=await thread_store.newest_threads(
                    conn, proj.id, agent=name, importance=None, unacked=False, limit=recent
                ),
                events=await event_store.about_agent(conn, proj.id, name, limit=recent),
            )


async def _served(conn: Connection, leases: list[Reservation]) -> dict[int, Issue]:
    """The issues these leases serve, by id (leases name issues of their own project only)."""
    ids = {lease.issue for lease in leases if lease.issue is not None}
    return {issue.id: issue for issue in await issue_store.by_ids(conn, ids)} if ids else {}


def _contested(leases: list[Reservation], refused: list[Event]) -> dict[int, int]:
    """How often each lease stood in another agent's way (a `reservation.refused` naming its holder
    and pattern); leases that did not are left out."""
    hits: Counter[tuple[str, str]] = Counter()
    for event in refused:
        for conflict in event.payload.get("conflicts") or []:
            if isinstance(conflict, dict):
                hits[(str(conflict.get("holder")), str(conflict.get("pattern")))] += 1
    return {lease.id: n for lease in leases if (n := hits[(lease.holder, lease.pattern)])}
