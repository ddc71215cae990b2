"""Briefings: the live state of a project as one agent should see it before it acts.

The MCP prompts `coordinator_briefing` and `worker_briefing` render these; this
module only gathers the facts, in one read snapshot, under the caller's rights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentStatus, IssueStatus, KnowledgeKind
from vibe_ensemble.domain.models import (
    Agent,
    InboxItem,
    Issue,
    KnowledgeEntry,
    KnowledgeHit,
    Project,
    Reservation,
)
from vibe_ensemble.domain.permissions import Op, allowed
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import dependencies as dependency_store
from vibe_ensemble.store import issues as issue_store
from vibe_ensemble.store import knowledge as knowledge_store
from vibe_ensemble.store import messages as message_store
from vibe_ensemble.store import reservations as reservation_store
from vibe_ensemble.store.database import Connection

_STATUS_ORDER = [AgentStatus.WORKING, AgentStatus.BLOCKED, AgentStatus.IDLE, AgentStatus.OFFLINE]
GUIDANCE_KINDS = [KnowledgeKind.GUIDELINE, KnowledgeKind.PRACTICE, KnowledgeKind.DECISION]


@dataclass
class Briefing:
    project: Project
    me: Agent | None  # the acting agent, when the caller is one
    agents: list[Agent]  # active (not retired), working ones first
    ready: list[Issue]  # ready to claim, best first
    in_progress: list[Issue]
    blocked: list[Issue]  # marked blocked, or open and waiting on unfinished dependencies
    mine: list[Issue]  # assigned to the acting agent and not finished
    # what each issue above still waits on: its unfinished dependencies (finished ones are not
    # waited on; an issue waiting on nothing is absent)
    waits_on: dict[int, list[int]]
    my_leases: list[Reservation]
    leases: list[Reservation]  # every live lease in the project
    # the acting agent's unread mail: how much, and the first few, oldest first; None (and no mail)
    # when the caller's token may not read mail (a viewer's): unknown, not zero
    unread: int | None
    mail: list[InboxItem]
    guidance: list[KnowledgeEntry]  # the most relevant guidelines, practices and decisions
    counts: dict[str, int] = field(default_factory=dict)  # issues per status
    # how long an agent may go without a call before it shows as offline (VIBE_OFFLINE_AFTER_S)
    offline_after_s: float = 120.0


@dataclass
class Card:
    """An issue on the board, without its body."""

    id: int
    title: str
    priority: str
    assignee: str | None
    labels: list[str]
    depends_on: list[int]  # every dependency, finished ones too
    waits_on: list[int]  # the unfinished ones among them: what it still waits on
    ready: bool
    version: int


@dataclass
class Board:
    """The project at a glance: issues by status, the team, and who holds what."""

    project: str
    columns: dict[str, list[Card]]  # status -> cards (done and closed: the most recent only)
    agents: list[Agent]
    leases: list[Reservation]


def card(issue: Issue, *, ready: bool, waits_on: list[int]) -> Card:
    """`issue` as a board's card; `waits_on`: its unfinished dependencies."""
    return Card(
        id=issue.id,
        title=issue.title,
        priority=issue.priority.value,
        assignee=issue.assignee,
        labels=issue.labels,
        depends_on=issue.depends_on,
        waits_on=waits_on,
        ready=ready,
        version=issue.version,
    )


# What reading a briefing needs (mail in it needs message.read too, and is left out without it)
BRIEFING_OPS = (Op.PROJECT_READ, Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ, Op.KNOWLEDGE_READ)
BOARD_LIMIT = 200
BOARD_FINISHED_LIMIT = 20


class BriefingService(Service):
    async def board(self, caller: Caller, *, project: str | None = None) -> Board:
        for op in (Op.PROJECT_READ, Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ):
            caller.require(op)
        async with self.read() as tx:
            conn = tx.conn
            proj = await self.project(conn, caller, project)
            ready_ids = await dependency_store.ready_ids(conn, proj.id)
            listed: dict[str, list[Issue]] = {}
            for status in IssueStatus:
                limit = BOARD_FINISHED_LIMIT if status.finished else BOARD_LIMIT
                listed[status.value] = await issue_store.with_status(conn, proj.id, status, limit=limit)
            waits = await dependency_store.unfinished_dependencies_of(
                conn, (i.id for issues in listed.values() for i in issues if i.depends_on)
            )
            columns = {
                status: [card(i, ready=i.id in ready_ids, waits_on=waits.get(i.id, [])) for i in issues]
                for status, issues in listed.items()
            }
            team = await agent_store.in_project(conn, proj.id)
            leases = await reservation_store.live_in_project(conn, proj.id, tx.now)
        return Board(project=proj.slug, columns=columns, agents=team, leases=leases)

    async def assemble(
        self,
        caller: Caller,
        *,
        project: str | None = None,
        agent: str | None = None,
        limit: int = 10,
    ) -> Briefing:
        """Gather the briefing in one snapshot. Mail is included only for an acting agent, and only
        when the caller's token may read mail (else `unread` is None: not visible, never "0").
        Every other section needs an operation required here, so none is shown empty for want of
        a right: the briefing is refused instead, naming it."""
        for op in BRIEFING_OPS:
            caller.require(op)
        name = caller.acting_agent(agent) if (agent or caller.agent) else None
        async with self.read() as tx:
            conn = tx.conn
            proj = await self.project(conn, caller, project)
            me = None if name is None else await self.acting_as(conn, proj.id, caller, name)
            team = await agent_store.in_project(conn, proj.id)
            team.sort(key=lambda a: _STATUS_ORDER.index(a.status))
            ready = await issue_store.ready_in(conn, proj.id, limit=limit)
            in_progress = await issue_store.with_status(conn, proj.id, IssueStatus.IN_PROGRESS, limit=limit)
            blocked = await issue_store.blocked_in(conn, proj.id, limit=limit)
            counts = await issue_store.count_by_status(conn, proj.id)
            leases = await reservation_store.live_in_project(conn, proj.id, tx.now)
            mine: list[Issue] = []
            unread: int | None = None
            mail: list[InboxItem] = []
            if me is not None:
                mine = await issue_store.unfinished_of(conn, me.id)
                if allowed(caller.role, Op.MESSAGE_READ):
                    unread = await message_store.unread_count(conn, me.id)
                    mail = await message_store.unread(conn, me.id, limit=5)
            listed = [*ready, *in_progress, *blocked, *mine]
            waits = await dependency_store.unfinished_dependencies_of(
                conn, (i.id for i in listed if i.depends_on)
            )
            guidance = await self._guidance(conn, proj.id, mine or in_progress)
        return Briefing(
            project=proj,
            me=me,
            agents=team,
            ready=ready,
            in_progress=in_progress,
            blocked=blocked,
            mine=mine,
            waits_on=dict(waits),
            my_leases=[r for r in leases if me is not None and r.holder == me.name],
            leases=leases,
            unread=unread,
            mail=mail,
            guidance=guidance,
            counts=counts,
            offline_after_s=self.ctx.presence.offline_after_s,
        )

    async def _guidance(self, conn: Connection, project_id: int, focus: list[Issue]) -> list[KnowledgeEntry]:
        """Guidelines, practices and decisions: those relevant to `focus` first, then the newest."""
        chosen: dict[int, KnowledgeEntry] = {}
        words = knowledge_store.terms(" ".join(f"{i.title} {' '.join(i.labels)}" for i in focus[:5]))
        hits: list[KnowledgeHit] = await knowledge_store.search(conn, project_id, words, limit=20)
        for hit in hits:
            if hit.kind in GUIDANCE_KINDS and len(chosen) < 5:
                chosen[hit.id] = await knowledge_store.get(conn, project_id, hit.id)
        for entry in await knowledge_store.recent(conn, project_id, kinds=GUIDANCE_KINDS, limit=8):
            if len(chosen) >= 5:
                break
            chosen.setdefault(entry.id, entry)
        return list(chosen.values())
