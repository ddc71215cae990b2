"""Agents: what a heartbeat reports, and presence changes as events."""

from __future__ import annotations

from datetime import timedelta

from vibe_ensemble.domain.caller import Caller
from vibe_ensemble.domain.enums import AgentRole, AgentStatus, Priority
from vibe_ensemble.domain.models import Agent
from vibe_ensemble.services import Services


async def test_heartbeat_reports_the_agents_work_and_records_status_changes(
    services: Services, admin: Caller
) -> None:
    await services.agents.register(admin, name="hb")
    await services.agents.register(admin, name="other")
    low = await services.issues.create(admin, title="low", agent="hb", priority=Priority.P3)
    high = await services.issues.create(admin, title="high", agent="hb", priority=Priority.P0)
    blocked = await services.issues.create(admin, title="blocked", agent="hb", depends_on=[low.id])
    mine = await services.issues.create(admin, title="mine", agent="hb")
    await services.issues.claim(admin, mine.id, agent="hb")
    before = (await services.events.page(admin, limit=1000)).last_id

    beat = await services.agents.heartbeat(
        admin, agent="hb", status=AgentStatus.BLOCKED, activity="stuck on CI"
    )

    assert beat.agent.status == AgentStatus.BLOCKED and beat.agent.activity == "stuck on CI"
    assert [i.id for i in beat.assigned_issues] == [mine.id]
    assert [i.id for i in beat.ready_issues] == [high.id, low.id]  # priority first; `blocked` waits
    assert blocked.id not in [i.id for i in beat.ready_issues]
    events = (await services.events.page(admin, after=before)).items
    assert [(e.type, e.payload) for e in events] == [
        ("agent.status", {"agent": "hb", "status": "blocked", "previous": "working"}),
        ("agent.activity", {"agent": "hb", "activity": "stuck on CI"}),
    ]

    again = await services.agents.heartbeat(admin, agent="hb")  # no change: no event
    assert again.agent.status == AgentStatus.BLOCKED
    same = await services.agents.heartbeat(admin, agent="hb", activity="stuck on CI")  # the same line
    assert same.agent.activity == "stuck on CI"
    assert (await services.events.page(admin, after=events[-1].id)).items == []

    # A new line alone (the status unchanged) is news for whoever watches the team.
    await services.agents.heartbeat(admin, agent="hb", activity="reading the CI log")
    (changed,) = (await services.events.page(admin, after=events[-1].id)).items
    assert (changed.type, changed.actor, changed.payload) == (
        "agent.activity",
        "hb",
        {"agent": "hb", "activity": "reading the CI log"},
    )


async def test_a_heartbeat_answers_the_agent_as_the_database_holds_it_after(
    services: Services, admin: Caller
) -> None:
    """The heartbeat's agent is made from the row it wrote (status, activity, last seen), not read
    back: it is what the database holds once the heartbeat is over, field for field, whether the
    heartbeat changed the status, the activity, nothing, or brought the agent back from offline."""
    await services.agents.register(admin, name="hb", capabilities=["python"], program="codex", model="m1")

    async def stored() -> Agent:
        (agent,) = [a for a in await services.agents.list(admin) if a.name == "hb"]
        return agent

    beat = await services.agents.heartbeat(admin, agent="hb", status=AgentStatus.BLOCKED, activity="stuck")
    assert beat.agent == await stored()
    assert (beat.agent.status, beat.agent.activity) == (AgentStatus.BLOCKED, "stuck")
    previous = beat.agent.last_seen
    beat = await services.agents.heartbeat(admin, agent="hb")  # nothing changes but the time
    assert beat.agent == await stored() and beat.agent.last_seen >= previous
    beat = await services.agents.heartbeat(admin, agent="hb", activity="reading the log")
    assert beat.agent == await stored() and beat.agent.activity == "reading the log"
    await services.agents.sweep_presence(offline_after=timedelta(0), retire_after=timedelta(days=7))
    assert (await stored()).status == AgentStatus.OFFLINE
    beat = await services.agents.heartbeat(admin, agent="hb")  # back to where it was
    assert beat.agent == await stored() and beat.agent.status == AgentStatus.BLOCKED


async def test_a_heartbeats_issues_carry_their_dependencies(services: Services, admin: Caller) -> None:
    """The assigned and the ready issues of a heartbeat have their dependencies read together, in
    one statement: each issue still gets its own."""
    await services.agents.register(admin, name="hb")
    base = await services.issues.create(admin, title="base", agent="hb")
    other = await services.issues.create(admin, title="other", agent="hb")
    await services.issues.close(admin, base.id, "done", agent="hb")
    await services.issues.close(admin, other.id, "done", agent="hb")
    ready = await services.issues.create(admin, title="ready", agent="hb", depends_on=[base.id])
    mine = await services.issues.create(admin, title="mine", agent="hb", depends_on=[other.id, base.id])
    await services.issues.claim(admin, mine.id, agent="hb")
    plain = await services.issues.create(admin, title="plain", agent="hb")

    beat = await services.agents.heartbeat(admin, agent="hb")

    assert [(i.id, sorted(i.depends_on)) for i in beat.assigned_issues] == [
        (mine.id, sorted([other.id, base.id]))
    ]
    assert {i.id: i.depends_on for i in beat.ready_issues} == {ready.id: [base.id], plain.id: []}


async def test_a_silent_agent_goes_offline_and_a_heartbeat_brings_it_back(
    services: Services, admin: Caller
) -> None:
    await services.agents.register(admin, name="quiet")
    offlined, retired = await services.agents.sweep_presence(
        offline_after=timedelta(0), retire_after=timedelta(days=7)
    )
    assert (offlined, retired) == (1, 0)
    (quiet,) = await services.agents.list(admin)
    assert quiet.status == AgentStatus.OFFLINE

    beat = await services.agents.heartbeat(admin, agent="quiet")
    assert beat.agent.status == AgentStatus.IDLE


async def test_registering_again_keeps_what_is_omitted_and_clears_what_is_given_empty(
    services: Services, admin: Caller
) -> None:
    """An agent's new session registers by name alone: its capabilities (which claim_issue prefers
    issues by), program, model and description were wiped. They are kept; an empty value clears."""
    first = await services.agents.register(
        admin, name="ada", capabilities=["python"], program="claude-code", model="m1", description="parser"
    )
    await services.agents.heartbeat(admin, agent="ada", status=AgentStatus.WORKING)
    again = await services.agents.register(admin, name="ada")
    assert (again.capabilities, again.program, again.model, again.description) == (
        ["python"],
        "claude-code",
        "m1",
        "parser",
    )
    assert again.status == AgentStatus.IDLE and again.id == first.id  # a new session starts idle
    (event,) = [
        e
        for e in (await services.events.page(admin, types=["agent.registered"])).items
        if e.payload["reattached"]
    ]
    assert event.payload["capabilities"] == ["python"]  # what the agent has now, not what was sent

    changed = await services.agents.register(admin, name="ada", capabilities=[], model="m2", program="")
    assert (changed.capabilities, changed.program, changed.model, changed.description) == (
        [],
        "",
        "m2",
        "parser",
    )
    fresh = await services.agents.register(admin, name="bob")  # a new agent: empty, as before
    assert (fresh.capabilities, fresh.program, fresh.model, fresh.description) == ([], "", "", "")
    assert fresh.role == AgentRole.WORKER

    # The role too: a coordinator registering again by name stays a coordinator.
    await services.agents.register(admin, name="lead", role=AgentRole.COORDINATOR)
    assert (await services.agents.register(admin, name="lead")).role == AgentRole.COORDINATOR
    assert (
        await services.agents.register(admin, name="lead", role=AgentRole.WORKER)
    ).role == AgentRole.WORKER


async def test_every_filter_shape_lists_what_its_filters_say(services: Services, admin: Caller) -> None:
    """The list's statement is built once per shape of filter (store/agents.py `_in_project_of`):
    every shape lists exactly the agents a plain reading of its filters picks, by name."""
    made = {
        "cara": (AgentRole.COORDINATOR, AgentStatus.WORKING),
        "abe": (AgentRole.WORKER, AgentStatus.WORKING),
        "bea": (AgentRole.WORKER, AgentStatus.BLOCKED),
        "dov": (AgentRole.OBSERVER, AgentStatus.IDLE),
        "eli": (AgentRole.WORKER, AgentStatus.IDLE),
    }
    for name, (role, status) in made.items():
        await services.agents.register(admin, name=name, role=role)
        if status != AgentStatus.IDLE:
            await services.agents.heartbeat(admin, agent=name, status=status)
    await services.agents.retire(admin, name="eli")
    retired = {"eli"}
    for role in (None, *AgentRole):
        for status in (None, AgentStatus.WORKING, AgentStatus.IDLE, AgentStatus.OFFLINE):
            for include_retired in (False, True):
                listed = await services.agents.list(
                    admin, role=role, status=status, include_retired=include_retired
                )
                picked = sorted(
                    name
                    for name, (r, s) in made.items()
                    if (role is None or r == role)
                    and (status is None or (AgentStatus.OFFLINE if name in retired else s) == status)
                    and (include_retired or name not in retired)
                )
                assert [a.name for a in listed] == picked, (role, status, include_retired)
