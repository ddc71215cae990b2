"""What the dashboard draws: the issues' dependency graph (with its critical path) and trends."""

from __future__ import annotations

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.graph import Graph, layout
from vibe_ensemble.domain.permissions import Op
from vibe_ensemble.services.base import Service
from vibe_ensemble.store import graph as store

MAX_NODES = 300  # unfinished issues drawn, most urgent first


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
