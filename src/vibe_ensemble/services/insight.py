"""What the dashboard draws: the issues' dependency graph (with its critical path) and trends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from vibe_ensemble.domain import rules
from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.charts import Chart, bar_chart, busiest, last_days
from vibe_ensemble.domain.graph import Graph, layout
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import graph as store
from vibe_ensemble.store import trends as trend_store

MAX_NODES = 300  # unfinished issues drawn, most urgent first
MAX_DAYS = 90
THROUGHPUT_AGENTS = 5  # agents drawn in the throughput chart: those who finished most


@dataclass
class Trends:
    project: str
    issues: Chart  # opened and closed per day
    mail: Chart  # messages sent per day
    throughput: Chart  # issues finished per day by each of the agents who finished most
    other_agents: int = 0  # agents who finished issues too, left out of `throughput`
    other_finished: int = 0  # how many issues they finished


class InsightService(Service):
    async def graph(self, caller: Caller, *, project: str | None = None, limit: int = MAX_NODES) -> Graph:
        """The unfinished issues (up to `limit`, most urgent first), the finished issues they depend
        on, and their dependencies, laid out with the critical path marked."""
        caller.require(Op.ISSUE_READ)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            shown, total = await store.unfinished(tx.conn, proj.id, limit=limit)
            deps = await store.dependencies(tx.conn, [r.id for r in shown])
            have = {r.id for r in shown}
            wanted = {d for ds in deps.values() for d in ds} - have
            done = await store.refs(tx.conn, proj.id, wanted)
        # an unfinished dependency beyond the cap is left out, with its edges
        finished = [r for r in done if r.status.finished]
        return layout([*shown, *finished], deps, left_out=total - len(shown))

    async def trends(self, caller: Caller, *, project: str | None = None, days: int = 14) -> Trends:
        """Issues opened and finished, messages sent, and issues finished by each of the agents who
        finished most (by assignee), per UTC day over the last `days` days (today included)."""
        caller.require(Op.ISSUE_READ)
        caller.require(Op.EVENT_READ)
        days = rules.limit("days", days, maximum=MAX_DAYS)
        async with self.read() as tx:
            proj = await self.project(tx.conn, caller, project)
            span = last_days(tx.now.astimezone(UTC).date(), days)
            since = datetime.combine(span[0], time(), tzinfo=UTC)
            opened = await trend_store.opened(tx.conn, proj.id, since)
            closed = await trend_store.closed(tx.conn, proj.id, since)
            sent = await trend_store.sent(tx.conn, proj.id, since)
            by_agent = await trend_store.finished_by(tx.conn, proj.id, since)
        shown, other_agents, other_finished = busiest(by_agent, THROUGHPUT_AGENTS)
        return Trends(
            proj.slug,
            bar_chart("Issues opened and finished per day", span, {"opened": opened, "finished": closed}),
            bar_chart("Messages per day", span, {"messages": sent}),
            bar_chart("Issues finished per agent per day", span, shown),
            other_agents,
            other_finished,
        )
