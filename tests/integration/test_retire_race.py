"""A retirement racing the retiring agent's own reserve and claim leaves it holding nothing.

Retiring releases the agent's leases and gives its unfinished issues back. A lease granted, or an
issue claimed, by a write that read the agent as active just before its retirement committed (at
PostgreSQL's READ COMMITTED) outlived the retirement: a lease blocking others for its whole TTL,
an issue in progress under an agent nobody may act as. Each round races the three on one agent.
"""

from __future__ import annotations

import asyncio

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import IssueStatus
from vibe_ensemble.domain.errors import DatabaseUnavailable, VibeError
from vibe_ensemble.services import Services

from .test_claims import bound

ROUNDS = 12


async def test_a_retired_agent_keeps_no_lease_and_no_issue_won_in_a_race(
    services: Services, admin: Caller
) -> None:
    outcomes: list[str] = []
    for r in range(ROUNDS):
        name = f"leaving-{r:02d}"
        await services.agents.register(admin, name=name)
        issue = await services.issues.create(admin, title=f"job {r}")
        me = bound(name)
        # a few of each, so some start before the retirement's transaction and some after it
        results = await asyncio.gather(
            services.reservations.reserve(me, [f"r{r}/a.py"], ttl_s=3600),
            services.issues.claim(me, issue.id),
            services.agents.retire(admin, name=name),
            services.reservations.reserve(me, [f"r{r}/b.py"], ttl_s=3600),
            services.issues.claim(me, issue.id),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and (
                not isinstance(result, VibeError) or isinstance(result, DatabaseUnavailable)
            ):
                raise result  # a refusal is fine; a deadlock or a crash is not
        outcomes.append("".join("x" if isinstance(x, VibeError) else "." for x in results))
        assert not isinstance(results[2], BaseException), results[2]
        leases = await services.reservations.list(admin, holder=name)
        assert leases == [], f"round {r}: {name} is retired yet holds {[x.pattern for x in leases]}"
        got = (await services.issues.get(admin, issue.id)).issue
        assert got.assignee is None and got.status == IssueStatus.OPEN, (
            f"round {r}: issue {issue.id} is {got.status.value} under {got.assignee} after its retirement"
        )
    # the race was run: in some rounds a write came after the retirement and was refused
    assert any("x" in o for o in outcomes), outcomes
