"""Presence: an agent calling the server is present (any call acting as it, through any door, a held
wait_for_messages too), written at most once per agent and interval; an agent back from offline
returns to the status it had. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx2
import sqlalchemy as sa
from sqlalchemy import Connection

from vibe_ensemble.api.app import create_app
from vibe_ensemble.api.mcp.prompts import worker_prompt
from vibe_ensemble.domain.caller import SYSTEM, Caller
from vibe_ensemble.domain.enums import AgentStatus, TokenRole
from vibe_ensemble.runtime import Runtime
from vibe_ensemble.services import Services
from vibe_ensemble.store.tables import agents

LONG_AGO = timedelta(hours=1)


class Ticks:
    """The presence's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def bound(name: str, role: TokenRole = TokenRole.WORKER) -> Caller:
    return Caller(credential_id=None, role=role, project="default", agent=name, label=name)


TEAM = Caller(credential_id=None, role=TokenRole.WORKER, project="default", label="team")
VIEWER = Caller(credential_id=None, role=TokenRole.VIEWER, project="default", label="wall")


async def _seen(runtime: Runtime, name: str) -> tuple[datetime, str]:
    def read(conn: Connection) -> tuple[datetime, str]:
        row = conn.execute(sa.select(agents.c.last_seen, agents.c.status).where(agents.c.name == name)).one()
        return row.last_seen, row.status

    seen, status = await runtime.db.run_sync(read)
    return (seen if seen.tzinfo else seen.replace(tzinfo=runtime.services.ctx.clock().tzinfo)), status


async def _silent_since(runtime: Runtime, name: str, when: datetime) -> None:
    def write(conn: Connection) -> None:
        conn.execute(agents.update().where(agents.c.name == name).values(last_seen=when))

    await runtime.db.run_sync(write, write=True)


async def _settled(services: Services) -> None:
    await services.ctx.presence.settle()


async def test_any_call_as_an_agent_keeps_it_present_once_per_interval(runtime: Runtime) -> None:
    services = runtime.services
    ticks = Ticks()
    services.ctx.presence.clock = ticks
    for name in ("ann", "bob", "cy"):
        await services.agents.register(SYSTEM, name=name)
    old = services.ctx.clock() - LONG_AGO
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("ann", lambda: services.issues.list(bound("ann"))),  # a bound token's read names no agent
        ("bob", lambda: services.messages.fetch_inbox(TEAM, agent="bob")),  # a team token acting
        ("cy", lambda: services.knowledge.search(bound("cy"), "anything")),
    ]
    for name, call in calls:
        await _silent_since(runtime, name, old)
        ticks.now += services.ctx.presence.interval_s
        await call()
        await _settled(services)
        seen, _ = await _seen(runtime, name)
        assert seen > old + LONG_AGO / 2, name

        # within the interval, calls write nothing more: the check is in memory
        await _silent_since(runtime, name, old)
        for _ in range(5):
            await call()
        await _settled(services)
        assert (await _seen(runtime, name))[0] == old, name

    # a viewer reading bob's briefing is not bob calling
    await _silent_since(runtime, "bob", old)
    ticks.now += services.ctx.presence.interval_s
    briefing = await services.briefings.assemble(VIEWER, agent="bob")
    worker_prompt(briefing, services.ctx.clock(), VIEWER.role)
    await _settled(services)
    assert (await _seen(runtime, "bob"))[0] == old


async def test_an_agent_back_from_offline_returns_to_the_status_it_had(runtime: Runtime) -> None:
    """The report: working on #7, silent past the offline window, offline; then a heartbeat
    without a status (as a client's hook sends) brings back `working`, not `idle`. And any call
    brings back what it had too (`blocked` here), with an `agent.status` event."""
    services = runtime.services
    services.ctx.presence.clock = ticks = Ticks()
    await services.agents.register(SYSTEM, name="ann")
    await services.agents.heartbeat(bound("ann"), status=AgentStatus.WORKING, activity="implementing #7")
    assert await services.agents.sweep_presence(
        offline_after=timedelta(0), retire_after=timedelta(days=7)
    ) == (
        1,
        0,
    )
    (ann,) = await services.agents.list(SYSTEM)
    assert ann.status == AgentStatus.OFFLINE
    beat = await services.agents.heartbeat(bound("ann"))
    assert (beat.agent.status, beat.agent.activity) == (AgentStatus.WORKING, "implementing #7")

    await services.agents.heartbeat(bound("ann"), status=AgentStatus.BLOCKED)
    await services.agents.sweep_presence(offline_after=timedelta(0), retire_after=timedelta(days=7))
    before = (await services.events.page(SYSTEM, limit=1000)).last_id
    ticks.now += services.ctx.presence.interval_s
    await services.issues.list(bound("ann"))
    await _settled(services)
    assert (await _seen(runtime, "ann"))[1] == AgentStatus.BLOCKED.value
    events = (await services.events.page(SYSTEM, after=before)).items
    assert [(e.type, e.payload) for e in events] == [
        (
            "agent.status",
            {"agent": "ann", "status": "blocked", "previous": "offline", "reason": "active again"},
        )
    ]


async def test_a_rest_call_with_an_agents_token_keeps_it_present(runtime: Runtime) -> None:
    services = runtime.services
    services.ctx.presence.clock = ticks = Ticks()
    await services.agents.register(SYSTEM, name="ann")
    _, token = await services.tokens.create(SYSTEM, role=TokenRole.WORKER, project="default", agent="ann")
    old = services.ctx.clock() - LONG_AGO
    await _silent_since(runtime, "ann", old)
    ticks.now += services.ctx.presence.interval_s
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=create_app(runtime)),
        base_url="http://127.0.0.1",
        headers={"Authorization": f"Bearer {token}"},
    ) as http:
        answer = await http.get("/api/v1/projects/default/issues")
    assert answer.status_code == 200
    await _settled(services)
    assert (await _seen(runtime, "ann"))[0] > old + LONG_AGO / 2


async def test_an_agent_waiting_for_mail_stays_present(runtime: Runtime) -> None:
    """A held wait_for_messages keeps its agent present while it waits, every presence interval
    (short here), not only when it begins and ends."""
    services = runtime.services
    services.ctx.presence.interval_s = 0.05
    await services.agents.register(SYSTEM, name="ann")
    await services.agents.register(SYSTEM, name="bob")
    await runtime.start_live()
    try:
        await _waits_present(runtime)
    finally:
        await runtime.stop_live()


async def _waits_present(runtime: Runtime) -> None:
    services = runtime.services
    wait = asyncio.create_task(services.live.wait_for_messages(bound("ann"), timeout_s=20))
    await asyncio.sleep(0)  # the wait begins: its agent is heard from then
    await _settled(services)
    began, _ = await _seen(runtime, "ann")

    async with asyncio.timeout(10):
        while (await _seen(runtime, "ann"))[0] <= began + timedelta(seconds=0.2):
            assert not wait.done()
            await asyncio.sleep(0.02)
    await services.messages.send(SYSTEM, agent="bob", to=["ann"], subject="done waiting", body="b")
    inbox = await wait
    assert [i.message.subject for i in inbox.items] == ["done waiting"]


async def test_a_retired_agent_is_not_brought_back_by_its_tokens_calls(runtime: Runtime) -> None:
    services = runtime.services
    services.ctx.presence.clock = ticks = Ticks()
    await services.agents.register(SYSTEM, name="ann")
    await services.agents.retire(SYSTEM, name="ann")
    ticks.now += services.ctx.presence.interval_s
    await services.issues.list(bound("ann"))  # reading is still allowed; it is no sign of presence
    await _settled(services)
    (ann,) = await services.agents.list(SYSTEM, include_retired=True)
    assert ann.status == AgentStatus.OFFLINE and ann.retired_at is not None


async def test_an_agent_set_offline_by_the_release_before_comes_back_idle(runtime: Runtime) -> None:
    """The release before migration 0012 kept no status when its sweep set an agent offline: such an
    agent comes back idle, as it did then."""
    services = runtime.services
    await services.agents.register(SYSTEM, name="ann")
    await services.agents.heartbeat(bound("ann"), status=AgentStatus.WORKING)

    def as_the_old_release_swept(conn: Connection) -> None:
        conn.execute(agents.update().values(status="offline", resume_status=None))

    await runtime.db.run_sync(as_the_old_release_swept, write=True)
    assert (await services.agents.heartbeat(bound("ann"))).agent.status == AgentStatus.IDLE


async def test_a_retirement_racing_heartbeats_and_calls_leaves_the_agent_retired_and_offline(
    runtime: Runtime,
) -> None:
    """PostgreSQL read the agent unlocked, then wrote `working` (a heartbeat) or its status from before
    offline (a call heard from it) over the retirement that committed in between: agents retired and
    `working`, with "active again" events after their retirement. The row is read locked now, and a
    retired agent's status is never written: each ends retired and offline, whichever came first."""
    services = runtime.services
    names = [f"r{i}" for i in range(30)]
    for name in names:
        await services.agents.register(SYSTEM, name=name)
        await services.agents.heartbeat(bound(name), status=AgentStatus.WORKING)
    await _silent_since(runtime, "r0", services.ctx.clock() - LONG_AGO)
    await services.agents.sweep_presence(offline_after=timedelta(minutes=2), retire_after=timedelta(days=30))
    project_id = (await services.projects.get(SYSTEM, "default")).id

    async def race(name: str) -> None:
        await asyncio.gather(
            services.agents.retire(SYSTEM, name=name),
            services.agents.heartbeat(bound(name), status=AgentStatus.WORKING),
            services.agents.heard_from(project_id, name),
            return_exceptions=True,  # a heartbeat after the retirement is refused: the agent is gone
        )

    await asyncio.gather(*(race(name) for name in names))
    retired = {a.name: a for a in await services.agents.list(SYSTEM, include_retired=True)}
    assert {n: retired[n].status for n in names if retired[n].status != AgentStatus.OFFLINE} == {}
    assert all(retired[n].retired_at is not None for n in names)
