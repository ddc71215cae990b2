"""What needs a person now (the rules are in `domain.attention`), and the action that clears the
commonest item: releasing a silent agent's work."""

from __future__ import annotations

from vibe_ensemble.domain import errors
from vibe_ensemble.domain.attention import (
    Attention,
    AttentionRules,
    BlockedIssue,
    Conflict,
    ExpiringLease,
    IssueRef,
    SilentHolder,
    earliest,
    is_silent,
)
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Event, Issue, Reservation
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import attention as store
from vibe_ensemble.store import dependencies as dependency_store
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import reservations as reservation_store


def _ref(issue: Issue) -> IssueRef:
    return IssueRef(issue.id, issue.title, issue.status, issue.priority.value, issue.assignee)


def _conflict(event: Event) -> Conflict:
    p = event.payload
    return Conflict(
        event_id=event.id,
        time=event.time,
        agent=str(p.get("agent", event.actor)),
        source=str(p.get("source", "")),
        paths=[str(x) for x in p.get("paths") or []],
        holders=sorted({str(c.get("holder", "")) for c in p.get("conflicts") or [] if isinstance(c, dict)}),
    )


class AttentionService(Service):
    async def overview(
        self, caller: Caller, *, project: str | None = None, rules: AttentionRules | None = None
    ) -> Attention:
        """Everything that needs a person in the project now, in one read snapshot."""
        for op in (Op.PROJECT_READ, Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ, Op.EVENT_READ):
            caller.require(op)
        rules = rules or AttentionRules()
        async with self.read() as tx:
            conn, now = tx.conn, tx.now
            proj = await self.project(conn, caller, project)
            team = await agent_store.in_project(conn, proj.id)
            working = await store.in_progress_by_agent(conn, proj.id)
            leases = await reservation_store.live_in_project(conn, proj.id, now)
            blocked = [_ref(i) for i in await issue_store.blocked_in(conn, proj.id, limit=rules.limit)]
            blocked_total = await dependency_store.blocked_count(conn, proj.id)
            deps = {i.id: i.depends_on for i in await issue_store.by_ids(conn, [b.id for b in blocked])}
            wanted = {d for ds in deps.values() for d in ds}
            unfinished = {
                d.id: _ref(d) for d in await issue_store.by_ids(conn, wanted) if not d.status.finished
            }
            waits = {i: [unfinished[d] for d in ds if d in unfinished] for i, ds in deps.items()}
            reasons = await store.latest_comments(conn, [i.id for i in blocked])
            unacked = await store.unacked(conn, proj.id, now - rules.ack_after, rules.limit)
            next_ack = await store.first_pending_ack_after(conn, proj.id, now - rules.ack_after)
            refused = await store.events_since(
                conn,
                proj.id,
                proj.slug,
                [EventType.RESERVATION_REFUSED],
                now - rules.conflict_window,
                rules.limit,
            )
        found = Attention(project=proj.slug, now=now, rules=rules)
        by_holder: dict[str, list[Reservation]] = {}
        for lease in leases:
            by_holder.setdefault(lease.holder, []).append(lease)
        later = [] if next_ack is None else [next_ack + rules.ack_after]
        for agent in team:
            issues = working.get(agent.id, [])
            held = by_holder.get(agent.name, [])
            if not issues and not held:
                continue
            if is_silent(agent.status, agent.last_seen, now, rules):
                found.silent.append(
                    SilentHolder(agent.name, agent.role.value, agent.status, agent.last_seen, issues, held)
                )
                continue
            later.append(agent.last_seen + rules.silent_after)
            if agent.status == AgentStatus.WORKING or issues:
                for lease in held:
                    if lease.expires_at <= now + rules.lease_warning:
                        found.expiring.append(ExpiringLease(lease, agent.status, issues))
                    else:
                        later.append(lease.expires_at - rules.lease_warning)
        found.expiring.sort(key=lambda e: e.lease.expires_at)
        found.blocked = [
            BlockedIssue(
                issue=i,
                marked=i.status.value == "blocked",
                reason=reasons.get(i.id, ("", ""))[1],
                reason_by=reasons.get(i.id, ("", ""))[0],
                waits_on=waits.get(i.id, []),
            )
            for i in blocked
        ]
        found.blocked_total = blocked_total
        found.unacked = unacked
        found.conflicts = [_conflict(e) for e in refused]
        if found.conflicts:
            later.append(min(c.time for c in found.conflicts) + rules.conflict_window)
        found.recheck_at = earliest(later, now)
        return found

    async def release(
        self, caller: Caller, *, name: str, project: str | None = None, rules: AttentionRules | None = None
    ) -> tuple[int, list[int]]:
        """Release a silent agent's leases and put its issues in progress back in the pool (it stays
        registered). An agent that is no longer silent (it came back after the page that offered this
        was drawn) keeps its work: Conflict, nothing changes.

        Returns (leases released, issues reopened). Audited as `agent.work_released`.
        """
        caller.require(Op.AGENT_RETIRE)
        rules = rules or AttentionRules()
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            agent = await agent_store.get(tx.conn, proj.id, name)
            if not is_silent(agent.status, agent.last_seen, tx.now, rules):
                seen = max(0, round((tx.now - agent.last_seen).total_seconds()))
                raise errors.Conflict(
                    f"{name} is not silent any more (last seen {seen} s ago, {agent.status.value}): its work "
                    "was not released; reload the page",
                    agent=name,
                )
            released = await reservation_store.release_all(tx.conn, agent.id, tx.now)
            reopened = await issue_store.unassign(
                tx.conn, agent.id, tx.now, statuses=issue_store.IN_PROGRESS_ONLY
            )
            tx.emit(
                EventType.AGENT_RELEASED,
                caller.display,
                proj.id,
                agent=name,
                released_reservations=released,
                reopened_issues=reopened,
            )
            tx.audit(
                caller,
                "agent.work_released",
                project=proj.slug,
                agent=name,
                released_reservations=released,
                reopened_issues=reopened,
            )
        return released, reopened
