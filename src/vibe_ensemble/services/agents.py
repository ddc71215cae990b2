"""Agents: registration, presence from heartbeats, retirement."""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import structlog

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, AgentStatus
from vibe_ensemble.domain.errors import InvalidInput, PermissionDenied
from vibe_ensemble.domain.events import EventType
from vibe_ensemble.domain.models import Agent, HeartbeatResult
from vibe_ensemble.domain.permissions import Op, allowed, roles_allowed
from vibe_ensemble.services.base import Service, Transaction, may_act_as
from vibe_ensemble.store import agents as store
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import messages as message_store
from vibe_ensemble.store import reservations as reservation_store

log = structlog.get_logger(__name__)

EXPIRY_WARNING = timedelta(minutes=5)


class AgentService(Service):
    async def register(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        name: str | None = None,
        role: AgentRole | None = None,
        capabilities: list[str] | None = None,
        program: str | None = None,
        model: str | None = None,
        description: str | None = None,
    ) -> Agent:
        """Register a new agent, or re-attach to an existing one of that name.

        Re-attaching sets what is given (role, capabilities, program, model, description); what
        is omitted (None) keeps its value: an agent's new session registering by name alone stays
        a coordinator, and keeps the capabilities `claim_issue` prefers issues by. Given empty, a
        value is cleared. The status starts again at idle. A new agent is a worker unless given.

        Retirement is sticky: a retired agent is reinstated only by a coordinator or admin
        token registering it again; its own (or another worker's) token is refused. A
        coordinator is re-attached only by a coordinator or admin token, so a worker token
        cannot demote it by registering its name.
        """
        caller.require(Op.AGENT_ACT)
        if caller.agent is not None:
            name = caller.acting_agent(name)
        name = rules.agent_name("name", name) if name else rules.memorable_name()
        if role == AgentRole.COORDINATOR and not allowed(caller.role, Op.AGENT_COORDINATE):
            roles = " or ".join(r.value for r in reversed(roles_allowed(Op.AGENT_COORDINATE)))
            raise PermissionDenied(f"registering a coordinator needs a {roles} token", role=role.value)
        given: dict[str, Any] = {}
        if capabilities is not None:
            given["capabilities"] = rules.labels("capabilities", capabilities)
        if program is not None:
            given["program"] = rules.line("program", program, max_len=rules.MAX_LINE, required=False)
        if model is not None:
            given["model"] = rules.line("model", model, max_len=rules.MAX_LINE, required=False)
        if description is not None:
            given["description"] = rules.text(
                "description", description, max_len=rules.MAX_BODY, required=False
            )
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project, present=False)  # written below
            existing = await store.find(tx.conn, proj.id, name)
            if (
                existing is not None
                and existing.retired_at is not None
                and not allowed(caller.role, Op.AGENT_COORDINATE)
            ):
                raise PermissionDenied(
                    f"agent {name!r} was retired; only a coordinator or admin can reinstate it "
                    "(by registering it again with their token)",
                    agent=name,
                )
            if (
                existing is not None
                and existing.role == AgentRole.COORDINATOR
                and not allowed(caller.role, Op.AGENT_COORDINATE)
            ):
                # re-attaching rewrites role, capabilities and description: a worker token must
                # not demote (or re-describe) the team's coordinator by registering its name
                raise PermissionDenied(
                    f"agent {name!r} is a coordinator; only a coordinator or admin token can "
                    "register it again",
                    agent=name,
                    role=caller.role.value,
                )
            values: dict[str, Any] = dict(
                status=AgentStatus.IDLE.value, last_seen=tx.now, retired_at=None, **given
            )
            if role is not None:
                values["role"] = role.value
            if existing is None:
                new = {
                    "role": AgentRole.WORKER.value,
                    "capabilities": [],
                    "program": "",
                    "model": "",
                    "description": "",
                }
                values = {**new, **values}
                await store.lock_name(tx.conn, proj.id, name)
                twin = await store.case_twin(tx.conn, proj.id, name)
                if twin is not None:
                    # `Alice` beside `alice`: to a reader (a person on the dashboard, an agent
                    # addressing mail) they are the same name, so one could pass for the other
                    raise InvalidInput(
                        "name",
                        f"{name!r} differs only in letter case from the agent {twin!r} of this "
                        f"project; choose another name, or register as {twin!r}",
                    )
                await store.insert(tx.conn, proj.id, name, tx.now, **values)
            else:
                await store.update(tx.conn, existing.id, **values)
            agent = await store.get(tx.conn, proj.id, name)
            tx.emit(
                EventType.AGENT_REGISTERED,
                name,
                proj.id,
                agent=name,
                role=agent.role.value,
                capabilities=agent.capabilities,
                reattached=existing is not None,
            )
        self.ctx.presence.written(proj.id, name)
        return agent

    async def heartbeat(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        status: AgentStatus | None = None,
        activity: str | None = None,
        ready_limit: int = 5,
    ) -> HeartbeatResult:
        """Mark the agent alive; return what waits for it.

        Without a status, the agent keeps the one it has; back from offline (the presence sweep's),
        it returns to the one it had then (working, blocked or idle), not to idle."""
        caller.require(Op.AGENT_ACT)
        name = caller.acting_agent(agent)
        if status == AgentStatus.OFFLINE:
            raise InvalidInput("status", "must be idle, working or blocked (offline is set by the server)")
        if activity is not None:
            activity = rules.line("activity", activity, max_len=rules.MAX_NOTE, required=False)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project, present=False)  # written here
            # Locked (PostgreSQL): a retirement under way is waited for and then refuses this, rather
            # than this heartbeat writing `working` over the retired agent's `offline` after it.
            me = await self.acting_as(tx.conn, proj.id, caller, name, lock=True, present=False)
            new_status = status or me.status
            if new_status == AgentStatus.OFFLINE:
                new_status = await store.resume_status(tx.conn, me.id)
            await store.seen(tx.conn, me.id, tx.now, new_status.value, activity)
            # The agent as this heartbeat left it, not read back: no other write touches its row before
            # this commit (locked on PostgreSQL; SQLite has one writer).
            doing = me.activity if activity is None else activity
            seen = dataclasses.replace(me, status=new_status, last_seen=tx.now, activity=doing)
            if new_status != me.status:
                tx.emit(
                    EventType.AGENT_STATUS,
                    name,
                    proj.id,
                    agent=name,
                    status=new_status.value,
                    previous=me.status.value,
                )
            if activity is not None and activity != me.activity:
                tx.emit(EventType.AGENT_ACTIVITY, name, proj.id, agent=name, activity=activity)
        self.ctx.presence.written(proj.id, name)
        # What waits for the agent is read beside the writer, not under it: on SQLite the one
        # writer is the shared bottleneck, and a heartbeat is the most frequent call.
        async with self.read() as rx:
            unread, urgent = await message_store.unread_with_urgent(rx.conn, me.id, limit=10)
            assigned, ready = await issue_store.unfinished_and_ready(
                rx.conn, me.id, proj.id, limit=ready_limit
            )
            expiring = await reservation_store.held_by(rx.conn, me.id, rx.now, until=rx.now + EXPIRY_WARNING)
        return HeartbeatResult(
            agent=seen,
            unread_messages=unread,
            urgent_unread=urgent,
            assigned_issues=assigned,
            ready_issues=ready,
            expiring_reservations=expiring,
        )

    async def list(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        role: AgentRole | None = None,
        status: AgentStatus | None = None,
        include_retired: bool = False,
    ) -> list[Agent]:
        caller.require(Op.AGENT_READ)
        async with self.snapshot() as conn:
            proj = await self.project(conn, caller, project)
            return await store.in_project(
                conn, proj.id, role=role, status=status, include_retired=include_retired
            )

    async def actable(
        self, caller: Caller, *, project: str | None = None, ops: Iterable[Op] = ()
    ) -> builtins.list[Agent]:
        """The active agents `caller` may act as in the project for a call that needs `ops` (an inbox's
        read, a briefing): a bound token its own agent only, a team token those its role may speak for
        (`may_act_as`: a coordinator needs a role that may lead). What an `agent` argument completes to."""
        for op in ops:
            caller.require(op)
        agents = await self.list(caller, project=project)
        if caller.agent is not None:
            return [a for a in agents if a.name == caller.agent]
        return [a for a in agents if _may_act_as(caller, a)]

    async def retire(
        self, caller: Caller, *, name: str, project: str | None = None, reason: str = ""
    ) -> Agent:
        """Retire an agent: it goes offline, its leases are released, its open work goes back to the pool."""
        caller.require(Op.AGENT_RETIRE)
        rules.text("name", name, max_len=rules.MAX_NAME)  # a name, not an essay (echoed if not found)
        reason = rules.text("reason", reason, max_len=rules.MAX_NOTE, required=False)
        async with self.write() as tx:
            proj = await self.project(tx.conn, caller, project)
            agent = await store.get(tx.conn, proj.id, name)
            await self._retire(tx, proj.id, agent, actor=caller.display, reason=reason)
            tx.audit(caller, "agent.retired", project=proj.slug, agent=name, reason=reason)
            return await store.get(tx.conn, proj.id, name, active=False)

    async def _retire(
        self, tx: Transaction, project_id: int, agent: Agent, *, actor: str, reason: str
    ) -> None:
        await store.retire(tx.conn, agent.id, tx.now)
        released = await reservation_store.release_all(tx.conn, agent.id, tx.now)
        reopened = await issue_store.unassign(tx.conn, agent.id, tx.now, statuses=issue_store.ALL_UNFINISHED)
        tx.emit(
            EventType.AGENT_RETIRED,
            actor,
            project_id,
            agent=agent.name,
            reason=reason,
            released_reservations=released,
            reopened_issues=reopened,
        )

    async def heard_from(self, project_id: int, name: str) -> None:
        """An agent called the server (`Presence.heard`): it is seen now; back from offline, it returns
        to the status it had (an `agent.status` event, reason "active again"). Retired or unknown
        agents are left alone. Runs beside the call that was heard: a failure is logged, never raised."""
        try:
            async with self.write() as tx:
                if await store.heard(tx.conn, project_id, name, tx.now):  # the usual case: one UPDATE
                    return
                agent = await store.find(tx.conn, project_id, name, lock=True)  # as a heartbeat (above)
                if agent is None or agent.retired_at is not None or agent.status != AgentStatus.OFFLINE:
                    return
                back = await store.resume_status(tx.conn, agent.id)
                await store.seen(tx.conn, agent.id, tx.now, back.value, None)
                tx.emit(
                    EventType.AGENT_STATUS,
                    name,
                    project_id,
                    agent=name,
                    status=back.value,
                    previous=AgentStatus.OFFLINE.value,
                    reason="active again",
                )
        except Exception as exc:  # presence not written fails no call; the next one a while on tries again
            log.info("presence_not_recorded", agent=name, error=type(exc).__name__)

    async def sweep_presence(self, *, offline_after: timedelta, retire_after: timedelta) -> tuple[int, int]:
        """Mark silent agents offline (keeping the status each had, to return to) and retire
        long-idle ones. Returns (offlined, retired)."""
        async with self.write() as tx:
            offlined = 0
            before = tx.now - offline_after
            for project_id, agent in await store.silent_since(tx.conn, before):
                if not await store.go_offline(tx.conn, agent.id, before):
                    continue  # heard from since it was read (PostgreSQL: another connection's commit)
                tx.emit(
                    EventType.AGENT_STATUS,
                    "system",
                    project_id,
                    agent=agent.name,
                    status=AgentStatus.OFFLINE.value,
                    previous=agent.status.value,
                    reason="missed heartbeats",
                )
                offlined += 1
            idle = await store.idle_since(tx.conn, tx.now - retire_after)
            for project_id, agent in idle:
                await self._retire(tx, project_id, agent, actor="system", reason="idle")
        return offlined, len(idle)


def _may_act_as(caller: Caller, agent: Agent) -> bool:
    try:
        may_act_as(caller, agent)
    except PermissionDenied:
        return False
    return True
