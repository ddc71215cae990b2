"""The board as the dashboard shows it: five columns for people, a few cards each, true counts.

`briefings.board` (REST and MCP) returns up to 200 issues per status; a person needs the most urgent
few and how many there are, which is much cheaper on a big project (bench/dashboard.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.models import Agent, Reservation
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.services.briefings import Card, card
from vibe_ensemble.store import agents as agent_store
from vibe_ensemble.store import dependencies as dependency_store
from vibe_ensemble.store import issues as store
from vibe_ensemble.store import reservations as reservation_store

COLUMNS = ("ready", "in_progress", "review", "blocked", "done")


@dataclass
class PeopleBoard:
    project: str
    columns: dict[str, list[Card]]  # ready, in_progress, review, blocked, done: the first few of each
    counts: dict[str, int]  # how many issues each column has
    agents: list[Agent]  # not retired, by name
    leases: list[Reservation]  # every live lease, oldest first


class DashboardService(Service):
    async def board(self, caller: Caller, *, project: str | None = None, per_column: int = 30) -> PeopleBoard:
        """Ready (open, unassigned, dependencies finished), in progress, review, blocked (marked, or open
        and not ready), done (done and closed, newest first) — `per_column` cards each, in one snapshot."""
        for op in (Op.PROJECT_READ, Op.AGENT_READ, Op.ISSUE_READ, Op.RESERVATION_READ):
            caller.require(op)
        async with self.read() as tx:
            conn = tx.conn
            proj = await self.project(conn, caller, project)
            counts = await store.count_by_status(conn, proj.id)
            ready = await dependency_store.ready_count(conn, proj.id)
            finished = [
                *await store.with_status(conn, proj.id, IssueStatus.DONE, limit=per_column),
                *await store.with_status(conn, proj.id, IssueStatus.CLOSED, limit=per_column),
            ]
            finished.sort(key=lambda i: (i.updated_at, i.id), reverse=True)
            listed = {
                "ready": await store.ready_in(conn, proj.id, limit=per_column),
                "in_progress": await store.with_status(
                    conn, proj.id, IssueStatus.IN_PROGRESS, limit=per_column
                ),
                "review": await store.with_status(conn, proj.id, IssueStatus.REVIEW, limit=per_column),
                "blocked": await store.waiting_in(conn, proj.id, limit=per_column),
                "done": finished[:per_column],
            }
            waits = await dependency_store.unfinished_dependencies_of(
                conn, (i.id for issues in listed.values() for i in issues if i.depends_on)
            )
            columns = {
                key: [card(i, ready=key == "ready", waits_on=waits.get(i.id, [])) for i in issues]
                for key, issues in listed.items()
            }
            agents = await agent_store.in_project(conn, proj.id)
            leases = await reservation_store.live_in_project(conn, proj.id, tx.now)

        def n(status: IssueStatus) -> int:
            return counts.get(status.value, 0)

        totals = {
            "ready": ready,
            "in_progress": n(IssueStatus.IN_PROGRESS),
            "review": n(IssueStatus.REVIEW),
            "blocked": n(IssueStatus.BLOCKED) + n(IssueStatus.OPEN) - ready,
            "done": n(IssueStatus.DONE) + n(IssueStatus.CLOSED),
        }
        return PeopleBoard(proj.slug, columns, totals, agents, leases)
